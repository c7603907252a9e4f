"""``tegrastats`` lines (JetPack 5 and 6) to :class:`~.samples.Sample` fields, and a source that runs
``tegrastats --interval MS`` for boards whose INA3221 sysfs files are not readable.

The formats (NVIDIA's Jetson Linux developer guide, "tegrastats"): rails as ``NAME cur/avg`` in
milliwatts (``VDD_IN 5431/5012`` on JetPack 4-5 Xavier, ``VDD_IN 5431mW/5012mW`` on Orin), temperatures
as ``zone@42.5C``, ``CPU [12%@1190,off,...]`` in MHz, ``GR3D_FREQ 45%@1109`` (``@[624,0]`` per GPC on
Orin), ``EMC_FREQ 12%@2133``; JetPack 6 prefixes a timestamp.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .samples import Sample
from .source import PowerSource, board_input_rail

RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![\w/])")
TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
CPU = re.compile(r"\bCPU \[([^\]]*)\]")
ENGINE = re.compile(r"\b(GR3D_FREQ|EMC_FREQ) (?:\d+%)?@?(\[[\d,]*\]|\d+)?")
NOT_A_RAIL = ("RAM", "SWAP", "IRAM", "LFB")
INVALID_TEMP_C = -40.0  # tegrastats prints -256C (and 100C for PMIC on some boards) for absent sensors


def parse_tegrastats(line: str) -> Optional[Tuple[Dict[str, float], Dict[str, float], Dict[str, float]]]:
    """(watts per rail, clocks MHz, temperatures C) of one ``tegrastats`` line, or None for a line
    that is not one (no rail, clock or temperature in it)."""
    watts: Dict[str, float] = {}
    for name, current, _average in RAIL.findall(line):
        if name not in NOT_A_RAIL:
            watts[name] = int(current) / 1000.0
    clocks: Dict[str, float] = {}
    cpu = CPU.search(line)
    if cpu:
        mhz = [int(core.split("@")[1]) for core in cpu.group(1).split(",") if "@" in core]
        if mhz:
            clocks["cpu"] = float(max(mhz))
    for name, value in ENGINE.findall(line):
        if not value:
            continue
        numbers = [int(v) for v in value.strip("[]").split(",") if v]
        if numbers:
            clocks["gpu" if name.startswith("GR3D") else "emc"] = float(max(numbers))
    temps = {
        zone.lower(): float(value)
        for zone, value in TEMP.findall(line)
        if float(value) > INVALID_TEMP_C and zone.upper() != "PMIC"
    }
    if not (watts or clocks or temps):
        return None
    return watts, clocks, temps


class TegrastatsSource(PowerSource):
    """Readings from a running ``tegrastats --interval MS``: :meth:`read` gives the newest line's."""

    name = "tegrastats"

    def __init__(self, interval_ms: int = 100, command: Optional[List[str]] = None) -> None:
        super().__init__()
        argv = command or [shutil.which("tegrastats") or "tegrastats", "--interval", str(interval_ms)]
        self._process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._latest: Optional[Tuple[Dict[str, float], Dict[str, float], Dict[str, float]]] = None
        self.malformed = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, name="tegrastats", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            parsed = parse_tegrastats(line)
            with self._lock:
                if parsed is None:
                    self.malformed += 1
                else:
                    self._latest = parsed

    def read(self) -> Sample:
        with self._lock:
            latest = self._latest
        if self._process.poll() is not None:
            raise OSError(f"tegrastats exited ({self._process.returncode})")
        if latest is None:
            return Sample(0.0)
        watts, clocks, temps = latest
        return Sample(0.0, watts=dict(watts), clocks_mhz=dict(clocks), temps_c=dict(temps))

    def total_rail(self, rails: Sequence[str]) -> Optional[str]:
        return board_input_rail(rails)

    def facts(self) -> Dict[str, Any]:
        from .sysfs import jetson_facts

        return {**jetson_facts(), "malformed_lines": self.malformed}

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._thread.join(timeout=2)
