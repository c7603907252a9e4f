"""Does sampling power slow the benchmark it measures? Batch-1 latency with and without a
``PowerSampler`` running, in paired, interleaved rounds on one model.

    .venv/bin/python benchmarks/power_overhead.py MODEL.onnx [--rounds 30] [--block 0.5]

This machine has no power counter, so the sampler reads a generated Jetson sysfs tree (INA3221
rails, thermal zones, clocks: the files ``bench --power`` reads on an Orin) at the default 10 Hz
and at 50 Hz; what it costs is the thread's reads and wake-ups, as on a board. Writes
benchmarks/results/power_overhead.{json,md} with the CPU's flags beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edge_squeeze.bench import load_frames, ratio_summary
from edge_squeeze.classifier import Classifier
from edge_squeeze.power import PowerSampler
from edge_squeeze.power.sysfs import JetsonSysfsSource

HERE = Path(__file__).resolve().parent


def fake_orin_tree(root: Path) -> Path:
    """The sysfs files an Orin Nano's ``bench --power`` reads, with fixed values."""

    def put(relative: str, text: str) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    put("sys/bus/i2c/drivers/ina3221/1-0040/name", "ina3221")
    hwmon = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for channel, label, ma in ((1, "VDD_IN", 1400), (2, "VDD_CPU_GPU_CV", 500), (3, "VDD_SOC", 300)):
        put(f"{hwmon}/in{channel}_label", label)
        put(f"{hwmon}/in{channel}_input", "5000")
        put(f"{hwmon}/curr{channel}_input", str(ma))
    for i, kind in enumerate(
        ("cpu-thermal", "gpu-thermal", "soc0-thermal", "soc1-thermal", "soc2-thermal", "tj-thermal")
    ):
        put(f"sys/class/thermal/thermal_zone{i}/type", kind)
        put(f"sys/class/thermal/thermal_zone{i}/temp", "48500")
    for cpu in range(6):
        put(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", "1510400")
    put("sys/class/devfreq/17000000.ga10b/cur_freq", "624750000")
    return root


def timed_block(clf: Classifier, batch: np.ndarray, seconds: float, sampler: Optional[PowerSampler]) -> float:
    times: List[float] = []
    if sampler is not None:
        sampler.start()
    deadline, i = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter_ns()
        clf.infer(batch[i % len(batch)][None])
        times.append((time.perf_counter_ns() - t0) / 1e6)
        i += 1
    if sampler is not None:
        sampler.stop()
    return float(np.median(times))


def cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "lscpu not found"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = set(info.get("Flags", "").split())
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs; flags: {' '.join(wanted)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=float, default=0.5, help="seconds per configuration per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rates", default="10,50", help="sampling rates (Hz) to compare with none")
    args = parser.parse_args()
    clf = Classifier(args.model, backend="onnxruntime", threads=args.threads)
    frames = load_frames(Path(args.shared) / "data" / "imagenet-samples" / "val")
    batch = clf.preprocess(frames[:8])
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        source = JetsonSysfsSource(fake_orin_tree(Path(tmp)))
        configs = ["none", *(f"{r:g} Hz" for r in rates)]
        medians: Dict[str, List[float]] = {c: [] for c in configs}
        samples: Dict[str, int] = {c: 0 for c in configs}
        timed_block(clf, batch, 1.0, None)  # warm-up
        for r in range(args.rounds):
            order = configs if r % 2 == 0 else configs[::-1]
            for config in order:
                sampler = None if config == "none" else PowerSampler(source, float(config.split()[0]))
                medians[config].append(timed_block(clf, batch, args.block, sampler))
                samples[config] += len(sampler.samples) if sampler is not None else 0
    rows = []
    for config in configs[1:]:
        ratio = ratio_summary(medians[config], medians["none"])  # > 1: slower with the sampler
        rows.append(
            {
                "sampling": config,
                "median_ms": float(np.median(medians[config])),
                "slowdown": ratio,
                "samples": samples[config],
            }
        )
    result = {
        "model": args.model,
        "cpu": cpu_flags(),
        "threads": args.threads,
        "rounds": args.rounds,
        "block_s": args.block,
        "none_median_ms": float(np.median(medians["none"])),
        "rows": rows,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "power_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"`{Path(args.model).name}`, batch 1, ONNX Runtime CPU, {args.threads} threads, {args.rounds} paired rounds "
        f"of {args.block} s per configuration; {result['cpu']}.",
        "",
        "Latency with a power sampler reading a Jetson's sysfs files (a generated tree) against none: the median of",
        "per-round ratios, range in brackets (1.000 = no cost; the target is under 1.02).",
        "",
        "| sampling | median ms | with / without | samples taken |",
        "| --- | --- | --- | --- |",
        f"| none | {result['none_median_ms']:.3f} | 1 | 0 |",
    ]
    for row in rows:
        s = row["slowdown"]
        lines.append(
            f"| {row['sampling']} | {row['median_ms']:.3f} | {s['median']:.4f} ({s['min']:.3f}-{s['max']:.3f}) | {row['samples']} |"
        )
    (out / "power_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
