"""Compare backends and precisions on the same real images; copy and adapt.

PyTorch eager (fp32), ONNX Runtime fp32 and int8 (both INT8 files), and TensorRT fp32/fp16/int8 when
TensorRT and a GPU are present, side by side in one run. Writes ``benchmarks/results/<host>.json``
and ``<host>.md``.

    python samples/benchmark_backends.py --models out/ --images ../shared/data/imagenet-samples/val
    python samples/benchmark_backends.py --weights ../shared/weights/squeezenet1_1-imagenet.pth \\
        --calib ../shared/data/imagenet-samples/calib --images ../shared/data/imagenet-samples/val

``--models`` is a folder made by ``edge-squeeze export --int8``; with ``--weights`` + ``--calib``
instead, the script exports one first (needs the export extra).

The speed-up ratios come from a paired comparison: batch-1 inference of each backend in alternating
0.5 s blocks for ``--rounds`` rounds, a ratio per round, and their median with its range, so that a
shared machine's slow spells fall on both sides of every ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from edge_squeeze.bench import (
    BenchOptions,
    format_table,
    load_frames,
    machine_info,
    paired_batch1,
    ratio_summary,
    summarize,
    time_configuration,
)
from edge_squeeze.classifier import Classifier
from edge_squeeze.runtimes.onnxruntime_backend import OrtOptions
from edge_squeeze.runtimes.tensorrt_backend import unavailable_reason

REPO = Path(__file__).resolve().parents[1]


def row_for(
    name: str, clf: Any, frames: List[np.ndarray], batch: int, options: BenchOptions
) -> Dict[str, Any]:
    images = [frames[i % len(frames)] for i in range(batch)]
    logits = clf.infer(clf.preprocess(images))  # check before timing
    assert logits.shape == (batch, len(clf.labels)) and np.isfinite(logits).all(), f"{name} is broken"
    samples = time_configuration(clf, images, options)
    stages = {k: summarize(v) for k, v in samples.items() if v}
    e2e = stages["end_to_end"]
    return {
        "model": name,
        "backend": clf.info.name,
        "precision": clf.info.precision,
        "batch": batch,
        "size_mb": Path(clf.info.model_path).stat().st_size / 1e6 if clf.info.model_path else float("nan"),
        "p50_ms": e2e["median"],
        "p90_ms": e2e["p90"],
        "p95_ms": e2e["p95"],
        "p99_ms": e2e["p99"],
        "mean_ms": e2e["mean"],
        "throughput": batch * 1000 / e2e["mean"],
        "top1": None,
        "stages": stages,
    }


def classifier_overhead(clf: Any, frame: np.ndarray, seconds: float) -> Dict[str, float]:
    """Classifier.predict on a decoded frame against preprocess + the raw backend call, interleaved
    so that both see the same machine state."""
    backend = clf.backend
    predict, raw = [], []
    for _ in range(50):
        clf.predict(frame)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter_ns()
        clf.predict(frame)
        t1 = time.perf_counter_ns()
        backend.infer(clf.preprocess(frame))
        t2 = time.perf_counter_ns()
        predict.append((t1 - t0) / 1e6)
        raw.append((t2 - t1) / 1e6)
    p, r = float(np.median(predict)), float(np.median(raw))
    return {"predict_p50_ms": p, "preprocess_plus_backend_p50_ms": r, "ratio": p / r, "n": len(predict)}


def operator_profile(model: Path, frame_batch: np.ndarray, runs: int = 200) -> Dict[str, float]:
    """Share of time per operator type in ONNX Runtime's own profiler, for one model at batch 1."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "prof")
        session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: frame_batch})
        trace = json.loads(Path(session.end_profiling()).read_text())
    per_op: Dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    return {op: round(100 * us / total, 1) for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="folder from edge-squeeze export --int8")
    parser.add_argument("--weights", help="weights to export first (with --calib)")
    parser.add_argument("--calib", help="calibration images for the export")
    parser.add_argument("--arch", default="squeezenet1_1")
    parser.add_argument("--images", help="real images to feed (the shared val set is a good choice)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=40, help="rounds of the paired batch-1 comparison")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    models = Path(args.models) if args.models else None
    if models is None:
        from edge_squeeze.export.pipeline import ExportOptions, run_export

        models = Path(tempfile.mkdtemp(prefix="edge-squeeze-bench-"))
        run_export(
            ExportOptions(
                weights=args.weights,
                arch=args.arch,
                out=models,
                int8=True,
                calib=Path(args.calib),
                progress=False,
            )
        )
    frames = load_frames(Path(args.images) if args.images else None)
    options = BenchOptions(
        warmup_s=1.0, duration_s=args.duration, onnxruntime=OrtOptions(threads=args.threads)
    )
    batches = [int(b) for b in args.batches.split(",")]
    rows: List[Dict[str, Any]] = []

    configs = [
        (
            "model.onnx (ORT fp32)",
            lambda: Classifier(models / "model.onnx", backend="onnxruntime", threads=args.threads),
        ),
        (
            "model.int8.cpu.onnx (ORT int8 u8)",
            lambda: Classifier(
                models / "model.int8.onnx", backend="onnxruntime", threads=args.threads, int8_file="cpu"
            ),
        ),
        (
            "model.int8.onnx (ORT int8 s8, exact QDQ)",
            lambda: Classifier(
                models / "model.int8.onnx", backend="onnxruntime", threads=args.threads, int8_file="qdq"
            ),
        ),
    ]
    try:
        import torch  # noqa: F401

        configs.insert(
            0,
            (
                "PyTorch eager fp32",
                lambda: Classifier(models / "model.onnx", backend="pytorch", threads=args.threads),
            ),
        )
    except ImportError:
        logging.info("torch not installed: no PyTorch eager row")
    reason = unavailable_reason()
    if reason is None:
        for precision in ("fp32", "fp16", "int8"):
            src = models / ("model.int8.onnx" if precision == "int8" else "model.onnx")
            configs.append(
                (
                    f"TensorRT {precision}",
                    lambda p=precision, s=src: Classifier(s, backend="tensorrt", precision=p),
                )
            )
    else:
        logging.info("TensorRT rows skipped: %s", reason)

    loaded: Dict[str, Any] = {}
    for name, make in configs:
        clf = loaded[name] = make()
        for batch in batches:
            rows.append(row_for(name, clf, frames, batch, options))
            logging.info("%s batch %d: p50 %.2f ms", name, batch, rows[-1]["p50_ms"])
    frame = frames[0]
    u8 = loaded["model.int8.cpu.onnx (ORT int8 u8)"]
    overhead = classifier_overhead(u8, frame, args.duration)
    preprocess_ms = summarize(time_configuration(u8, [frame], options)["preprocess"])
    profile = operator_profile(models / "model.int8.cpu.onnx", u8.preprocess(frame))

    # The targets are ratios: measure them side by side, round by round (see paired_batch1).
    paired_clfs = {"ort_fp32": loaded["model.onnx (ORT fp32)"], "ort_int8_u8": u8}
    if "PyTorch eager fp32" in loaded:
        paired_clfs["pytorch_fp32"] = loaded["PyTorch eager fp32"]
    paired = paired_batch1(paired_clfs, frames, args.rounds, block_s=0.5)
    speedups = {
        "int8_u8_vs_ort_fp32_batch1_infer": ratio_summary(paired["ort_fp32"], paired["ort_int8_u8"]),
    }
    if "pytorch_fp32" in paired:
        speedups["int8_u8_vs_pytorch_eager_batch1_infer"] = ratio_summary(
            paired["pytorch_fp32"], paired["ort_int8_u8"]
        )
    by = {(r["model"], r["batch"]): r for r in rows}
    int8_1 = by[("model.int8.cpu.onnx (ORT int8 u8)", 1)]
    fp32_1 = by[("model.onnx (ORT fp32)", 1)]
    speedups["int8_u8_vs_ort_fp32_batch1_end_to_end_sequential"] = ratio_summary(
        [fp32_1["p50_ms"]], [int8_1["p50_ms"]]
    )
    if ("model.int8.cpu.onnx (ORT int8 u8)", 32) in by:
        speedups["int8_u8_throughput_batch32_vs_batch1"] = ratio_summary(
            [by[("model.int8.cpu.onnx (ORT int8 u8)", 32)]["throughput"]], [int8_1["throughput"]]
        )
    host = platform.node() or "host"
    result = {
        "machine": machine_info(),
        "command": "python samples/benchmark_backends.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
        "rows": rows,
        "speedups": speedups,
        "paired_batch1_round_medians_ms": paired,
        "classifier_overhead": overhead,
        "preprocess_640x480_ms": preprocess_ms,
        "int8_operator_profile_pct": profile,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{host}.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# {host}: {result['machine']['cpu']} ({result['machine']['cores']} cores)",
        "",
        "```",
        format_table(rows),
        "```",
        "",
        "| measure | value |",
        "| --- | --- |",
    ]
    md += [
        f"| {k} | {v['median']:.2f}x"
        + (f" (rounds: {v['min']:.2f}-{v['max']:.2f}, n={v['rounds']})" if v["rounds"] > 1 else "")
        + " |"
        for k, v in speedups.items()
    ]
    md += [
        f"| batch-1 inference p50, paired rounds: {k} | {np.median(v):.2f} ms |" for k, v in paired.items()
    ]
    md += [
        f"| Classifier.predict / (preprocess + backend), batch 1 | {overhead['ratio']:.3f} |",
        f"| preprocess, one 640x480 frame, p50 | {preprocess_ms['median']:.3f} ms |",
        "",
        "INT8 (u8) operator profile, % of kernel time: " + ", ".join(f"{k} {v}%" for k, v in profile.items()),
    ]
    (out / f"{host}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
