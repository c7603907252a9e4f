"""Latency benchmarking with trtexec-grade statistics: per stage, end to end, warm-up excluded.

Each configuration (model x backend x precision x batch) is checked before it is timed (finite
outputs of the right shape, and top-1 on real labelled images when given), then run for a warm-up
period that is discarded and a measured period long enough for stable percentiles. Times come from
``time.perf_counter_ns`` (monotonic, high resolution); TensorRT's device stages from CUDA events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .bench_report import format_table, power_columns, write_csv, write_json, write_plot
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


def machine_info() -> Dict[str, Any]:
    from .environment import as_dict
    from .power.sysfs import nvpmodel_mode

    info = {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), **as_dict()}
    power = nvpmodel_mode()
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
    power: bool = flag(
        "--power",
        False,
        action="store_true",
        help="sample power, clocks and temperatures through each measured window (INA3221 or tegrastats "
        "on a Jetson, NVML on an NVIDIA GPU, RAPL on x86): watts, mJ per inference above idle",
    )
    power_rate_hz: float = flag(
        "--power-rate", 10.0, type=FloatRange(0.5, 100), help="power samples per second (default 10)"
    )
    idle_s: float = flag(
        "--idle",
        3.0,
        type=FloatRange(0, 600),
        help="seconds of idle measured before the first window (--power)",
    )
    sustained_min: Optional[float] = flag(
        "--sustained",
        None,
        type=FloatRange(0, 24 * 60, low_open=True),
        help="measure each configuration this many MINUTES and say whether throughput drifted (first "
        "minute against last, with the clocks and temperatures that explain it)",
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
    clf: Any,
    images: Sequence[np.ndarray],
    options: BenchOptions,
    window: Optional[Any] = None,
    finished: Optional[List[float]] = None,
) -> Dict[str, List[float]]:
    """Milliseconds per stage for each measured iteration (after the warm-up, which is discarded).
    ``window`` (a context manager: a power sampler) is entered around the measured iterations only;
    ``finished`` receives when each measured call ended (``time.perf_counter`` seconds)."""
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
            if finished is not None:
                finished.append(t3 / 1e9)
            if device_stages is not None:  # TensorRT: h2d / infer / d2h from CUDA events
                for name, ms in device_stages().items():
                    samples[name].append(ms)

    deadline = time.perf_counter() + options.warmup_s
    while time.perf_counter() < deadline:
        once(False)
    with window if window is not None else contextlib.nullcontext():
        if options.iterations and not options.sustained_min:
            for _ in range(options.iterations):
                once(True)
        else:
            seconds = 60.0 * options.sustained_min if options.sustained_min else options.duration_s
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline or len(samples["end_to_end"]) < options.min_iterations:
                once(True)
    return samples


def bench_model(
    path: Path, options: BenchOptions, frames: Sequence[np.ndarray], meter: Optional[Any] = None
) -> List[Dict[str, Any]]:
    """One row per batch size for the model at ``path``; with a ``meter``
    (:class:`~edge_squeeze.power.PowerMeter`) each row also says what its window cost in power."""
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
        gpu = info.device != "cpu"
        sampler = meter.window(gpu) if meter is not None else None
        finished: List[float] = []
        stage_samples = time_configuration(clf, images, options, sampler, finished)
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
        rows[-1].update(
            _power_fields(meter, sampler, gpu, batch, stage_samples["end_to_end"], finished, options)
        )
        log.info(
            "%s batch %d: p50 %.2f ms, %.1f img/s", path.name, batch, e2e["median"], rows[-1]["throughput"]
        )
    clf.close()
    return rows


def _power_fields(
    meter: Optional[Any],
    sampler: Optional[Any],
    gpu: bool,
    batch: int,
    latencies_ms: Sequence[float],
    finished: Sequence[float],
    options: BenchOptions,
) -> Dict[str, Any]:
    """A row's power summary, drift verdict and timeline (latency and watts over time)."""
    from .power import drift_verdict
    from .power.meter import thin

    fields: Dict[str, Any] = {}
    samples = sampler.samples if sampler is not None else []
    if sampler is not None:
        fields["power"] = meter.summary(sampler, batch * len(latencies_ms), gpu).to_dict()
    if options.sustained_min:
        fields["drift"] = drift_verdict(finished, batch, samples)
        log.info("%s", fields["drift"])
    if finished and (samples or options.sustained_min):
        t0 = finished[0] - latencies_ms[0] / 1e3
        fields["timeline"] = {
            "latency_ms": thin([(t - t0, ms) for t, ms in zip(finished, latencies_ms)]),
            "watts": thin([(t - t0, w) for t, w in sampler.total_watts()] if sampler is not None else []),
        }
    return fields


def bench_models(paths: Sequence[Path], options: BenchOptions) -> BenchReport:
    """Every model at every batch size in ``options``, on frames from ``options.data`` (or generated);
    with ``options.power``, what each measured window cost in power."""
    from .power import PowerMeter

    frames = load_frames(options.data)
    rows: List[Dict[str, Any]] = []
    meter = PowerMeter(options.power_rate_hz, options.idle_s) if options.power else None
    try:
        for path in paths:
            rows.extend(bench_model(Path(path), options, frames, meter))
    finally:
        if meter is not None:
            meter.close()
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


__all__ = [
    "BenchOptions",
    "BenchReport",
    "bench_model",
    "bench_models",
    "format_table",
    "load_frames",
    "machine_info",
    "paired_batch1",
    "power_columns",
    "ratio_summary",
    "summarize",
    "time_configuration",
    "write_csv",
    "write_json",
    "write_plot",
]
