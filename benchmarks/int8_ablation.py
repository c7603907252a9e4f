"""What each INT8 quantization step buys, on the shared ImageNet samples.

Calibrates SqueezeNet 1.1 on ``calib/`` (200 photos), evaluates on ``val/`` (500 photos), and writes
``benchmarks/results/int8_ablation.json`` and the table in ``benchmarks/results/int8_ablation.md``.

    .venv/bin/python benchmarks/int8_ablation.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np

from edge_squeeze.evaluate import ground_truth, load_eval_set
from edge_squeeze.export import fidelity as fq
from edge_squeeze.export import quantize as q
from edge_squeeze.export import ranges as r
from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images
from edge_squeeze.export.onnx_export import torch_to_onnx
from edge_squeeze.labels import load_labels
from edge_squeeze.models import load_model

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    args = parser.parse_args()
    shared = Path(args.shared)
    samples = shared / "data" / "imagenet-samples"
    labels = load_labels(samples / "synset_words.txt")
    bundle = load_model(
        shared / "weights" / "squeezenet1_1-imagenet.pth", arch="squeezenet1_1", labels=labels
    )
    fp32 = torch_to_onnx(bundle.model, 224)
    calib = CalibrationSet(select_calibration_images(samples / "calib"), bundle.preprocess)
    paths, truth = ground_truth(samples / "val", labels)
    val, truth = load_eval_set(paths, truth, bundle.preprocess)
    with tempfile.TemporaryDirectory() as tmp:
        stats = r.cached_stats(fp32, calib, Path(tmp) / "stats.npz", "ablation")[0]
    reference = fq.logits_of(fp32.SerializeToString(), val)
    fp32_top1 = float(np.mean(reference.argmax(1) == truth))
    head = tuple(n.name for n in fp32.graph.node if n.op_type == "GlobalAveragePool")
    rows = [{"step": "fp32 ONNX", "flavour": "-", "method": "-", "top1": fp32_top1, "agreement": 1.0}]

    def measure(
        step: str,
        flavour: str,
        method: str,
        fold: bool,
        float_nodes: tuple,
        exact: bool,
        concat: bool = False,
    ) -> None:
        ranges = r.compute_ranges(stats, method)
        if fold:
            ranges = r.fold_relu_ranges(fp32, ranges)
        if concat:
            ranges = r.unify_concat_ranges(fp32, ranges)
        model = q.quantize_model(fp32, ranges, q.QuantConfig(flavour, method, float_nodes), calib.data)
        logits = fq.logits_of(model.SerializeToString(), val, exact=exact)
        fid = fq.fidelity(reference, logits)
        row = {
            "step": step,
            "flavour": flavour,
            "method": method,
            "top1": float(np.mean(logits.argmax(1) == truth)),
            "agreement": fid.top1_agreement,
            "logit_mse": fid.logit_mse,
            "bytes": model.ByteSize(),
        }
        rows.append(row)
        print(json.dumps(row))

    for method in r.METHODS:
        measure("1. every layer, ORT's fused CPU kernels", "s8", method, False, (), exact=False)
    for method in r.METHODS:
        measure("2. every layer, exact Q/DQ (what TensorRT computes)", "s8", method, False, (), exact=True)
    for method in r.METHODS:
        measure("3. + Relu-folded ranges", "s8", method, True, (), exact=True)
    for method in r.METHODS:
        measure("4. + logits average pool in float", "s8", method, True, head, exact=True)
    for method in r.METHODS:
        measure("5. + one range per Concat", "s8", method, True, head, exact=True, concat=True)
    for method in r.METHODS:
        measure("6. CPU file (u8), fused kernels", "u8", method, True, head, exact=False)
    for method in r.METHODS:
        measure("7. CPU file + one range per Concat", "u8", method, True, head, exact=False, concat=True)
    result = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "calibration_images": len(calib),
        "val_images": len(truth),
        "rows": rows,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "int8_ablation.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| step | flavour | method | top-1 | agreement with fp32 | logit MSE |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        mse = f"{row['logit_mse']:.3f}" if "logit_mse" in row else ""
        lines.append(
            f"| {row['step']} | {row['flavour']} | {row['method']} | {100 * row['top1']:.1f} % | "
            f"{100 * row['agreement']:.1f} % | {mse} |"
        )
    (out / "int8_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
