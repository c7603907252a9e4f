"""Batch-1 time of several model files in paired, interleaved rounds: the check that a change to a
model file (say, a new INT8 recipe against the last export's) costs no speed.

    .venv/bin/python benchmarks/paired_speed.py OLD/model.int8.cpu.onnx NEW/model.int8.cpu.onnx \
        --name int8_cpu_file [--shared ../shared] [--rounds 40]

Each file runs on ONNX Runtime's CPU session through ``Classifier`` (its own preprocessing), in
alternating blocks (``edge_squeeze.bench.paired_batch1``); the ratio of each round's medians
compares like with like on a shared machine. Writes benchmarks/results/paired_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_squeeze.bench import load_frames, paired_batch1, ratio_summary
from edge_squeeze.classifier import Classifier

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model files; the first is the baseline")
    parser.add_argument("--name", required=True, help="results file name: paired_<name>.md")
    parser.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--block", type=float, default=0.5, help="seconds per model per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    clfs = {path: Classifier(path, backend="onnxruntime", threads=args.threads) for path in args.models}
    frames = load_frames(Path(args.shared) / "data" / "imagenet-samples" / "val")
    medians = paired_batch1(clfs, frames, args.rounds, args.block)
    base = args.models[0]
    rows = [
        {
            "model": path,
            "median_ms": float(np.median(times)),
            "baseline_over_model": ratio_summary(medians[base], times),
        }
        for path, times in medians.items()
    ]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    result = {"threads": args.threads, "rounds": args.rounds, "block_s": args.block, "rows": rows}
    (out / f"paired_{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Batch 1, ONNX Runtime CPU, {args.threads} threads, {args.rounds} paired rounds of {args.block} s per "
        "model; speed vs the first file: median of per-round ratios (range in brackets), above 1 is faster.",
        "",
        "| model | median ms | speed vs first |",
        "| --- | --- | --- |",
    ]
    for row in rows:
        s = row["baseline_over_model"]
        lines.append(
            f"| `{row['model']}` | {row['median_ms']:.2f} | {s['median']:.3f}x ({s['min']:.2f}-{s['max']:.2f}) |"
        )
    (out / f"paired_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
