"""Power samples and what a measured window of them says: watts and energy per rail (energy counters
unwrapped, or instantaneous watts integrated), millijoules per inference above an idle baseline,
clocks, peak temperature, throttle flags, and whether a long run drifted."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..results import Result

# a drop in throughput smaller than this between the first and last window is "steady"
DRIFT_TOLERANCE = 0.05
HOT_C = 80.0  # a junction this hot is the likely reason clocks fell (Jetson and NVIDIA GPUs throttle near 85-100 C)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One reading of a power source at ``t`` (seconds, ``time.perf_counter``)."""

    t: float
    watts: Dict[str, float] = dataclasses.field(default_factory=dict)  # instantaneous, per rail
    energy_j: Dict[str, float] = dataclasses.field(default_factory=dict)  # counters as read (they wrap)
    clocks_mhz: Dict[str, float] = dataclasses.field(default_factory=dict)
    temps_c: Dict[str, float] = dataclasses.field(default_factory=dict)
    throttle: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RailSummary(Result):
    avg_w: float
    peak_w: float
    energy_j: float


@dataclasses.dataclass(frozen=True)
class PowerSummary(Result):
    """What the samples of one measured window say. ``mj_per_inference`` is the total rail's energy
    over the window divided by the inferences; ``mj_per_inference_above_idle`` first takes away what
    the idle baseline (``idle_w``, measured before, with nothing running) would have used."""

    source: str
    seconds: float
    samples: int
    rails: Dict[str, RailSummary]
    total_rail: str  # the rail that is the whole board or package, or "sum" of the top-level rails
    total_avg_w: float
    total_peak_w: float
    total_energy_j: float
    inferences: int
    mj_per_inference: Optional[float]
    idle_w: Optional[float]
    mj_per_inference_above_idle: Optional[float]
    clocks_mhz: Dict[str, Dict[str, float]]  # name -> min / median / max
    peak_temp_c: Optional[float]
    peak_temp_zone: Optional[str]
    throttle: List[str]
    problems: List[str]  # rails that vanished, counters that could not be unwrapped, ...
    facts: Dict[str, Any]  # power mode, jetson_clocks, device: what the source says of the machine


def rail_energy(
    samples: Sequence[Sample], rail: str, counter_range_j: Optional[float]
) -> Tuple[float, float, List[float], List[str]]:
    """(energy J, covered seconds, instantaneous watts, problems) of ``rail`` over ``samples``: from its
    energy counter where it has one (a counter that went down wrapped at ``counter_range_j``), else its
    watts integrated by the trapezoid rule over the intervals where both ends have it."""
    energy, covered, watts, problems = 0.0, 0.0, [], []
    gaps = 0
    for a, b in zip(samples, samples[1:]):
        dt = b.t - a.t
        if dt <= 0:
            continue
        if rail in a.energy_j and rail in b.energy_j:
            delta = b.energy_j[rail] - a.energy_j[rail]
            if delta < 0:
                if not counter_range_j:
                    problems.append(f"{rail}: counter went down and its range is unknown; interval dropped")
                    continue
                delta += counter_range_j
            energy += delta
            covered += dt
            watts.append(delta / dt)
        elif rail in a.watts and rail in b.watts:
            energy += 0.5 * (a.watts[rail] + b.watts[rail]) * dt
            covered += dt
            watts.append(b.watts[rail])
        else:
            gaps += 1
    if gaps:
        problems.append(f"{rail}: missing in {gaps} of {len(samples) - 1} intervals (the rail vanished)")
    return energy, covered, watts, problems


def total_watts_series(
    samples: Sequence[Sample], rails: Sequence[str], counter_ranges: Optional[Dict[str, float]] = None
) -> List[Tuple[float, float]]:
    """(end of interval, watts summed over ``rails``) per sampling interval: the power timeline."""
    samples = sorted(samples, key=lambda s: s.t)
    series = []
    for a, b in zip(samples, samples[1:]):
        dt = b.t - a.t
        if dt <= 0:
            continue
        total, seen = 0.0, False
        for rail in rails:
            if rail in a.energy_j and rail in b.energy_j:
                delta = b.energy_j[rail] - a.energy_j[rail]
                if delta < 0:
                    delta += (counter_ranges or {}).get(rail, 0.0)
                if delta >= 0:
                    total, seen = total + delta / dt, True
            elif rail in b.watts:
                total, seen = total + b.watts[rail], True
        if seen:
            series.append((b.t, total))
    return series


def summarize_power(
    samples: Sequence[Sample],
    inferences: int,
    source: str,
    total_rail: Optional[str],
    top_rails: Optional[Sequence[str]] = None,
    counter_ranges: Optional[Dict[str, float]] = None,
    idle_w: Optional[float] = None,
    facts: Optional[Dict[str, Any]] = None,
) -> PowerSummary:
    """A :class:`PowerSummary` of ``samples`` taken while ``inferences`` images were classified.
    ``total_rail`` names the rail that is the whole board or package; without one the total is the
    sum of ``top_rails`` (default: every rail; pass the top-level ones where rails nest)."""
    samples = sorted(samples, key=lambda s: s.t)
    seconds = samples[-1].t - samples[0].t if len(samples) > 1 else 0.0
    names = sorted({r for s in samples for r in (*s.watts, *s.energy_j)})
    rails: Dict[str, RailSummary] = {}
    problems: List[str] = []
    for name in names:
        energy, covered, watts, rail_problems = rail_energy(samples, name, (counter_ranges or {}).get(name))
        problems += rail_problems
        if covered > 0:
            rails[name] = RailSummary(energy / covered, max(watts), energy * seconds / covered)
    if total_rail and total_rail in rails:
        total = rails[total_rail]
        label = total_rail
    else:
        summed = [rails[r] for r in (top_rails if top_rails is not None else rails) if r in rails]
        total = RailSummary(
            sum(r.avg_w for r in summed), sum(r.peak_w for r in summed), sum(r.energy_j for r in summed)
        )
        label = "sum"
    per_inference = 1e3 * total.energy_j / inferences if inferences and rails else None
    above_idle = None
    if per_inference is not None and idle_w is not None:
        above_idle = 1e3 * max(0.0, total.energy_j - idle_w * seconds) / inferences
    clocks: Dict[str, Dict[str, float]] = {}
    for name in sorted({c for s in samples for c in s.clocks_mhz}):
        values = np.array([s.clocks_mhz[name] for s in samples if name in s.clocks_mhz], float)
        clocks[name] = {
            "min": float(values.min()),
            "median": float(np.median(values)),
            "max": float(values.max()),
        }
    peak_zone, peak_temp = None, None
    for s in samples:
        for zone, temp in s.temps_c.items():
            if peak_temp is None or temp > peak_temp:
                peak_zone, peak_temp = zone, temp
    throttle = sorted({flag for s in samples for flag in s.throttle})
    return PowerSummary(
        source=source,
        seconds=seconds,
        samples=len(samples),
        rails=rails,
        total_rail=label,
        total_avg_w=total.avg_w,
        total_peak_w=total.peak_w,
        total_energy_j=total.energy_j,
        inferences=inferences,
        mj_per_inference=per_inference,
        idle_w=idle_w,
        mj_per_inference_above_idle=above_idle,
        clocks_mhz=clocks,
        peak_temp_c=peak_temp,
        peak_temp_zone=peak_zone,
        throttle=throttle,
        problems=sorted(set(problems)),
        facts=dict(facts or {}),
    )


def _window(values: Sequence[Tuple[float, Any]], start: float, end: float) -> List[Any]:
    return [v for t, v in values if start <= t <= end]


def drift_verdict(
    finished_s: Sequence[float], images_per_call: int, samples: Sequence[Sample] = (), window_s: float = 60.0
) -> str:
    """One line: did throughput drift between the first and the last ``window_s`` of a long run
    (``finished_s``: when each call ended), and which clock and temperature explain it?"""
    if len(finished_s) < 4:
        return "too few calls to judge drift"
    t0, t1 = finished_s[0], finished_s[-1]
    span = t1 - t0
    window = min(window_s, span / 3) if span > 0 else 0.0
    if window <= 0:
        return "too short a run to judge drift"

    def rate(start: float, end: float) -> float:
        calls = sum(1 for t in finished_s if start < t <= end)
        return calls * images_per_call / (end - start)

    first, last = rate(t0, t0 + window), rate(t1 - window, t1)
    change = (last - first) / first if first > 0 else 0.0
    minutes = span / 60.0
    when = f"{minutes:.0f} min" if minutes >= 1 else f"{span:.0f} s"
    if change > -DRIFT_TOLERANCE:
        return f"throughput steady over {when}: {first:.1f} -> {last:.1f} img/s ({100 * change:+.1f} %)"
    verdict = f"throughput fell {100 * -change:.0f} % after {when}"
    timed = sorted(samples, key=lambda s: s.t)
    clocks = sorted(
        {c for s in timed for c in s.clocks_mhz}, key=lambda c: (not c.lower().startswith("gpu"), c)
    )
    explained = []
    if clocks:
        name = clocks[0]
        series = [(s.t, s.clocks_mhz[name]) for s in timed if name in s.clocks_mhz]
        early, late = _window(series, t0, t0 + window), _window(series, t1 - window, t1)
        if early and late:
            explained.append(f"{name} clock {np.median(early):.0f} -> {np.median(late):.0f} MHz")
    temps = [(s.t, max(s.temps_c.values())) for s in timed if s.temps_c]
    late_temps = _window(temps, t1 - window, t1)
    if late_temps:
        explained.append(f"at {max(late_temps):.0f} C")
    flags = sorted({f for s in timed if t1 - window <= s.t <= t1 for f in s.throttle})
    if flags:
        reason = ", ".join(flags)
    elif late_temps and max(late_temps) >= HOT_C:
        reason = "thermal"
    else:
        reason = ""
    if not explained:
        return verdict + " (no clock or temperature counter here to explain it)"
    return f"{verdict}: {' '.join(explained)}" + (f" ({reason})" if reason else "")
