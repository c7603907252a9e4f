"""Deep Compression without retraining: sparsity x bits -> bytes and top-1, and the paper's size table.

    .venv/bin/python benchmarks/compression.py [--shared ../shared] [--calib-count 200] [--arch ARCH]

Rows marked "calibrated" choose each code to keep its layer's outputs on ``calib/`` images
(``edge-squeeze compress --calib``); the others round each weight to its nearest codebook entry.
Top-1 is always on ``val/``, which calibration never sees. Writes benchmarks/results/compression.json
and compression.md (about 70 minutes on a 2-core CPU; ``--arch squeezenet1_1`` alone about 35).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from edge_squeeze.compress import CompressOptions, measure_layer_costs, read_esqz, write_esqz
from edge_squeeze.evaluate import accuracy_from_logits, ground_truth, load_eval_set
from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images
from edge_squeeze.labels import load_labels
from edge_squeeze.models import SqueezeNet, SqueezeNetConfig, load_model
from edge_squeeze.weights import read_weights

HERE = Path(__file__).resolve().parent


def top1(model, inputs, truth):
    with torch.no_grad():
        logits = np.concatenate(
            [model(torch.from_numpy(inputs[i : i + 50])).numpy() for i in range(0, len(inputs), 50)]
        )
    return accuracy_from_logits(logits, truth)


def model_from(path):
    loaded = read_weights(path)
    model = SqueezeNet(SqueezeNetConfig.from_dict(loaded.config)).eval()
    model.load_state_dict(loaded.state_dict)
    return model, loaded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    parser.add_argument("--calib-count", type=int, default=200)
    parser.add_argument(
        "--arch",
        choices=["squeezenet1_1", "squeezenet1_0"],
        help="measure only this model; the other's rows are kept from results/compression.json",
    )
    args = parser.parse_args()
    shared = Path(args.shared)
    samples = shared / "data" / "imagenet-samples"
    labels = load_labels(samples / "synset_words.txt")
    paths, truth_all = ground_truth(samples / "val", labels)
    models = [
        ("squeezenet1_1", shared / "weights" / "squeezenet1_1-imagenet.pth"),
        ("squeezenet1_0", shared / "weights" / "deep-compression" / "compressed_SqueezeNet.net"),
    ]
    order = [arch for arch, _ in models]
    results = HERE / "results" / "compression.json"
    kept = []
    if args.arch:
        models = [m for m in models if m[0] == args.arch]
        kept = [r for r in json.loads(results.read_text()) if r["arch"] != args.arch]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, weights in models:
            bundle = load_model(weights, arch=arch, labels=labels)
            inputs, truth = load_eval_set(paths, truth_all, bundle.preprocess)
            base = top1(bundle.model, inputs, truth)
            source = (
                "ImageNet weights"
                if arch == "squeezenet1_1"
                else "the paper's Deep-Compression weights, decompressed"
            )
            rows.append(
                {
                    "arch": arch,
                    "source": source,
                    "sparsity": None,
                    "bits": None,
                    "bytes": weights.stat().st_size,
                    "top1": base.top1,
                    "top5": base.top5,
                }
            )
            calibration = CalibrationSet(
                select_calibration_images(samples / "calib", args.calib_count), bundle.preprocess
            ).data
            # (sparsity, bits, layer bits, calibrated, max bytes)
            grid = (
                [
                    (0.0, 8, (), False, None),
                    (0.0, 6, (), False, None),
                    (0.0, 5, (), False, None),
                    (0.2, 6, (), False, None),
                    (0.5, 6, (), False, None),
                    (0.0, 5, (), True, None),
                    (0.0, 4, (), True, None),
                    (0.0, 4, (("classifier", 3),), True, None),
                    (0.3, 5, (("classifier", 4),), True, None),
                    (0.0, 6, (), True, 500_000),
                    (0.0, 6, (), True, 550_000),
                    (0.0, 6, (), True, 600_000),
                ]
                if arch == "squeezenet1_1"
                else [
                    (0.0, 8, (), False, None),
                    (0.0, 6, (), False, None),
                    (0.0, 7, (), True, None),
                    (0.0, 6, (), True, None),
                    (0.0, 5, (), True, None),
                ]
            )
            costs = {}  # budgets on the same options share one sensitivity measurement
            for sparsity, bits, layer_bits, calibrated, max_bytes in grid:
                out = Path(tmp) / f"{arch}-{sparsity}-{bits}.esqz"
                fresh = load_model(weights, arch=arch, labels=labels)
                options = CompressOptions(sparsity=sparsity, bits=bits, layer_bits=layer_bits)
                if calibrated and max_bytes is not None and options not in costs:
                    costs[options] = measure_layer_costs(fresh.model, calibration, options)
                size = write_esqz(
                    out,
                    fresh.model.state_dict(),
                    fresh.config.to_dict(),
                    fresh.labels,
                    fresh.preprocess,
                    options,
                    model=fresh.model,
                    calibration=calibration if calibrated else None,
                    max_bytes=max_bytes,
                    layer_costs=costs.get(options),
                )
                model, _ = model_from(out)
                layer_levels = ()
                if max_bytes is not None:  # the grids the budget chose
                    chosen = read_esqz(out).compression
                    layer_bits = tuple(tuple(pair) for pair in chosen["layer_bits"])
                    layer_levels = tuple(tuple(pair) for pair in chosen["layer_levels"])
                acc = top1(model, inputs, truth)
                rows.append(
                    {
                        "arch": arch,
                        "source": ".esqz"
                        + (f", calibrated ({len(calibration)} images)" if calibrated else "")
                        + (f", --max-bytes {max_bytes:,}" if max_bytes else ""),
                        "sparsity": sparsity,
                        "bits": bits,
                        "layer_bits": dict(layer_bits),
                        "layer_levels": dict(layer_levels),
                        "bytes": size,
                        "top1": acc.top1,
                        "top5": acc.top5,
                        "top1_drop_points": 100 * (base.top1 - acc.top1),
                        # steadier than top-1 on 500 photos: how often it names the uncompressed model's class
                        "agreement": float(np.mean(acc.predictions == base.predictions)),
                        "max_bytes": max_bytes,
                        "conv_layers": sum(1 for v in fresh.model.state_dict().values() if v.ndim == 4),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    rows = sorted(kept + rows, key=lambda r: order.index(r["arch"]))
    (HERE / "results").mkdir(exist_ok=True)
    results.write_text(json.dumps(rows, indent=2))
    lines = [
        "| arch | file | sparsity | bits | bytes | top-1 | top-5 | top-1 drop | agrees with uncompressed "
        "| <= 500,000 B within 2 pt |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        drop = f"{r['top1_drop_points']:.1f} pt" if "top1_drop_points" in r else "reference"
        bits = "" if r["bits"] is None else str(r["bits"])
        if r.get("max_bytes"):  # grids chosen per layer: how many layers got each
            levels = [2 * n + 1 for n in r.get("layer_levels", {}).values()]
            widths = list(r["layer_bits"].values())
            widths += [r["bits"]] * (r["conv_layers"] - len(widths) - len(levels))
            bits = "chosen per layer: " + ", ".join(
                [f"{w} bits x{widths.count(w)}" for w in sorted(set(widths))]
                + [f"uniform {n} values x{levels.count(n)}" for n in sorted(set(levels))]
            )
        else:
            bits += "".join(f", {k} {v}" for k, v in r.get("layer_bits", {}).items())
        met = ""
        if "top1_drop_points" in r:
            met = "**yes**" if r["bytes"] <= 500_000 and round(r["top1_drop_points"], 6) <= 2.0 else "no"
        agree = f"{100 * r['agreement']:.1f} %" if "agreement" in r else ""
        lines.append(
            f"| {r['arch']} | {r['source']} | {'' if r['sparsity'] is None else r['sparsity']} | "
            f"{bits} | {r['bytes']:,} | {100 * r['top1']:.1f} % | "
            f"{100 * r['top5']:.1f} % | {drop} | {agree} | {met} |"
        )
    (HERE / "results" / "compression.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
