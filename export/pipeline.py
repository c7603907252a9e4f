"""The export job: weights -> ``model.onnx`` (fp32) -> ``model.int8.onnx`` + ``model.int8.cpu.onnx``.

Everything the job measured goes into ``export-report.json`` beside the models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_squeeze._version import __version__
from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.fileio import sha256_file, write_text_atomic
from edge_squeeze.labels import Labels
from edge_squeeze.metadata import ArtifactMetadata
from edge_squeeze.preprocess import PreprocessSpec, preprocess_files, preprocess_one

from . import quantize as q
from . import ranges as r
from .calibration import CalibrationSet, calibration_cache_key, select_calibration_images
from .onnx_export import DEFAULT_OPSET, export_fp16, export_fp32, load_onnx_model, set_metadata

log = logging.getLogger("edge_squeeze")

FP32_NAME = "model.onnx"
FP16_NAME = "model.fp16.onnx"
INT8_NAME = "model.int8.onnx"
INT8_CPU_NAME = "model.int8.cpu.onnx"
REPORT_NAME = "export-report.json"
TRT_CACHE_NAME = "model.calib.cache"


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
    calib_method: str = "entropy"
    # TensorRT flavour: keep layers in float, most sensitive first, until calibration-set top-1 agreement with fp32
    # reaches this (at most max_float_layers of them)
    target_agreement: float = 0.93
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
    fp32_path = out / FP32_NAME
    parity_batch = _parity_batch(options, bundle.preprocess, calib_paths)
    report["parity"] = export_fp32(
        bundle.model, metadata, fp32_path, parity_batch, options.opset, options.simplify
    )
    report["files"]["fp32"] = {"path": FP32_NAME, "bytes": fp32_path.stat().st_size}
    fp16_parity = export_fp16(fp32_path, metadata, out / FP16_NAME, parity_batch)
    if fp16_parity is not None:
        report["fp16_parity"] = fp16_parity
        report["files"]["fp16"] = {"path": FP16_NAME, "bytes": (out / FP16_NAME).stat().st_size}
    if options.int8:
        report["int8"] = _export_int8(options, metadata, fp32_path, calib_paths)
        for key, name in (("int8", INT8_NAME), ("int8_cpu", INT8_CPU_NAME)):
            report["files"][key] = {"path": name, "bytes": (out / name).stat().st_size}
    if options.eval_data is not None:
        report["eval"] = evaluate_exported(out, options.eval_data, bundle, int8=options.int8)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    write_text_atomic(out / REPORT_NAME, json.dumps(report, indent=2, sort_keys=True))
    return report


def _export_int8(
    options: ExportOptions, metadata: ArtifactMetadata, fp32_path: Path, calib_paths: List[Path]
) -> Dict[str, Any]:
    out = fp32_path.parent
    fp32 = load_onnx_model(fp32_path)
    calib = CalibrationSet(calib_paths, metadata.preprocess, progress=options.progress)
    model_sha = sha256_file(fp32_path)
    key = calibration_cache_key(model_sha, calib.fingerprint(), "stats", bins=r.HIST_BINS)
    cache_path = out / "calibration" / f"stats-{key}.npz"
    stats, reused = r.cached_stats(fp32, calib, cache_path, key, progress=options.progress)
    # every method's ranges, once: entropy's threshold search is the slow part of calibration
    method_ranges = {m: r.fold_relu_ranges(fp32, r.compute_ranges(stats, m)) for m in r.METHODS}
    ranges = method_ranges[options.calib_method]
    reference = q.logits_of(fp32.SerializeToString(), calib.data)
    head = _logits_head_nodes(fp32)
    result: Dict[str, Any] = {
        "calibration": {
            "images": len(calib),
            "skipped": [str(p) for p in calib.skipped],
            "method": options.calib_method,
            "cache": str(cache_path.relative_to(out)),
            "cache_reused": reused,
        },
    }

    def ranking() -> List[str]:
        if "sensitivity" not in result:
            result["sensitivity"] = q.sensitivity(
                fp32, ranges, "s8", options.calib_method, calib.data, reference, progress=options.progress
            )
        return [row["node"] for row in result["sensitivity"]]

    if options.sensitivity_report:
        ranking()
    float_nodes, steps, s8_model = q.choose_float_nodes(
        fp32,
        ranges,
        "s8",
        options.calib_method,
        calib.data,
        reference,
        ranking=ranking,
        target_agreement=options.target_agreement,
        max_float=len(head) + options.max_float_layers,
        always_float=head,
    )
    result["steps"] = steps
    result["float_nodes"] = list(float_nodes)
    trt_cache = r.tensorrt_calibration_cache(ranges)
    write_text_atomic(out / TRT_CACHE_NAME, trt_cache)
    result["tensorrt_calibration_cache"] = TRT_CACHE_NAME
    # The CPU flavour runs on ONNX Runtime's real integer kernels and is there for speed: every Conv
    # stays integer (a float Conv inside ORT's NHWC integer graph costs more than it saves: with conv1
    # in float SqueezeNet 1.1 ran 7.5 ms against 4.5 ms all-integer), and the calibration method is
    # the one whose model agrees best with fp32 under those kernels on the calibration set (uint8 has
    # twice the levels, so it often needs no clipping at all). Each Fire's Concat gets one range for
    # its inputs and output, so ORT copies instead of requantizing (faster, and higher agreement
    # here; for the TensorRT flavour the same change cost 0.2-0.8 points of val top-1, so it is
    # left out there).
    cpu_choice = None
    for method in [options.calib_method] + [m for m in r.METHODS if m != options.calib_method]:
        config = q.QuantConfig("u8", method, tuple(head))
        cpu_ranges = r.unify_concat_ranges(fp32, method_ranges[method])
        model = q.quantize_model(fp32, cpu_ranges, config, calib.data)
        fid = q.fidelity(reference, q.logits_of(model.SerializeToString(), calib.data, exact=False))
        result.setdefault("cpu_flavour_trials", []).append(
            {"method": method, "float_nodes": list(head), **fid.to_dict()}
        )
        trial = (fid.top1_agreement, -fid.logit_mse, config, model)
        if cpu_choice is None or trial[:2] > cpu_choice[:2]:
            cpu_choice = trial
    assert cpu_choice is not None
    if cpu_choice[0] < options.target_agreement:
        log.warning(
            "%s agrees with fp32 on %.1f %% of the calibration images (target %.0f %%); "
            "model.int8.onnx is the accurate INT8 file",
            INT8_CPU_NAME,
            100 * cpu_choice[0],
            100 * options.target_agreement,
        )
    result["cpu_flavour"] = cpu_choice[2].describe()
    cpu_model, cpu_spec = pixel_input_if_close(
        cpu_choice[3], fp32, metadata.preprocess, calib, reference, cpu_choice[0], result
    )
    s8_config = q.QuantConfig("s8", options.calib_method, tuple(float_nodes))
    models = {
        INT8_NAME: (s8_config, s8_model, metadata.preprocess),
        INT8_CPU_NAME: (cpu_choice[2], cpu_model, cpu_spec),
    }
    for name, (config, model, spec) in models.items():
        meta = dataclasses.replace(
            metadata,
            preprocess=spec,
            precision="int8",
            quantization={**config.describe(), "calibration_images": len(calib), "calibration_key": key},
            variants={"cpu": INT8_CPU_NAME} if name == INT8_NAME else {"qdq": INT8_NAME},
        )
        set_metadata(model, meta)
        q.save_quantized(model, out / name)
    return result


# how much calibration-set agreement with fp32 the uint8-pixel input may cost before the CPU
# flavour keeps float input: folding the normalisation only re-rounds conv1 (on SqueezeNet 1.1 it
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
    """The CPU flavour with uint8 pixel input (:func:`quantize.pixel_input`) and its spec, unless it
    cannot be folded exactly or follows fp32 less closely on the calibration images."""
    pixel_spec = dataclasses.replace(spec, input_format="uint8-nhwc4")
    pixel_model = q.pixel_input(model, fp32, pixel_spec)
    if pixel_model is None:
        result["cpu_flavour_input"] = {"format": spec.input_format, "why": "first conv cannot fold"}
        return model, spec
    pixels, _ = preprocess_files(calib.paths, pixel_spec, what="calibration image")
    fid = q.fidelity(reference, q.logits_of(pixel_model.SerializeToString(), np.stack(pixels), exact=False))
    keep = fid.top1_agreement >= agreement - PIXEL_INPUT_TOLERANCE
    result["cpu_flavour_input"] = {
        "format": pixel_spec.input_format if keep else spec.input_format,
        "uint8_pixels": fid.to_dict(),
        "float_input_top1_agreement": agreement,
    }
    return (pixel_model, pixel_spec) if keep else (model, spec)


def evaluate_exported(out: Path, data: Path, bundle: Any, int8: bool) -> Dict[str, Any]:
    """Accuracy of PyTorch, the fp32 ONNX and (with int8) both int8 flavours, and their agreement."""
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
    files = [("onnx_fp32", FP32_NAME, "qdq")]
    if int8:
        files += [("onnx_int8", INT8_NAME, "qdq"), ("onnx_int8_cpu", INT8_CPU_NAME, "cpu")]
    fp32_predictions = None
    for key, name, flavour in files:
        backend = ortb.load(out / name, ortb.OrtOptions(int8_flavour=flavour))
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
