"""What a run costs in power: sources (a Jetson's INA3221 rails or ``tegrastats``, NVML on an NVIDIA
GPU, RAPL on x86), a background sampler, and the summary ``bench --power`` and ``selftest`` report
(watts per rail, millijoules per inference above idle, clocks, peak temperature, throttling)."""

from .meter import PowerMeter
from .sampler import PowerSampler, idle_baseline, measure, open_power_source
from .samples import PowerSummary, RailSummary, Sample, drift_verdict, summarize_power
from .source import PowerSource
from .tegrastats import parse_tegrastats

__all__ = [
    "PowerMeter",
    "PowerSampler",
    "PowerSource",
    "PowerSummary",
    "RailSummary",
    "Sample",
    "drift_verdict",
    "idle_baseline",
    "measure",
    "open_power_source",
    "parse_tegrastats",
    "summarize_power",
]
