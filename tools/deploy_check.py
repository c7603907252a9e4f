"""The deploy side, checked where it runs: the same model files through the same calls on another
Python, other package versions or another CPU, and the results compared.

    # on the workstation venv: the models (SqueezeNet 1.1 INT8 export and an .esqz, from ../shared)
    python tools/deploy_check.py export build/deploy/models --shared ../shared
    # in each environment to compare (Python 3.8 with the oldest versions, aarch64 under emulation, ...)
    python tools/deploy_check.py run build/deploy/models --shared ../shared --out build/deploy/py38.json
    # anywhere
    python tools/deploy_check.py compare build/deploy/main.json build/deploy/py38.json

``run`` needs only the deploy side (numpy, OpenCV, ONNX Runtime, onnx; no torch) and Python 3.8:
for every model file it records the top-1 class of every val photo and top-1/top-5 through
``Classifier``, ``Classifier.predict`` on the larger photos, ``edge-squeeze predict --json`` and
``eval --json``, ``camera --headless --jsonl`` on a short video made from the photos, the one
error line of some bad inputs, and each model file's SHA-256. ``compare`` fails on any different
top-1 class, eval top-1 more than 0.2 point apart, or a different camera, predict or error result;
across x86 and ARM the INT8 files' fused kernels need only agree within a tolerance (x86's AVX2
kernels may saturate, ARM's do not), and each INT8 file's exact arithmetic (``EXACT_ARITHMETIC``)
must match photo for photo. Run against a committed results file
(``benchmarks/results/aarch64.json``), it fails when this checkout's exporter or deploy side changed
what the files answer: the committed results are then stale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

MODEL_FILES = ("model.onnx", "model.int8.onnx", "model.int8.cpu.onnx", "squeezenet1_1.esqz")
EVAL_TOP1_TOLERANCE = 0.002
# between x86 and ARM (measured 2026-11-28, benchmarks/results/aarch64.md: 4 and 3 of 500 photos,
# top-1 0.2 and 0.4 point apart); a changed exporter or deploy side moves far more
INT8_CROSS_CPU_DIFFERENT = 0.02
INT8_CROSS_CPU_TOP1 = 0.01
# two logits closer than this are a tie: the float sums after the last integer layer order them
LOGIT_TIE = 1e-4


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``edge-squeeze ARGS`` of this interpreter's install (run outside the checkout, whose
    ``edge_squeeze/`` folder is not the installed package); paths must be absolute."""
    return subprocess.run(
        [sys.executable, "-m", "edge_squeeze.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )


def export(out: Path, shared: Path, calib_count: int) -> None:
    """The model files (needs the workstation install: torch)."""
    samples = shared / "data" / "imagenet-samples"
    weights = shared / "weights" / "squeezenet1_1-imagenet.pth"
    common = [
        "--arch",
        "squeezenet1_1",
        "--weights",
        str(weights),
        "--labels",
        str(samples / "synset_words.txt"),
    ]
    steps = [
        [
            "-q",
            "export",
            *common,
            "--int8",
            "--calib",
            str(samples / "calib"),
            "--calib-count",
            str(calib_count),
            "--out",
            str(out),
        ],
        ["-q", "compress", *common, "--bits", "6", "--out", str(out / "squeezenet1_1.esqz")],
    ]
    for step in steps:
        result = cli(*step)
        if result.returncode != 0:
            sys.exit(f"deploy_check: {' '.join(step[:2])} failed: {result.stderr.strip()}")


def _video(photos: List[Path], path: Path) -> int:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 240))
    frames = 0
    for photo in photos:
        image = cv2.imread(str(photo))
        for _ in range(2):
            writer.write(cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA))
            frames += 1
    writer.release()
    return frames


def _one_line(result: subprocess.CompletedProcess) -> Dict[str, Any]:
    lines = result.stderr.strip().splitlines()
    return {"exit": result.returncode, "lines": len(lines), "message": lines[-1] if lines else ""}


# how each INT8 file's exact arithmetic is computed (``run`` records the top-1 class it gives per
# val photo under report["exact"][file name]): the reference its fused kernels are held to on any CPU
EXACT_ARITHMETIC = {
    "model.int8.onnx": "graph optimizations off: every DequantizeLinear and float op as written",
    "model.int8.cpu.onnx": "its u8-weight twin, whose u8 x u8 products never saturate",
}


def _exact_arithmetic(path: Path, photo_names: List[str], inputs: Any) -> Dict[str, Any]:
    """The INT8 file's top-1 class per val photo in its exact arithmetic (``EXACT_ARITHMETIC``) and
    the photos whose two best logits tie there (float rounding after the last integer layer may
    order them either way).

    The Q/DQ file runs with ONNX Runtime's graph optimizations off (its arithmetic as written, up
    to float rounding); the CPU file runs as its u8-weight twin
    (``edge_squeeze.export.quantize.u8_weight_twin``) on the fused kernels."""
    import onnx
    import onnxruntime

    from edge_squeeze.export.quantize import u8_weight_twin
    from edge_squeeze.runtimes.onnxruntime_backend import OrtOptions, open_session

    if path.name == "model.int8.onnx":
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    else:
        twin = u8_weight_twin(onnx.load(str(path))).SerializeToString()
        session = open_session(path, OrtOptions(), model=twin)
    return dict(how=EXACT_ARITHMETIC[path.name], **_top1(session, photo_names, inputs))


def _top1(session: Any, photo_names: List[str], inputs: Any) -> Dict[str, Any]:
    import numpy as np

    from edge_squeeze.evaluate import infer_batched

    name = session.get_inputs()[0].name
    logits = infer_batched(lambda batch: session.run(None, {name: batch})[0], inputs, 32)
    best2 = np.partition(logits, -2, axis=1)[:, -2:]
    return {
        "predictions": {p: int(i) for p, i in zip(photo_names, logits.argmax(axis=1))},
        "ties": [p for p, (second, first) in zip(photo_names, best2) if first - second < LOGIT_TIE],
    }


def run(models: Path, shared: Path, work: Path) -> Dict[str, Any]:
    """Every check on this machine and interpreter."""
    import cv2
    import numpy as np
    import onnxruntime

    from edge_squeeze import Classifier
    from edge_squeeze.evaluate import accuracy_from_logits, ground_truth, infer_batched, load_eval_set

    samples = shared / "data" / "imagenet-samples"
    photos = sorted((shared / "data" / "photos").glob("*.jpg"))
    work.mkdir(parents=True, exist_ok=True)
    report: Dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": {
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "models": {},
        "exact": {},
    }
    import onnx

    report["versions"]["onnx"] = onnx.__version__
    eval_sets: Dict[Any, Any] = {}  # preprocessed once per preprocessing (slow under emulation)
    for name in MODEL_FILES:
        path = models / name
        if not path.is_file():
            continue
        started = time.perf_counter()
        int8_file = {"model.int8.onnx": "qdq", "model.int8.cpu.onnx": "cpu"}.get(name, "auto")
        clf = Classifier(path, backend="onnxruntime", int8_file=int8_file)
        paths, truth = ground_truth(samples / "val", clf.labels)
        if clf.spec not in eval_sets:
            eval_sets[clf.spec] = load_eval_set(paths, truth, clf.spec)
        inputs, truth = eval_sets[clf.spec]
        if name in EXACT_ARITHMETIC:
            report["exact"][name] = _exact_arithmetic(path, [p.name for p in paths], inputs)
        acc = accuracy_from_logits(infer_batched(clf.infer, inputs, 32), truth)
        report["models"][name] = {
            "file_run": Path(clf.info.model_path).name,
            "top1": acc.top1,
            "top5": acc.top5,
            "n": acc.n,
            "predictions": {p.name: int(i) for p, i in zip(paths, acc.predictions)},
            "photos": {p.name: clf.predict(str(p)).label for p in photos},
            "seconds": round(time.perf_counter() - started, 1),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        print(
            f"deploy_check: {name} {acc.top1:.3f} top-1 in {report['models'][name]['seconds']} s",
            file=sys.stderr,
        )
    info = cli("info", "--json")
    report["info"] = json.loads(info.stdout) if info.returncode == 0 else {"error": info.stderr}
    said = report["info"]
    report["info_truthful"] = (
        said.get("python", "").startswith(platform.python_version())
        and said.get("numpy") == np.__version__
        and said.get("opencv", "").startswith(cv2.__version__)
        and said.get("onnxruntime", "").startswith(onnxruntime.__version__)
        and said.get("tensorrt", "").startswith("not installed")
    )
    auto = Classifier(models / "model.int8.onnx")  # which INT8 file "auto" runs here
    report["int8_auto_choice"] = Path(auto.info.model_path).name
    cpu = models / "model.int8.cpu.onnx"
    predicted = cli("-q", "predict", str(cpu), str(photos[0]), "--json")
    report["cli_predict"] = (
        json.loads(predicted.stdout)[0]["label"] if predicted.returncode == 0 else predicted.stderr
    )
    evaluated = cli("-q", "eval", str(cpu), "--data", str(samples / "val"), "--json")
    report["cli_eval"] = json.loads(evaluated.stdout) if evaluated.returncode == 0 else evaluated.stderr
    video = work / "clip.avi"
    frames = _video(photos, video)
    jsonl = work / "camera.jsonl"
    camera = cli(
        "-q", "camera", "--model", str(cpu), "--source", str(video), "--headless", "--jsonl", str(jsonl)
    )
    report["camera"] = {
        "exit": camera.returncode,
        "frames_written": frames,
        "labels": [json.loads(line)["label"] for line in jsonl.read_text().splitlines()]
        if jsonl.is_file()
        else [],
    }
    corrupt = work / "corrupt.onnx"
    corrupt.write_bytes(cpu.read_bytes()[:5000])
    report["bad_input"] = {
        "missing model": _one_line(cli("-q", "predict", str(work / "missing.onnx"), str(photos[0]))),
        "truncated model": _one_line(cli("-q", "predict", str(corrupt), str(photos[0]))),
        "missing image": _one_line(cli("-q", "predict", str(cpu), str(work / "missing.jpg"))),
        "not an image": _one_line(cli("-q", "predict", str(cpu), str(corrupt))),
    }
    return report


def compare(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    """How ``b`` differs from ``a`` (empty: the same).

    On the same CPU family every file must name the same class for every photo. Between x86 and ARM
    the integer kernels differ (x86's AVX2 u8 x s8 pair sums may saturate, ARM's sum in 32 bits), so
    there the INT8 files' fused results (and ``eval``/``camera``, which run the CPU file) need only
    agree within INT8_CROSS_CPU_*; both INT8 files' exact arithmetic (the Q/DQ file with graph
    optimizations off, the CPU file's integers), the fp32 file and the ``.esqz`` must still match
    photo for photo, except where the exact logits tie."""
    from edge_squeeze.runtimes.select import int8_pair_sums_saturate

    problems = []
    cross_cpu = int8_pair_sums_saturate(a["machine"]) != int8_pair_sums_saturate(b["machine"])
    pairs = [(name, ra, b["models"].get(name)) for name, ra in a["models"].items()]
    pairs += [
        (f"{name} (exact arithmetic)", ra, b.get("exact", {}).get(name))
        for name, ra in a.get("exact", {}).items()
    ]
    for name, ra, rb in pairs:
        if rb is None:
            problems.append(f"{name}: not run in the second environment")
            continue
        int8_fused = cross_cpu and name in ("model.int8.onnx", "model.int8.cpu.onnx")
        ties = set(ra.get("ties", [])) | set(rb.get("ties", []))
        differ = [p for p, i in ra["predictions"].items() if rb["predictions"].get(p) != i and p not in ties]
        if differ and (not int8_fused or len(differ) > INT8_CROSS_CPU_DIFFERENT * len(ra["predictions"])):
            problems.append(
                f"{name}: top-1 class differs on {len(differ)} photos ({', '.join(differ[:3])} ...)"
            )
        if "top1" not in ra:
            continue
        if abs(ra["top1"] - rb["top1"]) > (INT8_CROSS_CPU_TOP1 if int8_fused else EVAL_TOP1_TOLERANCE):
            problems.append(f"{name}: top-1 {ra['top1']:.3f} against {rb['top1']:.3f}")
        if ra["photos"] != rb["photos"]:
            problems.append(f"{name}: predict on the photos differs: {ra['photos']} against {rb['photos']}")
    if a["cli_predict"] != b["cli_predict"]:
        problems.append(f"cli_predict differs: {a['cli_predict']} against {b['cli_predict']}")
    ca, cb = a["camera"], b["camera"]
    frames_differ = sum(x != y for x, y in zip(ca["labels"], cb["labels"]))
    if (
        (ca["exit"], ca.get("frames_written"), len(ca["labels"]))
        != (cb["exit"], cb.get("frames_written"), len(cb["labels"]))
        or ca["exit"] != 0
        or frames_differ > (1 if cross_cpu else 0)
    ):
        problems.append(f"camera differs: {ca} against {cb}")
    if a["cli_eval"] != b["cli_eval"] and abs(a["cli_eval"]["top1"] - b["cli_eval"]["top1"]) > (
        INT8_CROSS_CPU_TOP1 if cross_cpu else EVAL_TOP1_TOLERANCE
    ):
        problems.append(f"eval --json differs: {a['cli_eval']} against {b['cli_eval']}")
    for report in (a, b):
        expected = "model.int8.cpu.onnx" if not int8_pair_sums_saturate(report["machine"]) else None
        if expected and report.get("int8_auto_choice") != expected:
            problems.append(
                f'Classifier("model.int8.onnx") on {report["machine"]} ran {report.get("int8_auto_choice")}, '
                f"not {expected}"
            )
        if not report.get("info_truthful", False):
            problems.append(
                f"edge-squeeze info on {report['python']} {report['machine']} misreports: {report.get('info')}"
            )
    for case, ra in a["bad_input"].items():
        rb = b["bad_input"][case]
        if (ra["exit"], ra["lines"]) != (rb["exit"], rb["lines"]) or ra["exit"] != 1 or ra["lines"] != 1:
            problems.append(f"bad input '{case}': {ra} against {rb}")
    return problems


def summary(reference: Dict[str, Any], other: Dict[str, Any], note: str) -> str:
    """A Markdown table of ``other`` beside ``reference``: top-1/top-5 of each model file and how often
    the two name the same class."""
    lines = [
        f"# Deploy side on {other['machine']} (Python {other['python']}) against {reference['machine']} "
        f"(Python {reference['python']})",
        "",
        note,
        "",
        f"Versions: {other['versions']} against {reference['versions']}.",
        f'`Classifier("model.int8.onnx")` ran `{other["int8_auto_choice"]}` (reference: '
        f"`{reference['int8_auto_choice']}`).",
        "",
        f"| model file | top-1 | top-5 | same class as fp32 (`model.onnx`) here | top-1 ({reference['machine']}) "
        f"| same class as fp32 ({reference['machine']}) | same class as {reference['machine']} |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    fp32 = "model.onnx"
    for name, r in other["models"].items():
        ref = reference["models"].get(name, {})
        lines.append(
            f"| {name} | {100 * r['top1']:.1f} % | {100 * r['top5']:.1f} % | "
            f"{_same_class(r['predictions'], other['models'].get(fp32, {}).get('predictions', {}))} | "
            f"{100 * ref.get('top1', float('nan')):.1f} % | "
            f"{_same_class(ref.get('predictions', {}), reference['models'].get(fp32, {}).get('predictions', {}))} | "
            f"{_same_class(r['predictions'], ref.get('predictions', {}))} |"
        )

    def against(name: str, exact: Dict[str, int], report: Dict[str, Any]) -> str:
        return f"{_same_class(report['models'].get(name, {}).get('predictions', {}), exact)} on {report['machine']}"

    for name, exact in other.get("exact", {}).items():
        reference_exact = reference.get("exact", {}).get(name, {})
        ties = sorted(set(exact["ties"]) | set(reference_exact.get("ties", [])))
        lines += [
            "",
            f"`{name}` as `Classifier` runs it on the CPU's fused kernels against its exact arithmetic "
            f"({exact['how']}): {against(name, exact['predictions'], other)}, "
            f"{against(name, reference_exact.get('predictions', {}), reference)}; exact arithmetic here "
            f"against {reference['machine']}'s: "
            f"{_same_class(exact['predictions'], reference_exact.get('predictions', {}))} "
            f"(tied best logits: {', '.join(ties) if ties else 'none'}).",
        ]
    problems = compare(reference, other)
    lines += ["", "Differences: " + ("; ".join(problems) if problems else "none."), ""]
    return "\n".join(lines)


def _same_class(predictions: Dict[str, int], reference: Dict[str, int]) -> str:
    from edge_squeeze.results import top1_agreement

    shared = [p for p in reference if p in predictions]
    if not shared:
        return "n/a"
    agreement = top1_agreement([predictions[p] for p in shared], [reference[p] for p in shared])
    return f"{100 * agreement:.1f} % of {len(shared)}"


def _read_results(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        sys.exit(
            f"deploy_check: {path} is not a results file ({exc}): write it again with `deploy_check run`"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("models", type=Path)
    p.add_argument("--shared", type=Path, default=Path("../shared"))
    p.add_argument("--calib-count", type=int, default=64)
    p = sub.add_parser("run")
    p.add_argument("models", type=Path)
    p.add_argument("--shared", type=Path, default=Path("../shared"))
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("compare")
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--markdown", type=Path, help="also write a summary table here")
    p.add_argument("--note", default="", help="a paragraph for the summary (how it was run)")
    args = parser.parse_args()
    from edge_squeeze.fileio import write_text_atomic

    for name in ("models", "shared", "out", "markdown"):
        if getattr(args, name, None) is not None:
            setattr(args, name, getattr(args, name).resolve())
    if args.command == "export":
        export(args.models, args.shared, args.calib_count)
        return 0
    if args.command == "run":
        # run() makes its work folder beside --out first, so an unwritable folder fails before the work
        report = run(args.models, args.shared, args.out.with_suffix(".work"))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(report, indent=1))
        print(
            f"{report['python']} {report['machine']} {report['versions']}: "
            + ", ".join(f"{n} {100 * r['top1']:.1f}%" for n, r in report["models"].items())
            + f"; auto INT8 file: {report['int8_auto_choice']}"
        )
        return 0
    first, second = (_read_results(p) for p in (args.first, args.second))
    problems = compare(first, second)
    if args.markdown:
        write_text_atomic(args.markdown, summary(first, second, args.note))
    for line in problems:
        print(f"deploy_check: {line}")
    if not problems:
        print(
            f"deploy_check: {second['python']} {second['machine']} agrees with {first['python']} {first['machine']}"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    from edge_squeeze.cli import USER_ERRORS, error_line

    try:
        sys.exit(main())
    except USER_ERRORS as exc:  # a missing, unreadable or unwritable file: one line, as the CLI prints it
        sys.exit(f"deploy_check: {error_line(exc)}")
