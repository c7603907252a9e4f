"""Sampling a power source in a background thread at a fixed rate for a measured window, and
finding the source this machine has."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from .samples import PowerSummary, Sample, summarize_power, total_watts_series
from .source import PowerSource

log = logging.getLogger("edge_squeeze")

DEFAULT_RATE_HZ = 10.0
# consecutive failed reads after which the sampler stops (a counter that went away mid-run)
MAX_FAILED_READS = 5


class PowerSampler:
    """``with PowerSampler(source, rate_hz) as sampler: <work>`` reads ``source`` every 1/rate_hz s
    on its own thread until the block ends, by return or by exception; ``sampler.summary(n)`` then
    says what the window cost ``n`` inferences. The thread only reads files or a library: the work
    it measures runs unslowed (``benchmarks/results/power_overhead.md``)."""

    def __init__(self, source: PowerSource, rate_hz: float = DEFAULT_RATE_HZ) -> None:
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        self.source = source
        self.period = 1.0 / rate_hz
        self.samples: List[Sample] = []
        self.failures: List[str] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _take(self) -> None:
        try:
            sample = self.source.read()
        except OSError as exc:
            self.failures.append(str(exc))
            return
        self.samples.append(dataclasses.replace(sample, t=time.perf_counter()))
        self.failures.clear()

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            self._take()
            if len(self.failures) >= MAX_FAILED_READS:
                log.warning("power sampling stopped: %s", self.failures[-1])
                return
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def start(self) -> PowerSampler:
        self._take()  # a reading at the window's start
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.period + 1)
        self._take()  # and one at its end

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> PowerSampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _rails(self) -> List[str]:
        return sorted({r for s in self.samples for r in (*s.watts, *s.energy_j)})

    def total_watts(self) -> List[Tuple[float, float]]:
        """(time, total watts) per interval: the total rail, else the sum of the top-level rails."""
        rails = self._rails()
        total = self.source.total_rail(rails)
        return total_watts_series(
            self.samples, [total] if total else self.source.top_rails(rails), self.source.counter_ranges
        )

    def summary(self, inferences: int, idle_w: Optional[float] = None) -> PowerSummary:
        rails = self._rails()
        result = summarize_power(
            self.samples,
            inferences,
            self.source.name,
            self.source.total_rail(rails),
            self.source.top_rails(rails),
            self.source.counter_ranges,
            idle_w=idle_w,
            facts=self.source.facts(),
        )
        if self.failures:
            result.problems.append(f"{len(self.failures)} failed reads at the end: {self.failures[-1]}")
        return result


def idle_baseline(source: PowerSource, seconds: float, rate_hz: float = DEFAULT_RATE_HZ) -> Optional[float]:
    """Average total watts over ``seconds`` with nothing running (what the machine uses anyway)."""
    if seconds <= 0:
        return None
    with PowerSampler(source, rate_hz) as sampler:
        time.sleep(seconds)
    idle = sampler.summary(0)
    return idle.total_avg_w if idle.rails else None


def measure(
    source: PowerSource,
    work: Callable[[], int],
    rate_hz: float = DEFAULT_RATE_HZ,
    idle_w: Optional[float] = None,
) -> Tuple[int, PowerSummary]:
    """Run ``work`` (it returns how many images it classified) while sampling ``source``."""
    with PowerSampler(source, rate_hz) as sampler:
        images = work()
    return images, sampler.summary(images, idle_w)


def open_power_source(gpu: bool = False, root: Path = Path("/")) -> Tuple[Optional[PowerSource], str]:
    """The best power counter here and why, or (None, why none): a Jetson's INA3221 files, else
    ``tegrastats``; NVML on a machine whose GPU runs the model (``gpu``); RAPL on an x86 CPU."""
    from .sysfs import JetsonSysfsSource, RaplSource

    reasons = []
    candidates: List[Tuple[str, Callable[[], PowerSource]]] = [("INA3221", lambda: JetsonSysfsSource(root))]
    if shutil.which("tegrastats") and root == Path("/"):
        from .tegrastats import TegrastatsSource

        candidates.append(("tegrastats", TegrastatsSource))
    if gpu:
        from .nvml import NvmlSource

        candidates.append(("NVML", NvmlSource))
    candidates.append(("RAPL", lambda: RaplSource(root)))
    for label, make in candidates:
        try:
            source = make()
        except Exception as exc:  # a missing library, file or device: try the next counter
            reasons.append(f"{label}: {exc}")
            continue
        return source, f"power from {label}"
    return None, "no power counter on this machine (" + "; ".join(reasons) + ")"
