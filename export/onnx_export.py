"""PyTorch -> ONNX (fp32), with the artifact metadata inside and a parity check against ONNX Runtime."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError, require
from edge_squeeze.fileio import atomic_path
from edge_squeeze.metadata import ArtifactMetadata, load_onnx_model, set_metadata

log = logging.getLogger("edge_squeeze")

DEFAULT_OPSET = 17  # TensorRT 8.5 (JetPack 5) parses up to opset 17; Q/DQ per-channel needs >= 13
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# Parity between PyTorch and ONNX Runtime on the same inputs; fp32 kernels differ only by rounding.
PARITY_MAX_ABS = 1e-3
PARITY_MIN_AGREEMENT = 0.999


def save_onnx(model: Any, path: Union[str, os.PathLike[str]]) -> None:
    """Check and write an ONNX model atomically, as one file (no external data)."""
    onnx = require("onnx", "writing ONNX models")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise EdgeSqueezeError(
            f"the exported ONNX model fails onnx.checker: {str(exc).splitlines()[0]}"
        ) from exc
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))


def torch_to_onnx(model: Any, image_size: int, opset: int = DEFAULT_OPSET) -> Any:
    """Trace ``model`` to an in-memory ``onnx.ModelProto`` with a dynamic batch axis."""
    torch = require("torch", "exporting to ONNX")
    onnx = require("onnx", "exporting to ONNX")
    model = model.eval()
    dummy = torch.zeros(1, 3, image_size, image_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            **torchscript_exporter_kwargs(torch.onnx.export),
        )
    return inline_identity_initializers(onnx.load_from_string(buffer.getvalue()))


def torchscript_exporter_kwargs(export: Any) -> Dict[str, Any]:
    """The keyword that selects the TorchScript exporter, where ``torch.onnx.export`` has a choice.

    On purpose: torch 2.13's default dynamo exporter silently raises the opset to 18 and writes
    external data, which TensorRT 8.5 on JetPack 5 cannot parse; the TorchScript path gives one
    self-contained file at the opset asked for. torch < 2.5 has no ``dynamo`` keyword (and only
    that exporter), so it is passed only where it exists.
    """
    return {"dynamo": False} if "dynamo" in inspect.signature(export).parameters else {}


def inline_identity_initializers(model: Any) -> Any:
    """Replace ``Identity(initializer)`` nodes by initializers of their own.

    The TorchScript exporter merges identical parameters (all-zero biases of an untrained layer) into
    one initializer plus Identity copies; TensorRT and the quantizer both want each Conv's bias to be
    a plain initializer.
    """
    inits = {init.name: init for init in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            clone = model.graph.initializer.add()
            clone.CopyFrom(inits[node.input[0]])
            clone.name = node.output[0]
        else:
            keep.append(node)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return model


def simplify(model: Any) -> Any:
    onnxsim = require("onnxsim", "--simplify")
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise EdgeSqueezeError("onnxsim could not validate the simplified model; export without --simplify")
    return simplified


def parity_report(
    torch_model: Any, onnx_path: Union[str, os.PathLike[str]], batch: np.ndarray
) -> Dict[str, Any]:
    """Max |logit difference| and top-1 agreement between PyTorch and ONNX Runtime on ``batch``."""
    torch = require("torch", "checking export parity")
    from edge_squeeze.evaluate import infer_batched
    from edge_squeeze.runtimes.onnxruntime_backend import OrtOptions, load

    with torch.no_grad():
        expected = torch_model.eval()(torch.from_numpy(batch)).numpy()
    backend = load(onnx_path, OrtOptions())
    got = infer_batched(backend.infer, batch, 16)
    max_abs = float(np.max(np.abs(expected - got)))
    agreement = float(np.mean(expected.argmax(1) == got.argmax(1)))
    return {
        "images": len(batch),
        "max_abs_logit_diff": max_abs,
        "top1_agreement": agreement,
        "ok": bool(
            max_abs <= PARITY_MAX_ABS * max(1.0, float(np.abs(expected).max()))
            and agreement >= PARITY_MIN_AGREEMENT
        ),
    }


def export_fp32(
    model: Any,
    metadata: ArtifactMetadata,
    out_path: Union[str, os.PathLike[str]],
    parity_batch: np.ndarray,
    opset: int = DEFAULT_OPSET,
    do_simplify: bool = False,
) -> Dict[str, Any]:
    """Write ``out_path`` (fp32 ONNX with metadata); fail loudly, leaving nothing, when parity is off."""
    out_path = Path(out_path)
    proto = torch_to_onnx(model, metadata.preprocess.crop, opset)
    if do_simplify:
        proto = simplify(proto)
    set_metadata(proto, metadata)
    with atomic_path(out_path) as tmp:
        save_onnx(proto, tmp)
        report = parity_report(model, tmp, parity_batch)
        if not report["ok"]:
            raise EdgeSqueezeError(
                f"PyTorch and ONNX Runtime disagree on the exported model (max |logit diff| "
                f"{report['max_abs_logit_diff']:.3g}, top-1 agreement {report['top1_agreement']:.1%}); "
                f"{out_path} was not written: try another --opset"
            )
    log.info(
        "wrote %s (parity on %d images: max |diff| %.2e, top-1 agreement %.1f%%)",
        out_path,
        report["images"],
        report["max_abs_logit_diff"],
        100 * report["top1_agreement"],
    )
    return report


FP16_MIN_AGREEMENT = 0.99


def export_fp16(
    fp32_path: Union[str, os.PathLike[str]],
    metadata: ArtifactMetadata,
    out_path: Union[str, os.PathLike[str]],
    parity_batch: np.ndarray,
) -> Optional[Dict[str, Any]]:
    """Write the fp16 twin of an fp32 export (float32 input and output, fp16 inside), checked against
    the fp32 file with ONNX Runtime. It is what TensorRT 10.12+ and 11 build fp16 engines from, since
    strongly typed networks take their precision from the model. Returns the parity report, or None
    (with one warning) when onnxconverter-common is not installed."""
    try:
        float16 = importlib.import_module("onnxconverter_common.float16")
    except ImportError:
        log.warning(
            "%s not written: pip install onnxconverter-common (TensorRT 11 builds fp16 engines from it)",
            Path(out_path).name,
        )
        return None
    from edge_squeeze.evaluate import infer_batched
    from edge_squeeze.runtimes.onnxruntime_backend import OrtOptions, load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per weight below fp16's range, rounded as it says
        proto = float16.convert_float_to_float16(load_onnx_model(fp32_path), keep_io_types=True)
    set_metadata(
        proto, dataclasses.replace(metadata, precision="fp16", variants={"fp32": Path(fp32_path).name})
    )
    reference = infer_batched(load(fp32_path, OrtOptions()).infer, parity_batch, 16)
    with atomic_path(out_path) as tmp:
        save_onnx(proto, tmp)
        got = infer_batched(load(tmp, OrtOptions()).infer, parity_batch, 16)
        agreement = float(np.mean(reference.argmax(1) == got.argmax(1)))
        if agreement < FP16_MIN_AGREEMENT:
            raise EdgeSqueezeError(
                f"the fp16 model agrees with fp32 on only {agreement:.1%} of {len(parity_batch)} images; "
                f"{out_path} was not written"
            )
    report = {
        "images": len(parity_batch),
        "max_abs_logit_diff": float(np.max(np.abs(reference - got))),
        "top1_agreement": agreement,
    }
    log.info(
        "wrote %s (fp16 inside, float32 I/O; top-1 agreement with fp32 %.1f%%)", out_path, 100 * agreement
    )
    return report
