"""INT8 quality of both files for both SqueezeNets, with OpenVINO + NNCF beside them when installed.

    .venv/bin/python benchmarks/int8_compare.py [--shared ../shared] [--models-root DIR] [--rounds 20]
    pip install openvino nncf     # optional: adds the NNCF rows (not a dependency of edge-squeeze)

For SqueezeNet 1.1 (the shared ImageNet weights, 224 crop) and 1.0 (the paper's Deep-Compression
file, Caffe's 227 crop), runs ``edge-squeeze export --int8`` on the 200 shared calibration photos
(or reuses ``DIR/<arch>`` when it holds an export), then on the 500 val photos: fp32 on ONNX
Runtime; ``model.int8.onnx`` computed exactly (TensorRT's int8 arithmetic); ``model.int8.cpu.onnx``
on ONNX Runtime's integer kernels; and NNCF's INT8 model (``nncf.quantize`` with its defaults, the
same calibration photos through the same preprocessing) on OpenVINO's CPU plugin. Each row: top-1,
top-5 and agreement with fp32 (share of photos with fp32's top-1 class); batch-1 latency of fp32,
the CPU file and NNCF in paired, interleaved rounds. Writes benchmarks/results/int8_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edge_squeeze.bench import load_frames, paired_batch1, ratio_summary
from edge_squeeze.classifier import Classifier
from edge_squeeze.cli import main as cli
from edge_squeeze.evaluate import accuracy_from_logits, ground_truth, infer_batched, load_eval_set
from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images

HERE = Path(__file__).resolve().parent


class OpenVinoInt8:
    """NNCF's default post-training INT8 quantization of ``model.onnx``, run by OpenVINO on the CPU;
    ``preprocess`` and ``infer`` as a Classifier's, so the same timing and evaluation code runs it."""

    def __init__(self, fp32_path: Path, calib: np.ndarray, fp32: Classifier, threads: int) -> None:
        import nncf
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(fp32_path))
        dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
        quantized = nncf.quantize(model, dataset, subset_size=len(calib))
        self._compiled = core.compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": threads})
        self._output = self._compiled.output(0)
        self.spec = fp32.spec
        self.preprocess = fp32.preprocess
        self.version = f"openvino {ov.__version__.split('-')[0]}, nncf {nncf.__version__}"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._compiled([batch])[self._output])


def openvino_available() -> Optional[str]:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc.name}): pip install openvino nncf"
    return None


def export(arch: str, weights: Path, samples: Path, out: Path) -> None:
    if (out / "model.int8.cpu.onnx").exists():
        return
    labels = str(samples / "synset_words.txt")
    calib = str(samples / "calib")
    argv = ["-q", "export", "--arch", arch, "--weights", str(weights), "--labels", labels]
    argv += ["--int8", "--calib", calib, "--out", str(out), "--report"]
    code = cli(argv)
    if code != 0:
        raise SystemExit(f"export of {arch} failed")


def compare(
    arch: str, models: Path, samples: Path, rounds: int, block: float, threads: int
) -> Dict[str, Any]:
    fp32 = Classifier(models / "model.onnx", backend="onnxruntime", threads=threads)
    clfs: Dict[str, Any] = {
        "fp32 (ONNX Runtime)": fp32,
        "model.int8.onnx, exact (TensorRT's arithmetic)": Classifier(
            models / "model.int8.onnx", backend="onnxruntime", int8_file="qdq", threads=threads
        ),
        "model.int8.cpu.onnx (ONNX Runtime)": Classifier(
            models / "model.int8.cpu.onnx", backend="onnxruntime", threads=threads
        ),
    }
    missing = openvino_available()
    if missing is None:
        calib = CalibrationSet(select_calibration_images(samples / "calib"), fp32.spec, progress=False).data
        clfs["NNCF INT8 (OpenVINO)"] = OpenVinoInt8(models / "model.onnx", calib, fp32, threads)
    paths, all_truth = ground_truth(samples / "val", fp32.metadata.labels)
    logits = {}
    rows: List[Dict[str, Any]] = []
    for name, clf in clfs.items():  # each on its own preprocessing (the CPU file takes uint8 pixels)
        inputs, truth = load_eval_set(paths, all_truth, clf.spec)
        logits[name] = infer_batched(clf.infer, inputs, 50)
        acc = accuracy_from_logits(logits[name], truth)
        rows.append({"file": name, "top1": acc.top1, "top5": acc.top5, "n": acc.n})
    reference = logits["fp32 (ONNX Runtime)"].argmax(1)
    for row in rows:
        row["agreement"] = float(np.mean(logits[row["file"]].argmax(1) == reference))
    timed = {k: v for k, v in clfs.items() if "exact" not in k}
    medians = paired_batch1(timed, load_frames(samples / "val"), rounds, block)
    for row in rows:
        if row["file"] in medians:
            row["batch1_ms"] = float(np.median(medians[row["file"]]))
            row["speedup_vs_fp32"] = ratio_summary(medians["fp32 (ONNX Runtime)"], medians[row["file"]])
    return {
        "arch": arch,
        "crop": fp32.spec.crop,
        "rows": rows,
        "openvino": clfs["NNCF INT8 (OpenVINO)"].version if missing is None else missing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    parser.add_argument("--models-root", help="folder for (or with) the exports, one subfolder per arch")
    parser.add_argument("--arch", nargs="+", default=["squeezenet1_1", "squeezenet1_0"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=float, default=0.5, help="seconds per model per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    shared = Path(args.shared)
    samples = shared / "data" / "imagenet-samples"
    weights = {
        "squeezenet1_1": shared / "weights" / "squeezenet1_1-imagenet.pth",
        "squeezenet1_0": shared / "weights" / "deep-compression" / "compressed_SqueezeNet.net",
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="int8-compare.") as tmp:
        root = Path(args.models_root or tmp)
        for arch in args.arch:
            export(arch, weights[arch], samples, root / arch)
            results.append(compare(arch, root / arch, samples, args.rounds, args.block, args.threads))
            print(json.dumps(results[-1]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_compare.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2) + "\n"
    )
    lines = [
        f"500 shared val photos, 200 calibration photos; {machine}; batch-1 time in {args.rounds} paired rounds "
        f"of {args.block} s per model, {args.threads} threads (speed-up: median of per-round fp32/model "
        "ratios, range in brackets). Agreement: share of photos with fp32's top-1 class.",
        "",
        "| model | file | top-1 | top-5 | agreement with fp32 | batch-1 ms | speed-up vs fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        for row in result["rows"]:
            speed = row.get("speedup_vs_fp32")
            lines.append(
                f"| {result['arch']} ({result['crop']}) | {row['file']} | {100 * row['top1']:.1f} % | "
                f"{100 * row['top5']:.1f} % | {100 * row['agreement']:.1f} % | "
                + (f"{row['batch1_ms']:.2f} | " if "batch1_ms" in row else "- | ")
                + (f"{speed['median']:.2f}x ({speed['min']:.2f}-{speed['max']:.2f}) |" if speed else "- |")
            )
    lines += ["", "OpenVINO: " + "; ".join(sorted({r["openvino"] for r in results}))]
    (out / "int8_compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
