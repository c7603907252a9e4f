"""``edge-squeeze selftest``: prove TensorRT on this device with one command.

For an export folder (``model.onnx``, ``model.int8.onnx``) and a labelled image folder it builds each
engine precision, checks its top-1 agreement with ONNX Runtime fp32 and its accuracy, times batch 1
with and without a CUDA graph, runs ``trtexec --loadEngine`` on the same engine when trtexec is
installed, and writes one Markdown and one JSON report. Where TensorRT cannot run, its rows say why
and the command exits 1 after writing the report with the ONNX Runtime reference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import EdgeSqueezeError
from .formats import FP32, INT8_QDQ
from .options import ChoiceList, IntRange, flag, validate
from .power import PowerMeter
from .results import Result, top1_agreement
from .runtimes.engine_sidecar import PRECISIONS
from .runtimes.tensorrt_options import BuildOptions, TensorRTOptions

log = logging.getLogger("edge_squeeze")

# What each engine must reach against ONNX Runtime fp32 on the folder. fp32 and fp16 differ from it
# by rounding only; INT8's bound is the noise of a few hundred photos (docs/int8.md), not a target.
AGREEMENT_MIN = {"fp32": 0.99, "fp16": 0.98, "int8": 0.90}
INT8_TOP1_DROP_MAX = 0.02
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec",)


@dataclasses.dataclass
class SelftestOptions:
    export_dir: Path = flag(
        "export_dir", type=Path, help="an edge-squeeze export folder (model.onnx, model.int8.onnx)"
    )
    data: Path = flag(
        "--data", required=True, type=Path, help="labelled images (class subfolders or ImageNet file names)"
    )
    precisions: Sequence[str] = flag(
        "--precision",
        PRECISIONS,
        type=ChoiceList(PRECISIONS),
        help="engines to build, comma-separated (default fp32,fp16,int8)",
    )
    out: Optional[Path] = flag("--out", None, type=Path, help="report folder (default EXPORT_DIR/selftest)")
    iterations: int = flag(
        "--iterations", 300, type=IntRange(1), help="batch-1 calls timed per configuration"
    )
    dla_core: Optional[int] = flag(
        "--dla-core", None, type=IntRange(0), help="build the engines for this DLA core"
    )
    calib: Optional[Path] = flag(
        "--calib",
        None,
        type=Path,
        help="calibration images: INT8 calibrated on the device instead of the Q/DQ model",
    )

    def __post_init__(self) -> None:
        validate(self)


def verdict(precision: str, agreement: float, top1: float, reference_top1: float) -> List[str]:
    """What an engine got wrong against ONNX Runtime fp32 on the same photos (empty: it passed)."""
    problems = []
    need = AGREEMENT_MIN[precision]
    if agreement < need:
        problems.append(f"top-1 agreement with ONNX Runtime fp32 {agreement:.1%} < {need:.0%}")
    if precision == "int8" and reference_top1 - top1 > INT8_TOP1_DROP_MAX:
        problems.append(
            f"INT8 top-1 {top1:.1%} is {100 * (reference_top1 - top1):.1f} points under fp32's {reference_top1:.1%}"
        )
    return problems


_TRTEXEC_GPU = re.compile(
    r"GPU Compute Time: min = ([\d.]+) ms, max = ([\d.]+) ms, mean = ([\d.]+) ms, median = ([\d.]+) ms"
)
_TRTEXEC_QPS = re.compile(r"Throughput: ([\d.]+) qps")


def parse_trtexec(text: str) -> Optional[Dict[str, float]]:
    """trtexec's GPU compute time summary (ms) and throughput, or None when its output has none."""
    match = _TRTEXEC_GPU.search(text)
    if match is None:
        return None
    result = dict(zip(("min_ms", "max_ms", "mean_ms", "median_ms"), map(float, match.groups())))
    qps = _TRTEXEC_QPS.search(text)
    if qps:
        result["throughput_qps"] = float(qps.group(1))
    return result


def find_trtexec() -> Optional[str]:
    found = shutil.which("trtexec")
    if found:
        return found
    return next((p for p in TRTEXEC_PATHS if Path(p).is_file()), None)


def trtexec_command(
    trtexec: str, engine: Path, input_name: str, chw: Sequence[int], cuda_graph: bool
) -> List[str]:
    shape = "x".join(str(d) for d in (1, *chw))
    command = [
        trtexec,
        f"--loadEngine={engine}",
        f"--shapes={input_name}:{shape}",
        "--warmUp=500",
        "--duration=5",
    ]
    return command + (["--useCudaGraph"] if cuda_graph else [])


def time_batch1(backend: Any, x: np.ndarray, iterations: int) -> Dict[str, float]:
    """Median and p99 of ``backend.infer`` on one preprocessed image (ms), and of its GPU stage."""
    from .bench import summarize

    for _ in range(min(50, iterations)):
        backend.infer(x)
    wall, gpu = [], []
    stages = getattr(backend, "last_stage_ms", None)
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        backend.infer(x)
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        if stages is not None:
            gpu.append(stages().get("infer", float("nan")))
    result = {"p50_ms": summarize(wall)["median"], "p99_ms": summarize(wall)["p99"]}
    if gpu:
        result["gpu_infer_p50_ms"] = summarize(gpu)["median"]
    return result


POWER_WINDOW_S = 5.0  # batch-1 calls sampled per engine when the device has a power counter


def power_row(
    backend: Any, x1: np.ndarray, meter: Any, seconds: float = POWER_WINDOW_S
) -> Optional[Dict[str, Any]]:
    """What ``seconds`` of batch-1 calls on ``backend`` cost in power (the ``--power`` summary of
    ``bench``), or None where the device has no power counter."""
    sampler = meter.window(gpu=True)
    if sampler is None:
        return None
    calls = 0
    with sampler:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            backend.infer(x1)
            calls += 1
    return meter.summary(sampler, calls * len(x1), gpu=True).to_dict()


def _engine_row(
    options: SelftestOptions, precision: str, reference: Any, inputs: Any, x1: np.ndarray, meter: Any
) -> Dict[str, Any]:
    """Build (or reuse) one engine and measure it; raises on any failure."""
    from .evaluate import accuracy_from_logits, infer_batched
    from .export.tensorrt_build import cached_engine
    from .runtimes import tensorrt_backend as trtb
    from .runtimes.engine_sidecar import Sidecar

    implicit = precision == "int8" and options.calib is not None
    source = options.export_dir / (INT8_QDQ if precision == "int8" and not implicit else FP32)
    build = BuildOptions(
        precision=precision,
        dla_core=options.dla_core,
        int8_mode="implicit" if implicit else "auto",
        calib_dir=options.calib if implicit else None,
    )
    trt_options = TensorRTOptions(build=build)
    started = time.perf_counter()
    engine = cached_engine(source, build)
    build_s = time.perf_counter() - started
    row: Dict[str, Any] = {"precision": precision, "source": source.name, "engine": engine.name}
    row["build_or_reuse_s"] = round(build_s, 1)
    plain = trtb.load(engine, trt_options)
    try:
        sidecar_info = {
            "device": plain.info.device,
            "max_batch": plain.info.max_batch,
        }
        row.update(sidecar_info)
        data, truth = inputs
        acc = accuracy_from_logits(infer_batched(plain.infer, data, 32), truth)
        row.update(top1=acc.top1, top5=acc.top5, n=acc.n)
        row["agreement_with_ort_fp32"] = top1_agreement(acc.predictions, reference.predictions)
        row["batch1"] = time_batch1(plain, x1, options.iterations)
        power = power_row(plain, x1, meter)
        if power is not None:
            row["power"] = power
    finally:
        plain.close()
    graphed = trtb.load(engine, dataclasses.replace(trt_options, cuda_graph=True))
    try:
        row["batch1_cuda_graph"] = time_batch1(graphed, x1, options.iterations)
    finally:
        graphed.close()
    sidecar = Sidecar.read(engine)
    if sidecar.dla_layers:
        row["dla_layers"] = sidecar.dla_layers
    trtexec = find_trtexec()
    if trtexec is not None:
        command = trtexec_command(
            trtexec, engine, sidecar.input_name, sidecar.metadata.preprocess.input_shape, False
        )
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        row["trtexec"] = parse_trtexec(run.stdout) or {
            "error": f"exit {run.returncode}, no timing in its output"
        }
        row["trtexec"]["command"] = " ".join(command)
    else:
        row["trtexec"] = None
    row["problems"] = verdict(precision, row["agreement_with_ort_fp32"], row["top1"], reference.top1)
    row["status"] = "pass" if not row["problems"] else "fail"
    return row


@dataclasses.dataclass(frozen=True)
class SelftestReport(Result):
    """Whether every engine passed, one row per precision (``status``, ``top1``, ``problems``, ...),
    and the whole report as ``selftest.json`` holds it (``details``)."""

    passed: bool
    engines: List[Dict[str, Any]]
    folder: Path
    details: Dict[str, Any] = dataclasses.field(repr=False)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.details)


def run_selftest(options: SelftestOptions) -> SelftestReport:
    """Build and measure every engine; the reports (``selftest.md``, ``selftest.json``) are written
    under ``options.out`` (default ``EXPORT_DIR/selftest``)."""
    from .bench import machine_info
    from .classifier import Classifier
    from .evaluate import accuracy_from_logits, ground_truth, infer_batched, load_eval_set
    from .runtimes.tensorrt_backend import unavailable_reason

    fp32 = options.export_dir / FP32
    if not fp32.is_file():
        raise EdgeSqueezeError(
            f"{options.export_dir} has no {FP32}: point selftest at an edge-squeeze export folder"
        )
    if (
        "int8" in options.precisions
        and options.calib is None
        and not (options.export_dir / INT8_QDQ).is_file()
    ):
        raise EdgeSqueezeError(
            f"{options.export_dir} has no {INT8_QDQ}: export with --int8 --calib DIR, or give --calib for "
            "implicit INT8 (TensorRT <= 10)"
        )
    started = time.perf_counter()
    ort = Classifier(fp32, backend="onnxruntime")
    paths, truth = ground_truth(options.data, ort.labels)
    inputs = load_eval_set(paths, truth, ort.spec)
    reference = accuracy_from_logits(infer_batched(ort.infer, inputs[0], 32), inputs[1])
    x1 = inputs[0][:1]
    report: Dict[str, Any] = {
        "export_dir": str(options.export_dir),
        "data": str(options.data),
        "images": reference.n,
        "machine": machine_info(),
        "reference": {
            "backend": "onnxruntime",
            "file": fp32.name,
            "top1": reference.top1,
            "top5": reference.top5,
        },
        "engines": [],
    }
    report["reference"]["batch1"] = time_batch1(ort.backend, x1, min(options.iterations, 100))
    reason = unavailable_reason()
    meter = PowerMeter()
    for precision in options.precisions:
        if reason is not None:
            report["engines"].append({"precision": precision, "status": "not run", "problems": [reason]})
            continue
        log.info("selftest: %s engine ...", precision)
        try:
            row = _engine_row(options, precision, reference, inputs, x1, meter)
        except Exception as exc:  # one precision failing must not hide the others
            log.warning("selftest: %s failed: %s", precision, exc)
            row = {"precision": precision, "status": "error", "problems": [f"{type(exc).__name__}: {exc}"]}
        report["engines"].append(row)
    meter.close()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["passed"] = bool(report["engines"]) and all(r["status"] == "pass" for r in report["engines"])
    folder = options.out or options.export_dir / "selftest"
    write_reports(report, folder)
    return SelftestReport(report["passed"], report["engines"], folder, report)


def _ms(row: Optional[Dict[str, Any]], key: str) -> str:
    if not row or key not in row:
        return ""
    return f"{row[key]:.3f}"


def _power(power: Optional[Dict[str, Any]]) -> str:
    if not power or power.get("mj_per_inference") is None:
        return ""
    above = power.get("mj_per_inference_above_idle")
    return f"{power['total_avg_w']:.1f} W, {above if above is not None else power['mj_per_inference']:.2f} mJ"


def markdown(report: Dict[str, Any]) -> str:
    ref = report["reference"]
    machine = report["machine"]
    lines = [
        "# edge-squeeze selftest",
        "",
        f"- device: {machine.get('cuda device', '?')}; TensorRT {machine.get('tensorrt', '?')}; "
        f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores)",
        f"- export: `{report['export_dir']}`; photos: `{report['data']}` ({report['images']} labelled)",
        f"- reference: ONNX Runtime fp32 `{ref['file']}`: top-1 {100 * ref['top1']:.1f} %, top-5 "
        f"{100 * ref['top5']:.1f} %, batch 1 p50 {ref['batch1']['p50_ms']:.2f} ms",
        f"- verdict: **{'PASS' if report['passed'] else 'FAIL'}** ({report['seconds']} s)",
        "",
        "| precision | status | top-1 | agrees with ORT fp32 | b1 p50 ms | b1 p50 ms, CUDA graph | GPU infer p50 ms | trtexec GPU median ms | W, mJ/inference above idle | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["engines"]:
        top1 = f"{100 * row['top1']:.1f} %" if "top1" in row else ""
        agree = f"{100 * row['agreement_with_ort_fp32']:.1f} %" if "agreement_with_ort_fp32" in row else ""
        notes = "; ".join(row.get("problems", []))
        if row.get("dla_layers"):
            notes = (
                notes + "; " if notes else ""
            ) + f"DLA: {row['dla_layers']['on_dla']} of {row['dla_layers']['total']} layers"
        lines.append(
            f"| {row['precision']} | {row['status']} | {top1} | {agree} | {_ms(row.get('batch1'), 'p50_ms')} | "
            f"{_ms(row.get('batch1_cuda_graph'), 'p50_ms')} | {_ms(row.get('batch1'), 'gpu_infer_p50_ms')} | "
            f"{_ms(row.get('trtexec'), 'median_ms')} | {_power(row.get('power'))} | {notes.replace('|', '/')} |"
        )
    lines += [
        "",
        "GPU infer is the engine's own time between CUDA events; trtexec's GPU compute median on the same "
        "engine should be close to it, and the difference to b1 p50 is Python, pycuda and the copies.",
        "",
    ]
    return "\n".join(lines)


def write_reports(report: Dict[str, Any], folder: Path) -> None:
    from .fileio import write_text_atomic

    try:
        write_text_atomic(folder / "selftest.json", json.dumps(report, indent=2, default=str))
        write_text_atomic(folder / "selftest.md", markdown(report))
    except OSError as exc:
        raise EdgeSqueezeError(
            f"cannot write the selftest report to {folder}: {exc.strerror or exc}"
        ) from exc
    log.info("wrote %s and %s", folder / "selftest.md", folder / "selftest.json")
