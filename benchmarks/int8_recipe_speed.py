"""The INT8 speed target's own recipe next to ours, in one paired run.

Issue #6 sets INT8 >= 1.6x faster than fp32 at batch 1 on ONNX Runtime, "reached here by a plain
uint8-activation, reduce_range Q/DQ model". This builds that plain model from the exported
``model.onnx`` (``quantize_static`` with its defaults, uint8 activations, int8 weights,
``reduce_range``, MinMax over the calibration photos) and times it against fp32 and our
``model.int8.cpu.onnx`` in alternating blocks (``edge_squeeze.bench.paired_batch1``),
with each model's val top-1, so the three numbers share the machine's state.

    .venv/bin/python benchmarks/int8_recipe_speed.py --models /tmp/x8 [--shared ../shared] [--rounds 40]

``--models`` is an ``edge-squeeze export --int8`` output folder. Writes
benchmarks/results/int8_recipe_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime.quantization as oq

from edge_squeeze.bench import load_frames, paired_batch1, ratio_summary
from edge_squeeze.classifier import Classifier
from edge_squeeze.evaluate import accuracy_from_logits, ground_truth, infer_batched, load_eval_set
from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images
from edge_squeeze.metadata import set_metadata

HERE = Path(__file__).resolve().parent


class _Reader:
    def __init__(self, name: str, images: np.ndarray) -> None:
        self._items = iter([{name: images[i : i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self._items, None)


def plain_recipe(fp32_path: Path, calib: np.ndarray, metadata: Any, out: Path) -> None:
    """quantize_static as the issue describes it: defaults, uint8 activations, reduce_range; with
    the fp32 model's labels and preprocessing (``metadata``) so Classifier can load it."""
    model = onnx.load(str(fp32_path))
    oq.quantize_static(
        str(fp32_path),
        str(out),
        _Reader(model.graph.input[0].name, calib),
        quant_format=oq.QuantFormat.QDQ,
        activation_type=oq.QuantType.QUInt8,
        weight_type=oq.QuantType.QInt8,
        reduce_range=True,
    )
    quantized = onnx.load(str(out))
    set_metadata(quantized, metadata)
    onnx.save(quantized, str(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True, help="edge-squeeze export --int8 output folder")
    parser.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--block", type=float, default=0.5, help="seconds per model per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = Path(args.models)
    samples = Path(args.shared) / "data" / "imagenet-samples"
    fp32 = Classifier(models / "model.onnx", backend="onnxruntime", threads=args.threads)
    spec = fp32.metadata.preprocess
    calib = CalibrationSet(select_calibration_images(samples / "calib"), spec, progress=False).data
    paths, all_truth = ground_truth(samples / "val", fp32.metadata.labels)
    with tempfile.TemporaryDirectory() as tmp:
        plain_path = Path(tmp) / "plain.int8.onnx"
        int8_metadata = dataclasses.replace(fp32.metadata, precision="int8")
        plain_recipe(models / "model.onnx", calib, int8_metadata, plain_path)
        clfs = {
            "ORT fp32": fp32,
            "issue's plain recipe": Classifier(plain_path, backend="onnxruntime", threads=args.threads),
            "ours (model.int8.cpu.onnx)": Classifier(
                models / "model.int8.cpu.onnx", backend="onnxruntime", threads=args.threads
            ),
        }
        top1 = {}
        for name, clf in clfs.items():  # each on its own preprocessing (ours takes uint8 pixels)
            inputs, truth = load_eval_set(paths, all_truth, clf.spec)
            top1[name] = accuracy_from_logits(infer_batched(clf.infer, inputs, 50), truth).top1
        medians = paired_batch1(clfs, load_frames(samples / "val"), args.rounds, args.block)
    rows = []
    for name, times in medians.items():
        rows.append(
            {
                "model": name,
                "median_ms": float(np.median(times)),
                "speedup_vs_fp32": ratio_summary(medians["ORT fp32"], times),
                "top1": top1[name],
            }
        )
    result = {"threads": args.threads, "rounds": args.rounds, "block_s": args.block, "rows": rows}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "int8_recipe_speed.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Batch 1, ONNX Runtime, {args.threads} threads, {args.rounds} paired rounds of {args.block} s "
        "per model; speed-up = median of per-round fp32/model ratios (range in brackets); top-1 on val/.",
        "",
        "| model | median ms | speed-up vs fp32 | top-1 |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        s = r["speedup_vs_fp32"]
        lines.append(
            f"| {r['model']} | {r['median_ms']:.2f} | {s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f}) | "
            f"{100 * r['top1']:.1f} % |"
        )
    (HERE / "results" / "int8_recipe_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
