"""Latency benchmarking with trtexec-grade statistics: per stage, end to end, warm-up excluded.

Each configuration (model x backend x precision x batch) is checked before it is timed (finite
outputs of the right shape, and top-1 on real labelled images when given), then run for a warm-up
period that is discarded and a measured period long enough for stable percentiles. Times come from
``time.perf_counter_ns`` (monotonic, high resolution); TensorRT's device stages from CUDA events.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import EdgeSqueezeError
from .options import BatchSizes, FloatRange, IntRange, flag, internal, validate
from .results import Result
from .runtimes.onnxruntime_backend import OrtOptions
from .runtimes.tensorrt_options import TensorRTOptions

log = logging.getLogger("edge_squeeze")

STAGES = ("preprocess", "h2d", "infer", "d2h", "postprocess", "end_to_end")
PERCENTILES = (50, 90, 95, 99)


def summarize(samples_ms: Sequence[float]) -> Dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    out = {
        "min": float(a.min()),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "max": float(a.max()),
        "std": float(a.std()),
        "n": int(a.size),
    }
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(a, p))
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def jetson_power_mode() -> Optional[str]:
    """``nvpmodel -q`` on a Jetson (the power mode changes every number), else None."""
    if shutil.which("nvpmodel") is None:
        return None
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return " ".join(out.split()) or None


def machine_info() -> Dict[str, Any]:
    from .environment import as_dict

    info = {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), **as_dict()}
    power = jetson_power_mode()
    if power:
        info["jetson_power_mode"] = power
    return info


@dataclasses.dataclass
class BenchOptions:
    """What ``edge-squeeze bench`` measures; each field declares its flag (the runtime flags fill
    ``backend`` and the backends' options)."""

    batches: Sequence[int] = flag(
        "--batch", (1,), type=BatchSizes(1024), help="batch sizes, comma-separated (default 1)"
    )
    warmup_s: float = flag("--warmup", 1.0, type=FloatRange(0, 3600), help="seconds of warm-up, not measured")
    duration_s: float = flag(
        "--duration", 3.0, type=FloatRange(0, 3600, low_open=True), help="seconds measured per configuration"
    )
    iterations: Optional[int] = flag(
        "--iterations", None, type=IntRange(1), help="measure exactly N iterations instead of --duration"
    )
    data: Optional[Path] = flag(
        "--data", None, type=Path, help="labelled images: real inputs and a top-1 column"
    )
    min_iterations: int = internal(30, why="a floor on samples per configuration for stable percentiles")
    backend: str = internal("auto", why="the runtime flags' --backend")
    onnxruntime: OrtOptions = internal(
        default_factory=OrtOptions, why="the runtime flags (--threads, --int8-file)"
    )
    tensorrt: TensorRTOptions = internal(
        default_factory=TensorRTOptions, why="the runtime flags (--precision, ...)"
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass(frozen=True)
class BenchReport(Result):
    """One row per model and batch size (``p50_ms``, ``throughput``, ``stages``, ``file``: the file
    that ran), and the machine they ran on."""

    rows: List[Dict[str, Any]]
    machine: Dict[str, Any]


def load_frames(data: Optional[Path], count: int = 64) -> List[np.ndarray]:
    """Real decoded frames (BGR) to feed the benchmark: from ``data`` when given, else generated."""
    import cv2

    from .preprocess import list_images

    frames: List[np.ndarray] = []
    if data is not None:
        for path in list_images(data)[:count]:
            img = cv2.imread(str(path))
            if img is not None:
                frames.append(img)
        if not frames:
            raise EdgeSqueezeError(f"no readable images under {data} to benchmark with")
        return frames
    rng = np.random.default_rng(0)
    for _ in range(8):
        base = np.cumsum(rng.normal(0, 4, (480, 640, 3)), axis=1) + 128
        frames.append(np.clip(base, 0, 255).astype(np.uint8))
    return frames


def _file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.is_file() else float("nan")


def time_configuration(
    clf: Any, images: Sequence[np.ndarray], options: BenchOptions
) -> Dict[str, List[float]]:
    """Milliseconds per stage for each measured iteration (after the warm-up, which is discarded)."""
    from .classifier import softmax

    samples: Dict[str, List[float]] = {s: [] for s in STAGES}
    device_stages = getattr(clf.backend, "last_stage_ms", None)

    def once(record: bool) -> None:
        t0 = time.perf_counter_ns()
        x = clf.preprocess(images)
        t1 = time.perf_counter_ns()
        out = clf.infer(x)
        t2 = time.perf_counter_ns()
        np.argsort(-softmax(out), axis=1)[:, :5]
        t3 = time.perf_counter_ns()
        if record:
            samples["preprocess"].append((t1 - t0) / 1e6)
            samples["infer"].append((t2 - t1) / 1e6)
            samples["postprocess"].append((t3 - t2) / 1e6)
            samples["end_to_end"].append((t3 - t0) / 1e6)
            if device_stages is not None:  # TensorRT: h2d / infer / d2h from CUDA events
                for name, ms in device_stages().items():
                    samples[name].append(ms)

    deadline = time.perf_counter() + options.warmup_s
    while time.perf_counter() < deadline:
        once(False)
    if options.iterations:
        for _ in range(options.iterations):
            once(True)
    else:
        deadline = time.perf_counter() + options.duration_s
        while time.perf_counter() < deadline or len(samples["end_to_end"]) < options.min_iterations:
            once(True)
    return samples


def bench_model(path: Path, options: BenchOptions, frames: Sequence[np.ndarray]) -> List[Dict[str, Any]]:
    """One row per batch size for the model at ``path``."""
    from .classifier import Classifier

    clf = Classifier(
        path, backend=options.backend, onnxruntime=options.onnxruntime, tensorrt=options.tensorrt
    )
    info = clf.info
    accuracy = None
    if options.data is not None:
        from .evaluate import evaluate

        accuracy = evaluate(clf.infer, options.data, clf.labels, clf.spec).top1
    rows = []
    for batch in options.batches:
        if info.max_batch is not None and batch > info.max_batch:
            log.warning(
                "%s: batch %d exceeds the engine's profile maximum %d (it would run in slices); skipped: "
                "build the engine with --batch-profile 1,1,%d to time it",
                path,
                batch,
                info.max_batch,
                batch,
            )
            continue
        images = [frames[i % len(frames)] for i in range(batch)]
        # outputs checked before timing: no benchmarking of a broken model
        logits = clf.infer(clf.preprocess(images))
        if logits.shape != (batch, len(clf.labels)) or not np.all(np.isfinite(logits)):
            raise EdgeSqueezeError(
                f"{path} gives malformed output {logits.shape} at batch {batch}; not benchmarking it"
            )
        stage_samples = time_configuration(clf, images, options)
        stages = {name: summarize(v) for name, v in stage_samples.items() if v}
        e2e = stages["end_to_end"]
        rows.append(
            {
                "model": str(path),
                # the file that actually ran: an int8 model may hand over to its CPU file
                "file": info.model_path or str(path),
                "backend": info.name,
                "device": info.device,
                "precision": info.precision,
                "batch": batch,
                "size_mb": _file_mb(Path(info.model_path) if info.model_path else path),
                "p50_ms": e2e["median"],
                "p90_ms": e2e["p90"],
                "p95_ms": e2e["p95"],
                "p99_ms": e2e["p99"],
                "mean_ms": e2e["mean"],
                "throughput": batch * 1000.0 / e2e["mean"],
                "top1": accuracy,
                "stages": stages,
                "threads": options.onnxruntime.threads,
            }
        )
        log.info(
            "%s batch %d: p50 %.2f ms, %.1f img/s", path.name, batch, e2e["median"], rows[-1]["throughput"]
        )
    clf.close()
    return rows


def bench_models(paths: Sequence[Path], options: BenchOptions) -> BenchReport:
    """Every model at every batch size in ``options``, on frames from ``options.data`` (or generated)."""
    frames = load_frames(options.data)
    rows: List[Dict[str, Any]] = []
    for path in paths:
        rows.extend(bench_model(Path(path), options, frames))
    return BenchReport(rows, machine_info())


def paired_batch1(
    clfs: Dict[str, Any], frames: List[np.ndarray], rounds: int, block_s: float
) -> Dict[str, List[float]]:
    """Batch-1 inference of each classifier in alternating short blocks (order reversed every round),
    so a noisy machine's slow spells fall on every backend alike. Returns each one's per-round median
    in ms; ratios of the same round compare like with like."""
    batches = [clf.preprocess(frames[:8]) for clf in clfs.values()]
    names = list(clfs)
    medians: Dict[str, List[float]] = {name: [] for name in names}
    for name, batch in zip(names, batches):
        for i in range(20):
            clfs[name].infer(batch[i % len(batch)][None])
    for r in range(rounds):
        order = list(zip(names, batches))
        for name, batch in order if r % 2 == 0 else order[::-1]:
            infer, times, i = clfs[name].infer, [], 0
            deadline = time.perf_counter() + block_s
            while time.perf_counter() < deadline:
                x = batch[i % len(batch)][None]
                t0 = time.perf_counter_ns()
                infer(x)
                times.append((time.perf_counter_ns() - t0) / 1e6)
                i += 1
            medians[name].append(float(np.median(times)))
    return medians


def ratio_summary(slow: List[float], fast: List[float]) -> Dict[str, float]:
    ratios = np.asarray(slow) / np.asarray(fast)
    return {
        "median": float(np.median(ratios)),
        "min": float(ratios.min()),
        "max": float(ratios.max()),
        "rounds": len(ratios),
    }


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    header = ("model", "backend", "precision", "batch", "size MB", "p50 ms", "p99 ms", "img/s", "top-1")
    body = []
    for r in rows:
        body.append(
            (
                Path(r.get("file") or r["model"]).name,
                r["backend"],
                r["precision"],
                str(r["batch"]),
                f"{r['size_mb']:.2f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['throughput']:.1f}",
                "" if r.get("top1") is None else f"{100 * r['top1']:.1f}%",
            )
        )
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
    return "\n".join(lines)


def write_json(rows: Sequence[Dict[str, Any]], path: Path, machine: Optional[Dict[str, Any]] = None) -> None:
    from .fileio import write_text_atomic

    write_text_atomic(path, json.dumps({"machine": machine or machine_info(), "rows": list(rows)}, indent=2))


def write_csv(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    from .fileio import write_csv_atomic

    fields = [
        "model",
        "backend",
        "device",
        "precision",
        "batch",
        "size_mb",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "mean_ms",
        "throughput",
        "top1",
    ]
    write_csv_atomic(path, rows, fields)


def write_plot(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    """Latency percentiles per configuration, and throughput against batch size."""
    from .errors import require

    matplotlib = require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{Path(r['model']).name}\n{r['backend']}/{r['precision']}/b{r['batch']}" for r in rows]
    x = np.arange(len(rows))
    for offset, key in zip((-0.3, -0.1, 0.1, 0.3), ("p50_ms", "p90_ms", "p95_ms", "p99_ms")):
        ax1.bar(x + offset, [r[key] for r in rows], width=0.2, label=key.replace("_ms", ""))
    ax1.set_xticks(x)
    ax1.set_xticklabels(labels, fontsize=7)
    ax1.set_ylabel("end-to-end latency per batch (ms)")
    ax1.legend()
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(f"{Path(r['model']).name} {r['backend']}/{r['precision']}", []).append(r)
    for name, group in groups.items():
        group = sorted(group, key=lambda g: g["batch"])
        ax2.plot([g["batch"] for g in group], [g["throughput"] for g in group], marker="o", label=name)
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("batch")
    ax2.set_ylabel("images / s")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=110)
    plt.close(fig)
