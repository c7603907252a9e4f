"""Does the CPU INT8 file compute exactly on this CPU? Its fused integer kernels against its exact
integer arithmetic, for the whole model and one Conv at a time.

    .venv/bin/python tools/deploy_check.py export build/deploy/models --shared ../shared   # once
    .venv/bin/python benchmarks/int8_exactness.py [--models build/deploy/models] [--rounds 20]

The exact reference is the file's u8-weight twin (``edge_squeeze.export.quantize.u8_weight_twin``):
the same numbers, run by ONNX Runtime on u8 x u8 kernels that never saturate. On the 500 shared val
photos: the photos whose top-1 class differs between the file and its twin, with the twin's margin
between its two best logits there; agreement of each with fp32. Per Conv: how many photos' logits
change when only that Conv runs on exact kernels (its AVX2 u8 x s8 pair sums saturated on them).
Then batch-1 latency of the twin against the file, in paired rounds (why the file is not shipped
as its twin). Writes benchmarks/results/int8_exactness.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edge_squeeze.bench import load_frames, paired_batch1, ratio_summary
from edge_squeeze.classifier import Classifier
from edge_squeeze.evaluate import ground_truth, infer_batched, load_eval_set
from edge_squeeze.export.quantize import conv_nodes, u8_weight_twin
from edge_squeeze.fileio import write_text_atomic
from edge_squeeze.runtimes.onnxruntime_backend import OrtOptions, open_session

HERE = Path(__file__).resolve().parent


class OrtModel:
    """An in-memory variant of ``like``'s ONNX file on ONNX Runtime's CPU provider, opened as the
    backend opens files (graph optimizations on, so Q/DQ fuses into integer kernels), with
    ``preprocess`` and ``infer`` as ``like``'s."""

    def __init__(self, model: Any, like: Classifier, threads: int) -> None:
        path = like.info.model_path
        self._session = open_session(path, OrtOptions(threads=threads), model=model.SerializeToString())
        self._input = self._session.get_inputs()[0].name
        self.preprocess = like.preprocess

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


def cpu_flags() -> List[str]:
    """The CPU features that decide whether u8 x s8 pair sums saturate (AVX2 without VNNI does)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return sorted(f for f in flags if f in ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"))


def measure(
    models: Path, samples: Path, rounds: int, block: float, threads: int, per_conv: bool
) -> Dict[str, Any]:
    import onnx

    cpu_path = models / "model.int8.cpu.onnx"
    if not cpu_path.is_file():
        raise SystemExit(
            f"no CPU INT8 file at {cpu_path}: export one with "
            f"tools/deploy_check.py export {models} --shared {samples.parents[1]}"
        )
    cpu = Classifier(cpu_path, backend="onnxruntime", int8_file="cpu", threads=threads)
    fp32 = Classifier(models / "model.onnx", backend="onnxruntime", threads=threads)
    model = onnx.load(str(cpu_path))
    fused_model, exact_model = cpu, OrtModel(u8_weight_twin(model), cpu, threads)
    paths, all_truth = ground_truth(samples / "val", cpu.labels)
    inputs, _ = load_eval_set(paths, all_truth, cpu.spec)
    fused = infer_batched(fused_model.infer, inputs, 50)
    exact = infer_batched(exact_model.infer, inputs, 50)
    reference = infer_batched(fp32.infer, load_eval_set(paths, all_truth, fp32.spec)[0], 50).argmax(1)
    best2 = np.partition(exact, -2, axis=1)[:, -2:]
    differ = np.flatnonzero(fused.argmax(1) != exact.argmax(1))
    result: Dict[str, Any] = {
        "photos": len(paths),
        "fused_vs_exact": {
            "top1_differs": [
                {"photo": paths[i].name, "exact_margin": float(best2[i, 1] - best2[i, 0])} for i in differ
            ],
            "photos_with_other_logits": int(np.sum(np.any(fused != exact, axis=1))),
            "max_logit_difference": float(np.abs(fused - exact).max()),
        },
        "agreement_with_fp32": {
            "fused": float(np.mean(fused.argmax(1) == reference)),
            "exact": float(np.mean(exact.argmax(1) == reference)),
        },
        "per_conv": [],
    }
    for name in conv_nodes(model) if per_conv else []:
        one = infer_batched(OrtModel(u8_weight_twin(model, [name]), cpu, threads).infer, inputs, 50)
        result["per_conv"].append(
            {
                "conv": name,
                "photos_with_other_logits": int(np.sum(np.any(one != fused, axis=1))),
                "top1_differs": int(np.sum(one.argmax(1) != fused.argmax(1))),
                "max_logit_difference": float(np.abs(one - fused).max()),
            }
        )
        print(json.dumps(result["per_conv"][-1]), flush=True)
    if rounds:
        timed = {"fused": fused_model, "exact twin": exact_model}
        medians = paired_batch1(timed, load_frames(samples / "val"), rounds, block)
        result["batch1_ms"] = {k: float(np.median(v)) for k, v in medians.items()}
        result["twin_slowdown"] = ratio_summary(medians["exact twin"], medians["fused"])
    return result


def markdown(result: Dict[str, Any], machine: str, note: Optional[str]) -> str:
    fve = result["fused_vs_exact"]
    agree = result["agreement_with_fp32"]
    differ = ", ".join(f"{d['photo']} (exact margin {d['exact_margin']:.4f})" for d in fve["top1_differs"])
    lines = [
        f"# The CPU INT8 file's fused kernels against its exact integer arithmetic ({machine})",
        "",
        *([note, ""] if note else []),
        f"On the {result['photos']} shared val photos the fused kernels give other logits than the exact "
        f"twin on {fve['photos_with_other_logits']} photos (largest difference "
        f"{fve['max_logit_difference']:.3f}) and another top-1 class on {len(fve['top1_differs'])}"
        + (f": {differ}." if differ else ".")
        + f" Agreement with fp32: fused {100 * agree['fused']:.1f} %, exact {100 * agree['exact']:.1f} %.",
    ]
    if "twin_slowdown" in result:
        slow = result["twin_slowdown"]
        lines += [
            "",
            f"Batch 1: fused {result['batch1_ms']['fused']:.2f} ms, exact twin "
            f"{result['batch1_ms']['exact twin']:.2f} ms; the twin {slow['median']:.2f}x the file's time "
            f"(per-round range {slow['min']:.2f}-{slow['max']:.2f}, {slow['rounds']} paired rounds).",
        ]
    if result["per_conv"]:
        lines += [
            "",
            "One Conv at a time on exact kernels (the rest fused): photos whose logits change, whose top-1 "
            "class changes, and the largest logit change.",
            "",
            "| Conv | photos with other logits | other top-1 | largest change |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {row['conv']} | {row['photos_with_other_logits']} | {row['top1_differs']} | "
            f"{row['max_logit_difference']:.3f} |"
            for row in result["per_conv"]
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=HERE.parent / "build" / "deploy" / "models")
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--rounds", type=int, default=20, help="paired timing rounds (0: no timing)")
    parser.add_argument("--block", type=float, default=0.5, help="seconds per model per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-per-conv", action="store_true", help="skip the one-Conv-at-a-time table")
    parser.add_argument("--note", help="a paragraph for the Markdown (how the models were made)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    samples = args.shared / "data" / "imagenet-samples"
    result = measure(args.models, samples, args.rounds, args.block, args.threads, not args.no_per_conv)
    flags = cpu_flags()
    machine = f"{platform.machine()}, {os.cpu_count()} cores" + (f", {' '.join(flags)}" if flags else "")
    import onnxruntime

    result.update(machine=machine, onnxruntime=onnxruntime.__version__)
    write_text_atomic(args.out / "int8_exactness.json", json.dumps(result, indent=1) + "\n")
    text = markdown(result, f"{machine}, ONNX Runtime {onnxruntime.__version__}", args.note)
    write_text_atomic(args.out / "int8_exactness.md", text)
    print(text)


if __name__ == "__main__":
    main()
