"""Power: tegrastats lines of JetPack 5 and 6, a fake Jetson and RAPL sysfs tree, NVML through a fake
pynvml, and the sampler and summaries that bench --power and selftest report."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

from edge_squeeze.power import (
    PowerMeter,
    PowerSampler,
    Sample,
    drift_verdict,
    parse_tegrastats,
    summarize_power,
)
from edge_squeeze.power.source import PowerSource
from edge_squeeze.power.sysfs import JetsonSysfsSource, RaplSource, jetson_clocks_on

# recorded formats: JetPack 5.1 on a Xavier NX (milliwatts without a unit) and JetPack 6 on an Orin
# Nano (a timestamp first, "mW" units, the GPU frequency per GPC)
XAVIER_JP5 = (
    "RAM 2153/6854MB (lfb 19x4MB) SWAP 0/3427MB (cached 0MB) CPU [12%@1190,8%@1190,4%@1190,3%@1190,off,off] "
    "EMC_FREQ 0%@1600 GR3D_FREQ 45%@1109 APE 150 MTS fg 0% bg 0% AO@41C GPU@42.5C PMIC@100C AUX@40.5C "
    "CPU@43C thermal@41.85C VDD_IN 5431/5012 VDD_CPU_GPU_CV 1877/1550 VDD_SOC 1303/1284"
)
ORIN_JP6 = (
    "12-03-2026 10:15:42 RAM 3288/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [31%@1510,28%@1510,25%@1510,30%@1510,off,off] EMC_FREQ 12%@2133 GR3D_FREQ 61%@[624,0] "
    "NVENC off NVDEC off NVJPG off VIC off OFA off APE 200 cpu@52.5C soc2@49.8C soc0@50.1C gpu@51.2C "
    "tj@52.5C soc1@49.5C VDD_IN 7432mW/6120mW VDD_CPU_GPU_CV 2812mW/2103mW VDD_SOC 1651mW/1552mW"
)


def test_tegrastats_jetpack5_xavier_line():
    watts, clocks, temps = parse_tegrastats(XAVIER_JP5)
    assert watts == {"VDD_IN": 5.431, "VDD_CPU_GPU_CV": 1.877, "VDD_SOC": 1.303}  # RAM/SWAP are not rails
    assert clocks == {"cpu": 1190.0, "emc": 1600.0, "gpu": 1109.0}
    assert temps["gpu"] == 42.5 and temps["cpu"] == 43.0 and "pmic" not in temps  # PMIC's 100C is a stub


def test_tegrastats_jetpack6_orin_line():
    watts, clocks, temps = parse_tegrastats(ORIN_JP6)
    assert watts == {"VDD_IN": 7.432, "VDD_CPU_GPU_CV": 2.812, "VDD_SOC": 1.651}
    assert clocks == {"cpu": 1510.0, "emc": 2133.0, "gpu": 624.0}
    assert temps["tj"] == 52.5 and temps["gpu"] == 51.2


@pytest.mark.parametrize(
    "line",
    ["", "tegrastats: command not found", "RAM 2153/6854MB (lfb 19x4MB) SWAP 0/3427MB", "VDD_IN five/six"],
)
def test_a_line_that_is_no_reading_is_none(line):
    assert parse_tegrastats(line) is None


def test_an_absent_sensor_reading_is_dropped():
    _, _, temps = parse_tegrastats("CPU [1%@729] iwlwifi@-256C gpu@40C VDD_IN 100/100")
    assert temps == {"gpu": 40.0}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def fake_jetson(root: Path, clocks_pinned: bool = False) -> Path:
    """An Orin Nano's sysfs as JetPack 6 lays it out: one INA3221 (hwmon), thermal zones, cpufreq, GPU
    devfreq; channel 4 is not connected and channel 7 is the shunt sum, both ignored."""
    hwmon = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    _write(root / "sys/bus/i2c/drivers/ina3221/1-0040/name", "ina3221")
    for channel, label, mv, ma in (
        (1, "VDD_IN", 5000, 1400),
        (2, "VDD_CPU_GPU_CV", 5000, 500),
        (3, "VDD_SOC", 5000, 300),
        (4, "NC", 0, 0),
        (7, "sum of shunt voltages", 1, 1),
    ):
        _write(hwmon / f"in{channel}_label", label)
        _write(hwmon / f"in{channel}_input", str(mv))
        _write(hwmon / f"curr{channel}_input", str(ma))
    for i, (kind, milli) in enumerate(
        (("cpu-thermal", 48500), ("gpu-thermal", 47250), ("tj-thermal", 49000), ("absent", -256000))
    ):
        _write(root / f"sys/class/thermal/thermal_zone{i}/type", kind)
        _write(root / f"sys/class/thermal/thermal_zone{i}/temp", str(milli))
    for cpu, khz in ((0, 1510400), (1, 729600)):
        base = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        _write(base / "scaling_cur_freq", str(khz))
        _write(base / "scaling_min_freq", "1510400" if clocks_pinned else "115200")
        _write(base / "scaling_max_freq", "1510400")
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    _write(gpu / "cur_freq", "624750000")
    _write(gpu / "min_freq", "624750000" if clocks_pinned else "306000000")
    _write(gpu / "max_freq", "624750000")
    return root


def test_jetson_sysfs_rails_temperatures_and_clocks(tmp_path):
    source = JetsonSysfsSource(fake_jetson(tmp_path))
    sample = source.read()
    assert sample.watts == {"VDD_IN": 7.0, "VDD_CPU_GPU_CV": 2.5, "VDD_SOC": 1.5}
    assert sample.temps_c == {"cpu": 48.5, "gpu": 47.25, "tj": 49.0}
    assert sample.clocks_mhz == {"cpu": pytest.approx(1510.4), "gpu": pytest.approx(624.75)}
    assert source.total_rail(list(sample.watts)) == "VDD_IN"


def test_jetpack4_iio_rails(tmp_path):
    iio = tmp_path / "sys/bus/i2c/devices/6-0040/iio:device0"
    _write(tmp_path / "sys/bus/i2c/devices/6-0040/name", "ina3221x")
    for channel, name, mw in ((0, "POM_5V_IN", 2545), (1, "POM_5V_GPU", 40), (2, "POM_5V_CPU", 549)):
        _write(iio / f"rail_name_{channel}", name)
        _write(iio / f"in_power{channel}_input", str(mw))
    sample = JetsonSysfsSource(tmp_path).read()
    assert sample.watts == {"POM_5V_IN": 2.545, "POM_5V_GPU": 0.04, "POM_5V_CPU": 0.549}


def test_jetson_clocks_is_told_from_min_equal_max(tmp_path):
    assert jetson_clocks_on(fake_jetson(tmp_path / "a")) is False
    assert jetson_clocks_on(fake_jetson(tmp_path / "b", clocks_pinned=True)) is True
    assert jetson_clocks_on(tmp_path / "nothing") is None


def test_a_rail_that_disappears_mid_run_is_said_and_not_counted_as_zero(tmp_path):
    root = fake_jetson(tmp_path)
    source = JetsonSysfsSource(root)
    first = source.read()
    (root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/in3_input").unlink()
    second = source.read()
    assert "VDD_SOC" not in second.watts and second.watts["VDD_IN"] == 7.0
    samples = [
        Sample(0.0, watts=first.watts),
        Sample(1.0, watts=first.watts),
        Sample(2.0, watts=second.watts),
    ]
    summary = summarize_power(samples, 10, "jetson-ina3221", "VDD_IN")
    assert summary.rails["VDD_SOC"].avg_w == pytest.approx(1.5)  # from the one interval it had
    assert any("VDD_SOC: missing in 1 of 2 intervals" in p for p in summary.problems)
    assert summary.total_energy_j == pytest.approx(14.0)  # VDD_IN, 7 W for 2 s


def fake_rapl(root: Path, package_uj: int, core_uj: int, wrap_uj: int = 262143328850) -> Path:
    for zone, name, uj in (("intel-rapl:0", "package-0", package_uj), ("intel-rapl:0:0", "core", core_uj)):
        _write(root / f"sys/class/powercap/{zone}/name", name)
        _write(root / f"sys/class/powercap/{zone}/energy_uj", str(uj))
        _write(root / f"sys/class/powercap/{zone}/max_energy_range_uj", str(wrap_uj))
    return root


def test_rapl_counters_that_wrap_are_unwrapped(tmp_path):
    wrap = 1_000_000_000  # 1000 J
    source = RaplSource(fake_rapl(tmp_path, 999_000_000, 10_000_000, wrap))
    a = source.read()
    fake_rapl(tmp_path, 4_000_000, 13_000_000, wrap)  # package passed its range: 1 J + 4 J = 5 J
    b = source.read()
    samples = [Sample(0.0, energy_j=a.energy_j), Sample(0.5, energy_j=b.energy_j)]
    rails = sorted(b.energy_j)
    summary = summarize_power(
        samples, 100, "rapl", source.total_rail(rails), source.top_rails(rails), source.counter_ranges
    )
    assert summary.rails["package-0"].energy_j == pytest.approx(5.0)
    assert summary.rails["package-0"].avg_w == pytest.approx(10.0)
    assert summary.total_rail == "sum" and summary.total_energy_j == pytest.approx(
        5.0
    )  # core is inside the package
    assert summary.mj_per_inference == pytest.approx(50.0)


def test_unreadable_rapl_counters_are_one_line(tmp_path):
    fake_rapl(tmp_path, 1, 1)
    for zone in ("intel-rapl:0", "intel-rapl:0:0"):
        (tmp_path / f"sys/class/powercap/{zone}/energy_uj").unlink()
    with pytest.raises(PermissionError, match="not readable"):
        RaplSource(tmp_path)


def test_energy_per_inference_above_the_idle_baseline():
    samples = [Sample(float(t), watts={"VDD_IN": 9.0}) for t in range(5)]  # 9 W for 4 s = 36 J
    summary = summarize_power(samples, 1000, "x", "VDD_IN", idle_w=4.0)
    assert summary.mj_per_inference == pytest.approx(36.0)
    assert summary.mj_per_inference_above_idle == pytest.approx(20.0)  # (36 - 4 W x 4 s) / 1000


class ListSource(PowerSource):
    """A source that plays back readings; raises OSError once they run out."""

    name = "fake"

    def __init__(self, readings, fail_after=None):
        super().__init__()
        self.readings = list(readings)
        self.calls = 0
        self.fail_after = fail_after

    def read(self):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise OSError("the counter went away")
        return self.readings[min(self.calls - 1, len(self.readings) - 1)]

    def total_rail(self, rails):
        return "VDD_IN" if "VDD_IN" in rails else None


def test_the_sampler_stops_when_the_benchmark_fails():
    source = ListSource([Sample(0.0, watts={"VDD_IN": 5.0})])
    sampler = PowerSampler(source, rate_hz=50)
    with pytest.raises(RuntimeError, match="model failed"), sampler:
        time.sleep(0.1)
        raise RuntimeError("model failed")
    assert not sampler.running
    before = source.calls
    time.sleep(0.1)
    assert source.calls == before, "no reads after the window"
    assert len(sampler.samples) >= 3


def test_the_sampler_gives_up_on_a_counter_that_went_away():
    source = ListSource([Sample(0.0, watts={"VDD_IN": 5.0})], fail_after=3)
    with PowerSampler(source, rate_hz=100) as sampler:
        deadline = time.time() + 2
        while sampler.running and time.time() < deadline:
            time.sleep(0.01)
        assert not sampler.running, "the thread stops after repeated failed reads"
    summary = sampler.summary(10)
    assert summary.samples == 3 and any("failed reads" in p for p in summary.problems)


def test_the_sampler_keeps_its_rate():
    source = ListSource([Sample(0.0, watts={"VDD_IN": 5.0})])
    with PowerSampler(source, rate_hz=20) as sampler:
        time.sleep(1.0)
    assert 15 <= len(sampler.samples) <= 25
    assert sampler.summary(100).total_avg_w == pytest.approx(5.0)


def test_drift_verdict_names_the_clock_and_temperature():
    finished = [i / 10 for i in range(1, 6001)]  # 10 calls/s for 10 min ...
    finished += [600 + i / 7.8 for i in range(1, 4681)]  # ... then 7.8/s (22 % fewer) for 10 min
    samples = [Sample(float(t), clocks_mhz={"gpu": 1300.0}, temps_c={"gpu": 60.0}) for t in range(0, 600, 5)]
    samples += [
        Sample(float(t), clocks_mhz={"gpu": 624.0}, temps_c={"gpu": 86.0}) for t in range(600, 1200, 5)
    ]
    verdict = drift_verdict(finished, 1, samples)
    assert verdict == "throughput fell 22 % after 20 min: gpu clock 1300 -> 624 MHz at 86 C (thermal)"


def test_drift_verdict_steady_and_unexplained():
    steady = [i / 10 for i in range(1, 1201)]
    verdict = drift_verdict(steady, 4)
    assert (
        verdict.startswith("throughput steady over 2 min: ")
        and verdict.endswith(" %)")
        and "img/s" in verdict
    )
    falling = [i / 10 for i in range(1, 601)] + [60 + i / 5 for i in range(1, 301)]
    assert (
        drift_verdict(falling, 1)
        == "throughput fell 50 % after 2 min (no clock or temperature counter here to explain it)"
    )


def test_no_counter_is_one_line_and_bench_goes_on(tmp_path, tiny_int8_export, capsys, monkeypatch):
    from edge_squeeze.cli import main
    from edge_squeeze.power import open_power_source

    source, why = open_power_source(root=tmp_path)
    assert source is None and why.startswith("no power counter on this machine (INA3221: ")
    monkeypatch.setattr("edge_squeeze.power.meter.open_power_source", lambda gpu=False: (None, why))
    argv = ["bench", str(tiny_int8_export / "model.onnx"), "--power", "--warmup", "0.05", "--iterations", "3"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    said = [line for line in captured.err.splitlines() if "no power counter" in line]
    assert len(said) == 1 and said[0].endswith("benchmarking without power")
    assert "mJ/inf" not in captured.out and "model.onnx" in captured.out


def test_nvml_through_a_fake_library(monkeypatch):
    class NVMLError(Exception):
        pass

    energy = {"mj": 1_000_000}

    def total_energy(handle):
        energy["mj"] += 25_000  # 25 J per reading
        return energy["mj"]

    fake = types.SimpleNamespace(
        NVMLError=NVMLError,
        NVML_CLOCK_SM=1,
        NVML_CLOCK_MEM=2,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: "h",
        nvmlDeviceGetName=lambda h: "NVIDIA H200",
        nvmlDeviceGetTotalEnergyConsumption=total_energy,
        nvmlDeviceGetPowerUsage=lambda h: 250_000,
        nvmlDeviceGetClockInfo=lambda h, kind: 1980 if kind == 1 else 3201,
        nvmlDeviceGetTemperature=lambda h, kind: 55,
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x1 | 0x4 | 0x40,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    from edge_squeeze.power.nvml import NvmlSource

    source = NvmlSource()
    a, b = source.read(), source.read()
    assert a.clocks_mhz == {"gpu": 1980.0, "memory": 3201.0} and a.temps_c == {"gpu": 55.0}
    assert a.throttle == ("software power cap", "hardware thermal")  # GPU idle is not throttling
    summary = summarize_power(
        [Sample(0.0, energy_j=a.energy_j), Sample(0.1, energy_j=b.energy_j)],
        50,
        "nvml",
        "gpu",
        counter_ranges=source.counter_ranges,
    )
    assert summary.total_avg_w == pytest.approx(250.0) and summary.mj_per_inference == pytest.approx(500.0)
    assert source.facts() == {"device": "NVIDIA H200", "counter": "total energy"}


def test_tegrastats_source_reads_the_newest_line(tmp_path):
    from edge_squeeze.power.tegrastats import TegrastatsSource

    script = tmp_path / "tegrastats"
    script.write_text(
        textwrap.dedent(
            f"""\
            import sys, time
            for line in ("garbage", {XAVIER_JP5!r}, {ORIN_JP6!r}):
                print(line, flush=True)
                time.sleep(0.05)
            time.sleep(30)
            """
        )
    )
    source = TegrastatsSource(command=[sys.executable, str(script)])
    try:
        deadline = time.time() + 10
        while source.read().watts.get("VDD_IN") != 7.432 and time.time() < deadline:
            time.sleep(0.05)
        assert source.read().watts["VDD_IN"] == 7.432 and source.malformed == 1
    finally:
        source.close()
    assert source._process.poll() is not None, "close ends tegrastats"
    with pytest.raises(OSError, match="tegrastats exited"):
        source.read()


def test_bench_with_power_on_a_fake_jetson(tmp_path, tiny_int8_export, monkeypatch):
    """bench --power end to end with the sampler reading a fake INA3221 tree: the row carries watts,
    mJ per inference above idle, clocks and temperatures, and the CSV and table show them."""
    import csv

    from edge_squeeze import bench

    root = fake_jetson(tmp_path / "sys-root")
    monkeypatch.setattr(
        "edge_squeeze.power.meter.open_power_source", lambda gpu=False: (JetsonSysfsSource(root), "fake")
    )
    options = bench.BenchOptions(warmup_s=0.05, duration_s=0.5, power=True, idle_s=0.2, power_rate_hz=20)
    report = bench.bench_models([tiny_int8_export / "model.onnx"], options)
    (row,) = report.rows
    power = row["power"]
    assert power["total_rail"] == "VDD_IN" and power["total_avg_w"] == pytest.approx(7.0)
    assert power["idle_w"] == pytest.approx(7.0) and power["mj_per_inference_above_idle"] == pytest.approx(
        0.0
    )
    assert power["mj_per_inference"] > 0 and power["peak_temp_c"] == 49.0
    assert power["clocks_mhz"]["gpu"]["median"] == pytest.approx(624.75)
    assert row["timeline"]["watts"] and row["timeline"]["latency_ms"]
    table = bench.format_table(report.rows)
    assert "mJ/inf" in table and "7.00" in table and "gpu 625/625/625" in table
    bench.write_csv(report.rows, tmp_path / "rows.csv")
    (line,) = csv.DictReader((tmp_path / "rows.csv").open())
    assert float(line["power_avg_w"]) == pytest.approx(7.0) and line["file"].endswith("model.onnx")
    assert threading.active_count() < 10, "no sampler thread left behind"


def test_selftest_power_row_per_engine_when_a_counter_exists(tmp_path, monkeypatch):
    import numpy as np

    from edge_squeeze.selftest import markdown, power_row

    class Engine:
        calls = 0

        def infer(self, x):
            Engine.calls += 1
            time.sleep(0.002)
            return np.zeros((len(x), 10), np.float32)

    root = fake_jetson(tmp_path)
    monkeypatch.setattr(
        "edge_squeeze.power.meter.open_power_source", lambda gpu=False: (JetsonSysfsSource(root), "fake")
    )
    meter = PowerMeter(rate_hz=20, idle_s=0.1)
    row = power_row(Engine(), np.zeros((1, 3, 8, 8), np.float32), meter, seconds=0.3)
    meter.close()
    assert row["inferences"] == Engine.calls > 10 and row["total_avg_w"] == pytest.approx(7.0)
    report = {
        "reference": {"file": "model.onnx", "top1": 0.6, "top5": 0.8, "batch1": {"p50_ms": 1.0}},
        "machine": {},
        "export_dir": "out",
        "data": "val",
        "images": 1,
        "passed": True,
        "seconds": 1,
        "engines": [{"precision": "fp16", "status": "pass", "power": row}],
    }
    assert "| 7.0 W, 0.00 mJ |" in markdown(report)
    monkeypatch.setattr(
        "edge_squeeze.power.meter.open_power_source", lambda gpu=False: (None, "no power counter")
    )
    assert power_row(Engine(), np.zeros((1, 3, 8, 8), np.float32), PowerMeter(idle_s=0)) is None


def test_sustained_run_gives_a_drift_verdict(tiny_int8_export, tmp_path, capsys):
    from edge_squeeze.cli import main

    argv = [
        "bench",
        str(tiny_int8_export / "model.onnx"),
        "--sustained",
        "0.02",
        "--warmup",
        "0.05",
        "--json",
    ]
    out = tmp_path / "rows.json"
    assert main([*argv, str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.onnx batch 1: throughput " in printed
    (row,) = json.loads(out.read_text())["rows"]
    assert row["drift"].startswith(
        ("throughput steady over 1 s", "throughput fell", "throughput steady over 2 s")
    )
    assert row["timeline"]["latency_ms"] and row["timeline"]["watts"] == []
