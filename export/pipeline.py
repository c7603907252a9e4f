"""The export job: weights -> ``model.onnx`` (fp32) -> ``model.int8.onnx`` + ``model.int8.cpu.onnx``.

Everything the job measured goes into ``export-report.json`` beside the models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from edge_squeeze._version import __version__
from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.fileio import cannot_write, sha256_file, write_text_atomic
from edge_squeeze.labels import Labels
from edge_squeeze.metadata import ArtifactMetadata, load_onnx_model, set_metadata
from edge_squeeze.preprocess import PreprocessSpec, preprocess_files, preprocess_one

from . import quantize as q
from . import ranges as r
from .calibration import CalibrationSet, calibration_cache_key, select_calibration_images
from .onnx_export import DEFAULT_OPSET, export_fp16, export_fp32

log = logging.getLogger("edge_squeeze")

FP32_NAME = "model.onnx"
FP16_NAME = "model.fp16.onnx"
INT8_NAME = "model.int8.onnx"
INT8_CPU_NAME = "model.int8.cpu.onnx"
REPORT_NAME = "export-report.json"
TRT_CACHE_NAME = "model.calib.cache"

# below this calibration-set agreement with fp32 the CPU file is written with a warning
CPU_FILE_WARNING_AGREEMENT = 0.93

# which engine each INT8 file is for, in the file itself (Netron and onnx.load show it): docs/int8.md
ENGINE_NOTES = {
    INT8_NAME: (
        "edge-squeeze INT8 Q/DQ file for TensorRT: int8 symmetric activations, full-range int8 "
        "per-channel weights. Engines that run it with fused u8 x s8 kernels on x86 CPUs without VNNI "
        "(ONNX Runtime's default session, OpenVINO) saturate and lose accuracy: on those use "
        "model.int8.cpu.onnx, or compute this file's Q/DQ exactly (edge-squeeze does)."
    ),
    INT8_CPU_NAME: (
        "edge-squeeze INT8 file for CPU engines (ONNX Runtime): uint8 activations, int8 weights with "
        "the first Conv's at 7 bits. Not for TensorRT: build engines from model.int8.onnx."
    ),
}


@dataclasses.dataclass
class ExportOptions:
    weights: str
    out: Path
    arch: Optional[str] = None
    labels: Optional[Labels] = None
    num_classes: Optional[int] = None
    image_size: Optional[int] = None
    opset: int = DEFAULT_OPSET
    simplify: bool = False
    int8: bool = False
    calib: Optional[Path] = None
    calib_count: Optional[int] = None
    # None: each INT8 file takes the method whose model follows fp32 most closely (least logit MSE) on
    # the calibration images
    calib_method: Optional[str] = None
    # Q/DQ file: keep layers in float, most sensitive first, until calibration-set top-1 agreement with fp32
    # reaches this (at most max_float_layers of them)
    target_agreement: float = 0.95
    max_float_layers: int = 2
    sensitivity_report: bool = False
    eval_data: Optional[Path] = None
    progress: bool = True


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


def run_export(options: ExportOptions) -> Dict[str, Any]:
    """The export job. Every input is checked before anything is written; the files are made in a
    staging folder inside ``options.out`` and moved in together at the end, where members of an
    earlier export this run does not make (an fp32-only run over an INT8 export) are removed: a
    failed, interrupted or concurrent export never leaves a mixed set."""
    from edge_squeeze.evaluate import ground_truth
    from edge_squeeze.weights import load_model

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
        fp32_path = stage / FP32_NAME
        parity_batch = _parity_batch(options, bundle.preprocess, calib_paths)
        report["parity"] = export_fp32(
            bundle.model, metadata, fp32_path, parity_batch, options.opset, options.simplify
        )
        report["files"]["fp32"] = {"path": FP32_NAME, "bytes": fp32_path.stat().st_size}
        fp16_parity = export_fp16(fp32_path, metadata, stage / FP16_NAME, parity_batch)
        if fp16_parity is not None:
            report["fp16_parity"] = fp16_parity
            report["files"]["fp16"] = {"path": FP16_NAME, "bytes": (stage / FP16_NAME).stat().st_size}
        if options.int8:
            report["int8"] = _export_int8(options, metadata, fp32_path, calib_paths, out / "calibration")
            for key, name in (("int8", INT8_NAME), ("int8_cpu", INT8_CPU_NAME)):
                report["files"][key] = {"path": name, "bytes": (stage / name).stat().st_size}
        if options.eval_data is not None:
            report["eval"] = evaluate_exported(stage, options.eval_data, bundle, int8=options.int8)
        report["seconds"] = round(time.perf_counter() - t_start, 1)
        write_text_atomic(stage / REPORT_NAME, json.dumps(report, indent=2, sort_keys=True))
    return report


# every file an export writes into its folder (the calibration statistics under calibration/ are a
# cache shared by runs and stay)
EXPORT_MEMBERS = (FP32_NAME, FP16_NAME, INT8_NAME, INT8_CPU_NAME, TRT_CACHE_NAME, REPORT_NAME)


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A fresh folder inside ``out`` to write an export into; on success its files replace the export
    in ``out`` as one set (earlier members not made this time are removed), under a lock so that
    two exports into one folder do not interleave; on failure it is removed and ``out`` is untouched."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".export-", dir=str(out)))
    except OSError as exc:
        raise cannot_write(out, exc) from exc
    try:
        yield stage
        with _folder_lock(out):
            made = {p.name for p in stage.iterdir()}
            for name in EXPORT_MEMBERS:
                if name not in made and (out / name).is_file():
                    (out / name).unlink()
            for name in sorted(made, key=lambda n: n == REPORT_NAME):  # the report last
                os.replace(str(stage / name), str(out / name))
    except OSError as exc:
        raise cannot_write(out, exc) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (POSIX ``flock``; none where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / ".export.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
        out / TRT_CACHE_NAME, r.tensorrt_calibration_cache(cal.method_ranges[qdq.config.method])
    )
    cpu = _cpu_file(options, metadata, cal)
    for name, file, variants in (
        (INT8_NAME, qdq, {"cpu": INT8_CPU_NAME}),
        (INT8_CPU_NAME, cpu, {"qdq": INT8_NAME}),
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
        file.model.doc_string = ENGINE_NOTES[name]
        q.save_quantized(file.model, out / name)
    return {**cal.report, **qdq.report, **cpu.report, "tensorrt_calibration_cache": TRT_CACHE_NAME}


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
    reference = q.logits_of(fp32.SerializeToString(), calib.data)
    return Int8Calibration(fp32, calib, key, method_ranges, reference, _logits_head_nodes(fp32), report)


T = TypeVar("T")


def _closest_method(
    options: ExportOptions, cal: Int8Calibration, trial: Callable[[str], Tuple[Any, q.Fidelity, T]]
) -> Tuple[List[Dict[str, Any]], Tuple[Any, q.Fidelity, T]]:
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

    def head_trial(method: str) -> Tuple[Any, q.Fidelity, q.QuantProblem]:
        problem = q.QuantProblem(
            cal.fp32, cal.method_ranges[method], "s8", method, cal.calib.data, cal.reference
        )
        return (*problem.trial(cal.head), problem)

    trials, (head_model, head_fid, problem) = _closest_method(options, cal, head_trial)
    report: Dict[str, Any] = {"qdq_file_trials": trials}

    def ranking() -> List[str]:
        if "sensitivity" not in report:
            report["sensitivity"] = q.sensitivity(problem, keep_float=cal.head, progress=options.progress)
        return [row["node"] for row in report["sensitivity"]]

    if options.sensitivity_report:
        ranking()
    float_nodes, steps, model = q.choose_float_nodes(
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

    def fused_trial(method: str) -> Tuple[Any, q.Fidelity, q.QuantConfig]:
        config = q.QuantConfig("u8", method, tuple(cal.head))
        ranges = r.unify_concat_ranges(cal.fp32, cal.method_ranges[method])
        model = q.quantize_model(cal.fp32, ranges, config, cal.calib.data)
        fid = q.fidelity(cal.reference, q.logits_of(model.SerializeToString(), cal.calib.data, exact=False))
        return model, fid, config

    trials, (model, fid, config) = _closest_method(options, cal, fused_trial)
    agreement = fid.top1_agreement
    if agreement < CPU_FILE_WARNING_AGREEMENT:
        log.warning(
            "%s agrees with fp32 on %.1f %% of the calibration images (target %.0f %%); "
            "model.int8.onnx is the accurate INT8 file",
            INT8_CPU_NAME,
            100 * agreement,
            100 * CPU_FILE_WARNING_AGREEMENT,
        )
    report: Dict[str, Any] = {"cpu_file_trials": trials, "cpu_file": config.describe()}
    model, spec = pixel_input_if_close(
        model, cal.fp32, metadata.preprocess, cal.calib, cal.reference, agreement, report
    )
    return Int8File(model, config, spec, report)


# how much calibration-set agreement with fp32 the uint8-pixel input may cost before the CPU
# file keeps float input: folding the normalisation only re-rounds conv1 (on SqueezeNet 1.1 it
# left calibration-set agreement at 94.0 % and moved agreement on 200 val photos by up to a point,
# either way)
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
    fid = q.fidelity(reference, q.logits_of(pixel_model.SerializeToString(), np.stack(pixels), exact=False))
    keep = fid.top1_agreement >= agreement - PIXEL_INPUT_TOLERANCE
    result["cpu_file_input"] = {
        "format": pixel_spec.input_format if keep else spec.input_format,
        "uint8_pixels": fid.to_dict(),
        "float_input_top1_agreement": agreement,
    }
    return (pixel_model, pixel_spec) if keep else (model, spec)


def evaluate_exported(out: Path, data: Path, bundle: Any, int8: bool) -> Dict[str, Any]:
    """Accuracy of PyTorch, the fp32 ONNX and (with int8) both INT8 files, and their agreement."""
    import torch

    from edge_squeeze.evaluate import accuracy_from_logits, ground_truth, infer_batched, load_eval_set
    from edge_squeeze.runtimes import onnxruntime_backend as ortb

    paths, all_truth = ground_truth(data, bundle.labels)
    eval_sets: Dict[PreprocessSpec, Any] = {}
    results: Dict[str, Any] = {"data": str(data)}

    def run(infer: Any, spec: PreprocessSpec) -> Any:
        if spec not in eval_sets:  # the CPU int8 model may take uint8 pixels
            eval_sets[spec] = load_eval_set(paths, all_truth, spec)
        inputs, truth = eval_sets[spec]
        return accuracy_from_logits(infer_batched(infer, inputs, 50), truth)

    with torch.no_grad():
        acc = run(lambda x: bundle.model(torch.from_numpy(x)).numpy(), bundle.preprocess)
    results["pytorch"] = acc.to_dict()
    reference = acc.predictions
    files = [("onnx_fp32", FP32_NAME)]
    if int8:
        files += [("onnx_int8", INT8_NAME), ("onnx_int8_cpu", INT8_CPU_NAME)]
    fp32_predictions = None
    for key, name in files:
        backend = ortb.load(out / name, ortb.OrtOptions())  # exactly this file
        acc = run(backend.infer, backend.metadata.preprocess)
        row = acc.to_dict()
        row["agreement_with_pytorch"] = float(np.mean(acc.predictions == reference))
        if key == "onnx_fp32":
            fp32_predictions = acc.predictions
        else:
            row["agreement_with_fp32"] = float(np.mean(acc.predictions == fp32_predictions))
        results[key] = row
        log.info(
            "%s on %s: top-1 %.1f%%, top-5 %.1f%% (%d images)",
            name,
            data,
            100 * acc.top1,
            100 * acc.top5,
            acc.n,
        )
    return results
