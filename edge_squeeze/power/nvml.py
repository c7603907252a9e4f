"""An NVIDIA GPU's power through NVML (``nvidia-ml-py``, imported only here): the total-energy
counter where the GPU has one (Volta and newer), else the power reading; temperature, SM and memory
clocks, and the reasons clocks are held down."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional, Sequence

from ..errors import require
from .samples import Sample
from .source import PowerSource

# nvmlClocksEventReasons / nvmlClocksThrottleReasons bits (nvml.h); GPU idle is not a throttle
THROTTLE_REASONS = {
    0x2: "applications clocks",
    0x4: "software power cap",
    0x8: "hardware slowdown",
    0x10: "sync boost",
    0x20: "software thermal",
    0x40: "hardware thermal",
    0x80: "power brake",
    0x100: "display clock",
}


def throttle_names(mask: int) -> List[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


class NvmlSource(PowerSource):
    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.counter_ranges = {"gpu": float(2**64) / 1e3}  # a 64-bit millijoule counter
        self.nvml = require("pynvml", "--power on an NVIDIA GPU (pip install nvidia-ml-py)")
        self.nvml.nvmlInit()
        try:
            self.handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            name = self.nvml.nvmlDeviceGetName(self.handle)
            self.device = name.decode() if isinstance(name, bytes) else str(name)
            self.has_energy = self._energy() is not None
            self.read()
        except Exception:
            self.nvml.nvmlShutdown()
            raise

    def _energy(self) -> Optional[float]:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) / 1e3
        except self.nvml.NVMLError:
            return None

    def _throttle(self) -> List[str]:
        for call in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            if hasattr(self.nvml, call):
                try:
                    return throttle_names(int(getattr(self.nvml, call)(self.handle)))
                except self.nvml.NVMLError:
                    return []
        return []

    def read(self) -> Sample:
        nvml, handle = self.nvml, self.handle
        try:
            energy = {"gpu": self._energy()} if self.has_energy else {}
            watts = {} if self.has_energy else {"gpu": nvml.nvmlDeviceGetPowerUsage(handle) / 1e3}
            clocks = {
                "gpu": float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
                "memory": float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
            }
            temps = {"gpu": float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))}
        except nvml.NVMLError as exc:
            raise OSError(f"NVML: {exc}") from exc
        return Sample(
            0.0,
            watts=watts,
            energy_j={k: v for k, v in energy.items() if v is not None},
            clocks_mhz=clocks,
            temps_c=temps,
            throttle=tuple(self._throttle()),
        )

    def total_rail(self, rails: Sequence[str]) -> Optional[str]:
        return "gpu"

    def facts(self) -> Dict[str, Any]:
        return {"device": self.device, "counter": "total energy" if self.has_energy else "power reading"}

    def close(self) -> None:
        with contextlib.suppress(self.nvml.NVMLError):
            self.nvml.nvmlShutdown()
