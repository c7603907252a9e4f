"""Power counters the kernel exposes as files: a Jetson's INA3221 rails, thermal zones and clocks,
and RAPL energy counters on x86 (``/sys/class/powercap``). Every path is taken under ``root`` so that
tests run on a recorded tree.

Layouts: INA3221 on JetPack 5/6 is a hwmon device (``in<N>_label``, ``in<N>_input`` mV,
``curr<N>_input`` mA; channel 7 is the sum of shunt voltages and labels with ``NC`` are unconnected),
on JetPack 4 an IIO device (``rail_name_<N>``, ``in_power<N>_input`` mW); thermal zones give
millidegrees, cpufreq kHz, devfreq Hz; RAPL ``energy_uj`` wraps at ``max_energy_range_uj``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .samples import Sample
from .source import PowerSource, board_input_rail

GPU_DEVFREQ = re.compile(r"gpu|gv11b|ga10b|gp10b|gb10b", re.IGNORECASE)


def _read_number(path: Path) -> Optional[float]:
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def ina3221_rails(root: Path) -> Dict[str, Tuple[str, ...]]:
    """Rail name -> how to read it: ("hwmon", volts file, amps file) or ("iio", milliwatts file)."""
    devices = set()
    for pattern in ("sys/bus/i2c/drivers/ina3221*/*", "sys/bus/i2c/devices/*"):
        for device in root.glob(pattern):
            if device.is_dir() and "ina3221" in (_read_text(device / "name") or device.parent.name):
                devices.add(device)
    rails: Dict[str, Tuple[str, ...]] = {}
    for device in sorted(devices):
        for label in sorted(device.glob("hwmon/hwmon*/in*_label")):
            channel = label.name[2 : -len("_label")]
            name = _read_text(label) or ""
            if not channel.isdigit() or channel == "7" or not name or "NC" in name.split():
                continue
            rails[name] = (
                "hwmon",
                str(label.with_name(f"in{channel}_input")),
                str(label.with_name(f"curr{channel}_input")),
            )
        for label in sorted(device.glob("iio:device*/rail_name_*")):
            channel = label.name[len("rail_name_") :]
            name = _read_text(label)
            if name:
                rails[name] = ("iio", str(label.with_name(f"in_power{channel}_input")))
    return rails


def thermal_zones(root: Path) -> Dict[str, Path]:
    zones = {}
    for zone in sorted(root.glob("sys/class/thermal/thermal_zone*")):
        name = _read_text(zone / "type")
        if name:
            zones[re.sub(r"[-_]therm(al)?$", "", name.lower())] = zone / "temp"
    return zones


def clock_files(root: Path) -> Dict[str, Tuple[List[Path], float]]:
    """Clock name -> (files, scale to MHz): cpu (the fastest core), gpu and emc where present."""
    clocks: Dict[str, Tuple[List[Path], float]] = {}
    cpus = sorted(root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))
    if cpus:
        clocks["cpu"] = (cpus, 1e-3)
    for device in sorted(root.glob("sys/class/devfreq/*")):
        if GPU_DEVFREQ.search(device.name) and (device / "cur_freq").exists():
            clocks.setdefault("gpu", ([device / "cur_freq"], 1e-6))
        elif "emc" in device.name.lower() and (device / "cur_freq").exists():
            clocks.setdefault("emc", ([device / "cur_freq"], 1e-6))
    emc = root / "sys/kernel/debug/bpmp/debug/clk/emc/rate"
    if "emc" not in clocks and emc.exists():
        clocks["emc"] = ([emc], 1e-6)
    return clocks


def read_clocks(files: Dict[str, Tuple[List[Path], float]]) -> Dict[str, float]:
    clocks = {}
    for name, (paths, scale) in files.items():
        values = [v for v in (_read_number(p) for p in paths) if v is not None]
        if values:
            clocks[name] = max(values) * scale
    return clocks


def read_temps(zones: Dict[str, Path]) -> Dict[str, float]:
    temps = {}
    for name, path in zones.items():
        value = _read_number(path)
        if value is not None and value > -40_000:  # absent sensors read -256000 or similar
            temps[name] = value / 1000.0
    return temps


def jetson_clocks_on(root: Path = Path("/")) -> Optional[bool]:
    """Whether clocks are pinned at their maximum (``jetson_clocks``): every online CPU's and the GPU's
    minimum frequency equals its maximum; None where those files cannot be read."""
    pairs = [
        (cpu / "scaling_min_freq", cpu / "scaling_max_freq")
        for cpu in sorted(root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq"))
    ]
    pairs += [
        (d / "min_freq", d / "max_freq")
        for d in sorted(root.glob("sys/class/devfreq/*"))
        if GPU_DEVFREQ.search(d.name)
    ]
    values = [(_read_number(a), _read_number(b)) for a, b in pairs]
    if not values or any(a is None or b is None for a, b in values):
        return None
    return all(a == b for a, b in values)


def nvpmodel_mode() -> Optional[str]:
    """``nvpmodel -q``'s power mode on a Jetson (it changes every number), else None."""
    if shutil.which("nvpmodel") is None:
        return None
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return " / ".join(lines[:2]) or None


def jetson_facts(root: Path = Path("/")) -> Dict[str, Any]:
    return {"nvpmodel": nvpmodel_mode(), "jetson_clocks": jetson_clocks_on(root)}


class JetsonSysfsSource(PowerSource):
    """A Jetson's INA3221 rails (watts = volts x amps, or the IIO milliwatts), thermal zones and
    CPU/GPU/EMC clocks, read from sysfs at each sample."""

    name = "jetson-ina3221"

    def __init__(self, root: Path = Path("/")) -> None:
        super().__init__()
        self.root = Path(root)
        self.rails = ina3221_rails(self.root)
        if not self.rails:
            raise OSError(f"no INA3221 power monitor under {self.root / 'sys/bus/i2c'}")
        self.zones = thermal_zones(self.root)
        self.clocks = clock_files(self.root)
        self.read()  # unreadable rails fail here, before the benchmark (then tegrastats is tried)

    def read(self) -> Sample:
        watts = {}
        for name, how in self.rails.items():
            if how[0] == "hwmon":
                volts_mv, amps_ma = _read_number(Path(how[1])), _read_number(Path(how[2]))
                if volts_mv is not None and amps_ma is not None:
                    watts[name] = volts_mv * amps_ma / 1e6
            else:
                milliwatts = _read_number(Path(how[1]))
                if milliwatts is not None:
                    watts[name] = milliwatts / 1e3
        if not watts:
            raise OSError(f"none of the INA3221 rails ({', '.join(self.rails)}) can be read")
        return Sample(0.0, watts=watts, clocks_mhz=read_clocks(self.clocks), temps_c=read_temps(self.zones))

    def total_rail(self, rails: Sequence[str]) -> Optional[str]:
        return board_input_rail(rails)

    def facts(self) -> Dict[str, Any]:
        return jetson_facts(self.root)


class RaplSource(PowerSource):
    """x86 RAPL energy counters (package, and nested core/uncore/dram zones) from powercap."""

    name = "rapl"

    def __init__(self, root: Path = Path("/")) -> None:
        super().__init__()
        self.root = Path(root)
        self.zones: Dict[str, Path] = {}
        self.nested: List[str] = []
        unreadable = []
        for zone in sorted(self.root.glob("sys/class/powercap/intel-rapl:*")):
            label = _read_text(zone / "name")
            if not label:
                continue
            rail = label if label not in self.zones else f"{label} ({zone.name})"
            if _read_number(zone / "energy_uj") is None:
                unreadable.append(zone.name)
                continue
            self.zones[rail] = zone / "energy_uj"
            self.counter_ranges[rail] = (_read_number(zone / "max_energy_range_uj") or 0.0) / 1e6
            if zone.name.count(":") > 1:
                self.nested.append(rail)
        if not self.zones:
            if unreadable:
                raise PermissionError(
                    f"RAPL counters {', '.join(unreadable)} are not readable (root only since Linux 5.10)"
                )
            raise OSError("no RAPL counter under /sys/class/powercap")

    def read(self) -> Sample:
        energy = {}
        for rail, path in self.zones.items():
            value = _read_number(path)
            if value is not None:
                energy[rail] = value / 1e6
        if not energy:
            raise OSError("the RAPL counters can no longer be read")
        return Sample(0.0, energy_j=energy)

    def total_rail(self, rails: Sequence[str]) -> Optional[str]:
        return "psys" if "psys" in rails else None  # the platform zone already holds the package

    def top_rails(self, rails: Sequence[str]) -> Sequence[str]:
        return [r for r in rails if r not in self.nested]
