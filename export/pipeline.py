"""The export job: weights -> ``model.onnx`` (fp32) -> ``model.int8.onnx`` + ``model.int8.cpu.onnx``.

Everything the job measured goes into ``export-report.json`` beside the models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from edge_squeeze._version import __version__
from edge_squeeze.config import ARCHS
from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.fileio import sha256_file, write_text_atomic
from edge_squeeze.formats import FILE_NAMED, FP16, FP32, INT8_CPU, INT8_QDQ, REPORT, TRT_CALIB_CACHE
from edge_squeeze.labels import Labels
from edge_squeeze.metadata import ArtifactMetadata, load_onnx_model, set_metadata
from edge_squeeze.options import IntRange, flag, internal, validate
from edge_squeeze.preprocess import PreprocessSpec, preprocess_files, preprocess_one
from edge_squeeze.runtimes.tensorrt_options import CALIB_COUNT

from . import fidelity as fq
from . import quantize as q
from . import ranges as r
from .calibration import CalibrationSet, calibration_cache_key, select_calibration_images
from .evaluation import evaluate_exported
from .onnx_export import DEFAULT_OPSET, export_fp16, export_fp32
from .report import ExportReport
from .staging import staging_folder

log = logging.getLogger("edge_squeeze")


# below this calibration-set agreement with fp32 the CPU file is written with a warning
CPU_FILE_WARNING_AGREEMENT = 0.93


@dataclasses.dataclass
class ExportOptions:
    """What ``edge-squeeze export`` does; each field declares its flag."""

    weights: str = flag(
        "--weights", required=True, help="'imagenet', a state-dict .pth, or a training checkpoint"
    )
    out: Path = flag("--out", Path("out"), type=Path, help="output folder (default: out)")
    arch: Optional[str] = flag(
        "--arch", None, choices=ARCHS, help="architecture (a training checkpoint names its own)"
    )
    labels: Optional[Labels] = flag(
        "--labels", None, help="class names: one a line, or synset_words.txt form (wnid name, ...)"
    )
    num_classes: Optional[int] = flag("--num-classes", None, type=IntRange(1))
    image_size: Optional[int] = flag(
        "--image-size",
        None,
        type=IntRange(32, 2048),
        help="input size (default: the weights' own, 224 for ImageNet)",
    )
    opset: int = flag("--opset", DEFAULT_OPSET, type=IntRange(13, 21))
    simplify: bool = flag("--simplify", False, action="store_true", help="run onnxsim on the fp32 model")
    int8: bool = flag(
        "--int8", False, action="store_true", help="also write INT8 Q/DQ models (needs --calib)"
    )
    calib: Optional[Path] = flag(
        "--calib", None, type=Path, help="folder of calibration images (searched recursively)"
    )
    calib_count: Optional[int] = flag(
        "--calib-count", None, type=CALIB_COUNT, help="use a deterministic sample of N calibration images"
    )
    calib_method: Optional[str] = flag(
        "--calib-method",
        None,
        choices=r.METHODS,
        help="activation ranges (default: for each INT8 file, the method whose model agrees best with fp32 "
        "on the calibration images)",
    )
    # Q/DQ file: keep layers in float, most sensitive first, until calibration-set top-1 agreement with fp32
    # reaches this (at most max_float_layers of them)
    target_agreement: float = internal(0.95, why="the float-layer target (docs/int8.md)")
    max_float_layers: int = internal(2, why="the float-layer budget (docs/int8.md)")
    sensitivity_report: bool = flag(
        "--report", False, action="store_true", help="per-layer INT8 sensitivity report"
    )
    eval_data: Optional[Path] = flag(
        "--eval", None, type=Path, help="labelled image folder: record fp32 vs int8 accuracy in the report"
    )
    progress: bool = internal(True, why="progress bars: the CLI's --quiet turns them off")

    def __post_init__(self) -> None:
        validate(self)


def _logits_head_nodes(model: Any) -> List[str]:
    """The global average pool that produces the logits: quantizing it rounds the logits themselves
    (one int8 step is ~0.3 logit), which reorders close classes; computing it in float costs nothing."""
    return [n.name for n in model.graph.node if n.op_type in ("GlobalAveragePool", "ReduceMean")]


def _parity_batch(options: ExportOptions, spec: Any, calib_paths: Sequence[Path]) -> np.ndarray:
    if calib_paths:
        arrays = []
        for path in list(calib_paths)[:32]:
            try:
                arrays.append(preprocess_one(path, spec))
            except EdgeSqueezeError:
                continue
            if len(arrays) == 16:
                break
        if arrays:
            return np.stack(arrays)
    # without photos: smooth random images, which excite the network more like photos than noise does
    rng = np.random.default_rng(0)
    images = [
        np.clip(np.cumsum(rng.normal(0, 6, (spec.crop, spec.crop, 3)), axis=0) + 128, 0, 255).astype(np.uint8)
        for _ in range(8)
    ]
    return np.stack([preprocess_one(img, spec) for img in images])


def run_export(options: ExportOptions) -> ExportReport:
    """The export job. Every input is checked before anything is written; the files are made in a
    staging folder inside ``options.out`` and moved in together at the end, where members of an
    earlier export this run does not make (an fp32-only run over an INT8 export) are removed: a
    failed, interrupted or concurrent export never leaves a mixed set."""
    from edge_squeeze.evaluate import ground_truth
    from edge_squeeze.models import load_model

    t_start = time.perf_counter()
    out = Path(options.out)
    bundle = load_model(
        options.weights,
        arch=options.arch,
        num_classes=options.num_classes,
        labels=options.labels,
        image_size=options.image_size,
    )
    calib_paths: List[Path] = []
    if options.int8:
        if options.calib is None:
            raise EdgeSqueezeError(
                "--int8 needs --calib DIR: a folder of typical input images to calibrate on"
            )
        calib_paths = select_calibration_images(options.calib, options.calib_count)
    elif options.calib is not None:
        log.warning("--calib is only used with --int8; ignoring it")
    if options.eval_data is not None:
        ground_truth(options.eval_data, bundle.labels)  # a wrong --eval folder fails before any writing
    metadata = ArtifactMetadata(
        arch=bundle.config.arch,
        labels=bundle.labels,
        preprocess=bundle.preprocess,
        precision="fp32",
        weights_sha256=bundle.weights_sha256,
        model_config=bundle.config.to_dict(),
    )
    report: Dict[str, Any] = {
        "edge_squeeze_version": __version__,
        "arch": bundle.config.arch,
        "weights": bundle.source,
        "weights_sha256": bundle.weights_sha256,
        "num_classes": bundle.config.num_classes,
        "preprocess": bundle.preprocess.to_dict(),
        "opset": options.opset,
        "exporter": "torch.onnx.export(dynamo=False)",
        "files": {},
    }
    with staging_folder(out) as stage:
        fp32_path = stage / FP32
        parity_batch = _parity_batch(options, bundle.preprocess, calib_paths)
        report["parity"] = export_fp32(
            bundle.model, metadata, fp32_path, parity_batch, options.opset, options.simplify
        )
        report["files"]["fp32"] = {"path": FP32, "bytes": fp32_path.stat().st_size}
        fp16_parity = export_fp16(fp32_path, metadata, stage / FP16, parity_batch)
        if fp16_parity is not None:
            report["fp16_parity"] = fp16_parity
            report["files"]["fp16"] = {"path": FP16, "bytes": (stage / FP16).stat().st_size}
        if options.int8:
            report["int8"] = _export_int8(options, metadata, fp32_path, calib_paths, out / "calibration")
            for key, name in (("int8", INT8_QDQ), ("int8_cpu", INT8_CPU)):
                report["files"][key] = {"path": name, "bytes": (stage / name).stat().st_size}
        if options.eval_data is not None:
            report["eval"] = evaluate_exported(stage, options.eval_data, bundle, int8=options.int8)
        report["seconds"] = round(time.perf_counter() - t_start, 1)
        write_text_atomic(stage / REPORT, json.dumps(report, indent=2, sort_keys=True))
    return ExportReport.from_dict(report)


@dataclasses.dataclass
class Int8Calibration:
    """What both INT8 files are made from: the fp32 model, the calibration images, every method's
    activation ranges, the fp32 logits on the images, and the layers always kept in float."""

    fp32: Any
    calib: CalibrationSet
    key: str  # model + calibration set: the statistics cache's key, recorded in both files
    method_ranges: Dict[str, Dict[str, Tuple[float, float]]]
    reference: np.ndarray
    head: List[str]
    report: Dict[str, Any]


@dataclasses.dataclass
class Int8File:
    """One INT8 file before it is written: its model, quantization, input and what choosing it measured."""

    model: Any
    config: q.QuantConfig
    spec: PreprocessSpec
    report: Dict[str, Any]


def _export_int8(
    options: ExportOptions,
    metadata: ArtifactMetadata,
    fp32_path: Path,
    calib_paths: List[Path],
    cache_folder: Path,
) -> Dict[str, Any]:
    """Calibrate once, then make and write the Q/DQ file and the CPU file beside ``fp32_path``; the
    report's ``int8``. Calibration statistics are cached in ``cache_folder``."""
    cal = _calibrate(options, metadata, fp32_path, calib_paths, cache_folder)
    out = fp32_path.parent
    qdq = _qdq_file(options, metadata, cal)
    write_text_atomic(
        out / TRT_CALIB_CACHE, r.tensorrt_calibration_cache(cal.method_ranges[qdq.config.method])
    )
    cpu = _cpu_file(options, metadata, cal)
    for name, file, variants in (
        (INT8_QDQ, qdq, {"cpu": INT8_CPU}),
        (INT8_CPU, cpu, {"qdq": INT8_QDQ}),
    ):
        quantization = {
            **file.config.describe(),
            "calibration_images": len(cal.calib),
            "calibration_key": cal.key,
        }
        meta = dataclasses.replace(
            metadata, preprocess=file.spec, precision="int8", quantization=quantization, variants=variants
        )
        set_metadata(file.model, meta)
        file.model.doc_string = FILE_NAMED[name].note  # which engine the file is for
        q.save_quantized(file.model, out / name)
    return {**cal.report, **qdq.report, **cpu.report, "tensorrt_calibration_cache": TRT_CALIB_CACHE}


def _calibrate(
    options: ExportOptions,
    metadata: ArtifactMetadata,
    fp32_path: Path,
    calib_paths: List[Path],
    cache_folder: Path,
) -> Int8Calibration:
    fp32 = load_onnx_model(fp32_path)
    calib = CalibrationSet(calib_paths, metadata.preprocess, progress=options.progress)
    key = calibration_cache_key(sha256_file(fp32_path), calib.fingerprint(), "stats", bins=r.HIST_BINS)
    cache_path = cache_folder / f"stats-{key}.npz"
    stats, reused = r.cached_stats(fp32, calib, cache_path, key, progress=options.progress)
    # every method's ranges, once: entropy's threshold search is the slow part of calibration
    method_ranges = {m: r.fold_relu_ranges(fp32, r.compute_ranges(stats, m)) for m in r.METHODS}
    report = {
        "calibration": {
            "images": len(calib),
            "skipped": [str(p) for p in calib.skipped],
            "method": options.calib_method or "chosen per file",
            "cache": f"{cache_folder.name}/{cache_path.name}",
            "cache_reused": reused,
        }
    }
    reference = fq.logits_of(fp32.SerializeToString(), calib.data)
    return Int8Calibration(fp32, calib, key, method_ranges, reference, _logits_head_nodes(fp32), report)


T = TypeVar("T")


def _closest_method(
    options: ExportOptions, cal: Int8Calibration, trial: Callable[[str], Tuple[Any, fq.Fidelity, T]]
) -> Tuple[List[Dict[str, Any]], Tuple[Any, fq.Fidelity, T]]:
    """``trial(method)`` (a model, its fidelity to fp32 on the calibration images, and what made it)
    for ``options.calib_method`` or else every calibration method: the report's trial rows, and the
    trial whose model follows fp32 most closely (least logit MSE; the first of equals)."""
    trials, best = [], None
    for method in [options.calib_method] if options.calib_method else list(r.METHODS):
        result = trial(method)
        trials.append({"method": method, "float_nodes": list(cal.head), **result[1].to_dict()})
        if best is None or result[1].logit_mse < best[1].logit_mse:
            best = result
    assert best is not None
    return trials, best


def _qdq_file(options: ExportOptions, metadata: ArtifactMetadata, cal: Int8Calibration) -> Int8File:
    """``model.int8.onnx``: int8 symmetric Q/DQ (what TensorRT builds), computed exactly. The
    calibration method is ``options.calib_method``, or the one whose model follows fp32 most closely
    on the calibration images (least logit MSE: steadier than top-1 agreement on 200 images); then
    the most sensitive layers stay float until those images agree with fp32 as targeted."""

    def head_trial(method: str) -> Tuple[Any, fq.Fidelity, fq.QuantProblem]:
        problem = fq.QuantProblem(
            cal.fp32, cal.method_ranges[method], "s8", method, cal.calib.data, cal.reference
        )
        return (*problem.trial(cal.head), problem)

    trials, (head_model, head_fid, problem) = _closest_method(options, cal, head_trial)
    report: Dict[str, Any] = {"qdq_file_trials": trials}

    def ranking() -> List[str]:
        if "sensitivity" not in report:
            report["sensitivity"] = fq.sensitivity(problem, keep_float=cal.head, progress=options.progress)
        return [row["node"] for row in report["sensitivity"]]

    if options.sensitivity_report:
        ranking()
    float_nodes, steps, model = fq.choose_float_nodes(
        problem,
        ranking=ranking,
        target_agreement=options.target_agreement,
        max_float=len(cal.head) + options.max_float_layers,
        always_float=cal.head,
        first_trial=(head_model, head_fid),
    )
    config = q.QuantConfig("s8", problem.method, tuple(float_nodes))
    report.update(steps=steps, float_nodes=list(float_nodes), qdq_file=config.describe())
    return Int8File(model, config, metadata.preprocess, report)


def _cpu_file(options: ExportOptions, metadata: ArtifactMetadata, cal: Int8Calibration) -> Int8File:
    """``model.int8.cpu.onnx``: uint8 activations and ``reduce_range`` weights for ONNX Runtime's
    integer kernels on x86, taking raw pixels where that is as accurate.

    It is there for speed: every Conv stays integer (a float Conv inside ONNX Runtime's NHWC integer
    graph costs more than it saves), the calibration method is the one whose model follows fp32 most
    closely (least logit MSE) under those kernels on the calibration images, and each Fire's Concat gets one range for
    its inputs and output, so ONNX Runtime copies instead of requantizing (docs/int8.md has the
    measurements).
    """

    def fused_trial(method: str) -> Tuple[Any, fq.Fidelity, q.QuantConfig]:
        config = q.QuantConfig("u8", method, tuple(cal.head))
        ranges = r.unify_concat_ranges(cal.fp32, cal.method_ranges[method])
        model = q.quantize_model(cal.fp32, ranges, config, cal.calib.data)
        fid = fq.fidelity(cal.reference, fq.logits_of(model.SerializeToString(), cal.calib.data, exact=False))
        return model, fid, config

    trials, (model, fid, config) = _closest_method(options, cal, fused_trial)
    agreement = fid.top1_agreement
    if agreement < CPU_FILE_WARNING_AGREEMENT:
        log.warning(
            "%s agrees with fp32 on %.1f %% of the calibration images (target %.0f %%); "
            "model.int8.onnx is the accurate INT8 file",
            INT8_CPU,
            100 * agreement,
            100 * CPU_FILE_WARNING_AGREEMENT,
        )
    report: Dict[str, Any] = {"cpu_file_trials": trials, "cpu_file": config.describe()}
    model, spec = pixel_input_if_close(
        model, cal.fp32, metadata.preprocess, cal.calib, cal.reference, agreement, report
    )
    return Int8File(model, config, spec, report)


# how much calibration-set agreement with fp32 the uint8-pixel input may cost before the CPU
# file keeps float input: folding the normalisation only re-rounds conv1 (docs/int8.md measures it)
PIXEL_INPUT_TOLERANCE = 0.01


def pixel_input_if_close(
    model: Any,
    fp32: Any,
    spec: PreprocessSpec,
    calib: CalibrationSet,
    reference: np.ndarray,
    agreement: float,
    result: Dict[str, Any],
) -> Tuple[Any, PreprocessSpec]:
    """The CPU file with uint8 pixel input (:func:`quantize.pixel_input`) and its spec, unless it
    cannot be folded exactly or follows fp32 less closely on the calibration images."""
    pixel_spec = dataclasses.replace(spec, input_format="uint8-nhwc4")
    pixel_model = q.pixel_input(model, fp32, pixel_spec)
    if pixel_model is None:
        result["cpu_file_input"] = {"format": spec.input_format, "why": "first conv cannot fold"}
        return model, spec
    pixels, _ = preprocess_files(calib.paths, pixel_spec, what="calibration image")
    fid = fq.fidelity(reference, fq.logits_of(pixel_model.SerializeToString(), np.stack(pixels), exact=False))
    keep = fid.top1_agreement >= agreement - PIXEL_INPUT_TOLERANCE
    result["cpu_file_input"] = {
        "format": pixel_spec.input_format if keep else spec.input_format,
        "uint8_pixels": fid.to_dict(),
        "float_input_top1_agreement": agreement,
    }
    return (pixel_model, pixel_spec) if keep else (model, spec)
