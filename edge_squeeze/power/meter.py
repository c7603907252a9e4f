"""What ``bench --power`` and ``selftest`` use: one power source per kind of device, opened once with
its idle baseline, and a sampled window around each measured configuration."""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

from .sampler import DEFAULT_RATE_HZ, PowerSampler, idle_baseline, open_power_source
from .samples import PowerSummary
from .source import PowerSource

log = logging.getLogger("edge_squeeze")
DEFAULT_IDLE_S = 3.0
TIMELINE_POINTS = 2000  # at most this many points per series in a row's timeline


class PowerMeter:
    """Sources by kind (``gpu``: the model runs on an NVIDIA GPU, so NVML is worth trying), each
    opened on first use, its idle baseline (``idle_s`` seconds with nothing running) measured then.
    Where a machine has no counter, that is said once and every window is ``None``."""

    def __init__(self, rate_hz: float = DEFAULT_RATE_HZ, idle_s: float = DEFAULT_IDLE_S) -> None:
        self.rate_hz, self.idle_s = rate_hz, idle_s
        self.sources: Dict[bool, Optional[PowerSource]] = {}
        self.idle_w: Dict[bool, Optional[float]] = {}

    def source(self, gpu: bool) -> Optional[PowerSource]:
        if gpu not in self.sources:
            source, why = open_power_source(gpu=gpu)
            if source is None:
                log.warning("%s; benchmarking without power", why)
            else:
                log.info("%s; measuring %.0f s of idle first", why, self.idle_s)
                self.idle_w[gpu] = idle_baseline(source, self.idle_s, self.rate_hz)
            self.sources[gpu] = source
        return self.sources[gpu]

    def window(self, gpu: bool) -> Optional[PowerSampler]:
        """A sampler to wrap one measured window in (``with``), or None without a counter."""
        source = self.source(gpu)
        return PowerSampler(source, self.rate_hz) if source is not None else None

    def summary(self, sampler: PowerSampler, inferences: int, gpu: bool) -> PowerSummary:
        return sampler.summary(inferences, self.idle_w.get(gpu))

    def close(self) -> None:
        for source in self.sources.values():
            if source is not None:
                source.close()


def thin(points: Sequence[Sequence[float]], most: int = TIMELINE_POINTS) -> List[List[float]]:
    """At most ``most`` evenly spaced points of a series (a long run's plot needs no more)."""
    step = max(1, -(-len(points) // most))
    return [list(p) for p in points[::step]]
