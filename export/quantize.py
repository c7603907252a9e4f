"""fp32 ONNX -> INT8 Q/DQ ONNX, in two flavours, from cached calibration statistics.

* ``s8`` (``model.int8.onnx``): int8 symmetric activations (zero point 0), per-tensor; int8
  symmetric per-channel weights; biases left in float. This is what TensorRT builds in explicit
  quantization mode (TensorRT 10 recommends it, 11 requires it; its parser rejects int32 bias DQ).
* ``u8`` (``model.int8.cpu.onnx``): uint8 asymmetric activations and 7-bit (``reduce_range``) weights:
  the flavour ONNX Runtime runs fast on x86 CPUs without VNNI, where AVX2's saturating int8
  multiply would otherwise cost accuracy.

Ranges come from :mod:`.ranges`; ONNX Runtime's ``quantize_static`` places the Q/DQ nodes, with every
activation's range given through ``TensorQuantOverrides`` so its own calibration pass does not decide.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError, require
from edge_squeeze.evaluate import infer_batched
from edge_squeeze.fileio import atomic_path

log = logging.getLogger("edge_squeeze")

FLAVOURS = ("s8", "u8")


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    flavour: str = "s8"
    method: str = "entropy"
    exclude_nodes: Tuple[str, ...] = ()

    def describe(self) -> Dict[str, Any]:
        return {
            "flavour": self.flavour,
            "format": "QDQ",
            "activations": "int8 symmetric per-tensor"
            if self.flavour == "s8"
            else "uint8 asymmetric per-tensor",
            "weights": "int8 symmetric per-channel" + (" (reduce_range)" if self.flavour == "u8" else ""),
            "calibration_method": self.method,
            "float_nodes": list(self.exclude_nodes),
        }


class _OneBatchReader:
    """quantize_static insists on a data reader; every range is overridden, so one image suffices."""

    def __init__(self, input_name: str, batch: np.ndarray) -> None:
        self._items = [{input_name: batch[:1]}]

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return self._items.pop() if self._items else None

    def __len__(self) -> int:
        return 1


def unshare_conv_biases(model: Any) -> Any:
    """A copy of ``model`` in which every Conv owns its bias initializer.

    The TorchScript exporter merges identical initializers (all-zero biases of an untrained or
    freshly initialised layer), and ONNX Runtime then quantizes a shared bias as a weight: an int8
    DequantizeLinear feeding the bias, which TensorRT cannot parse and which costs accuracy.
    """
    onnx = require("onnx", "INT8 quantization")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inits = {init.name: init for init in copy.graph.initializer}
    seen: Dict[str, int] = {}
    for node in copy.graph.node:
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        name = node.input[2]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            clone = copy.graph.initializer.add()
            clone.CopyFrom(inits[name])
            clone.name = f"{name}__{node.name or seen[name]}"
            node.input[2] = clone.name
    return copy


def quantize_model(
    fp32_model: Any,
    ranges: Dict[str, Tuple[float, float]],
    config: QuantConfig,
    sample: np.ndarray,
) -> Any:
    """A Q/DQ ``onnx.ModelProto`` of ``fp32_model`` with the given activation ranges."""
    onnx = require("onnx", "INT8 quantization")
    q = require("onnxruntime.quantization", "INT8 quantization")
    if config.flavour not in FLAVOURS:
        raise EdgeSqueezeError(f"quantization flavour must be one of {FLAVOURS}, not {config.flavour!r}")
    s8 = config.flavour == "s8"
    overrides = {
        name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for name, (lo, hi) in ranges.items()
    }
    input_name = fp32_model.graph.input[0].name
    fp32_model = unshare_conv_biases(fp32_model)
    with tempfile.TemporaryDirectory(prefix="edge-squeeze-q.") as tmp:
        src = os.path.join(tmp, "fp32.onnx")
        dst = os.path.join(tmp, "int8.onnx")
        onnx.save_model(fp32_model, src)
        logging.getLogger().disabled, was = True, logging.getLogger().disabled  # ORT's pre-processing nag
        try:
            q.quantize_static(
                src,
                dst,
                _OneBatchReader(input_name, sample),
                quant_format=q.QuantFormat.QDQ,
                per_channel=True,
                reduce_range=not s8,
                activation_type=q.QuantType.QInt8 if s8 else q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=list(config.exclude_nodes),
                calibrate_method=q.CalibrationMethod.MinMax,
                extra_options={
                    "ActivationSymmetric": s8,
                    "WeightSymmetric": True,
                    # TensorRT's parser cannot take int32 bias through DequantizeLinear
                    "QuantizeBias": not s8,
                    "TensorQuantOverrides": overrides,
                },
            )
        finally:
            logging.getLogger().disabled = was
        return onnx.load(dst)


def conv_nodes(model: Any) -> List[str]:
    return [node.name for node in model.graph.node if node.op_type == "Conv"]


def logits_of(model_bytes: bytes, batch: np.ndarray, exact: bool = True, threads: int = 0) -> np.ndarray:
    """Logits of a model on ``batch``. ``exact`` computes Q/DQ as written (what TensorRT computes),
    not through ONNX Runtime's fused integer kernels, which saturate for full-range int8 weights on
    x86 CPUs without VNNI and would blame the wrong layers."""
    ort = require("onnxruntime", "INT8 quantization")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if exact:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    if threads:
        so.intra_op_num_threads = threads
    session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return infer_batched(lambda x: session.run(None, {name: x})[0], batch, 32)


@dataclasses.dataclass
class Fidelity:
    """How closely a quantized model follows the fp32 one on the same images."""

    top1_agreement: float
    top5_overlap: float
    logit_mse: float

    def to_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)


def fidelity(reference: np.ndarray, logits: np.ndarray) -> Fidelity:
    ref5 = np.argsort(-reference, axis=1)[:, :5]
    got5 = np.argsort(-logits, axis=1)[:, :5]
    overlap = float(np.mean([len(set(a) & set(b)) / 5.0 for a, b in zip(ref5, got5)]))
    return Fidelity(
        top1_agreement=float(np.mean(reference.argmax(1) == logits.argmax(1))),
        top5_overlap=overlap,
        logit_mse=float(np.mean((reference - logits) ** 2)),
    )


def sensitivity(
    fp32_model: Any,
    ranges: Dict[str, Tuple[float, float]],
    flavour: str,
    method: str,
    batch: np.ndarray,
    reference: np.ndarray,
    nodes: Optional[Sequence[str]] = None,
    progress: bool = False,
) -> List[Dict[str, Any]]:
    """Per-layer sensitivity: quantize one Conv at a time (all others float) and measure the damage.

    Sorted most sensitive first (largest logit MSE against fp32 on ``batch``).
    """
    all_convs = conv_nodes(fp32_model)
    targets: Iterable[str] = nodes if nodes is not None else all_convs
    if progress:
        from edge_squeeze.progress import progress_bar

        targets = progress_bar(list(targets), desc="per-layer sensitivity", unit="layer")
    rows = []
    for node in targets:
        others = tuple(n for n in all_convs if n != node)
        model = quantize_model(fp32_model, ranges, QuantConfig(flavour, method, others), batch)
        fid = fidelity(reference, logits_of(model.SerializeToString(), batch))
        rows.append({"node": node, **fid.to_dict()})
    rows.sort(key=lambda r: -r["logit_mse"])
    return rows


def choose_float_nodes(
    fp32_model: Any,
    ranges: Dict[str, Tuple[float, float]],
    flavour: str,
    method: str,
    batch: np.ndarray,
    reference: np.ndarray,
    ranking: Callable[[], Sequence[str]],
    target_agreement: float,
    max_float: int,
    always_float: Sequence[str] = (),
) -> Tuple[Tuple[str, ...], List[Dict[str, Any]], Any]:
    """Keep the most sensitive layers in float, one at a time, until agreement reaches the target.

    ``ranking`` (most sensitive first) is only called once a layer must be added: the sensitivity
    analysis costs a quantization per layer. Returns the chosen float nodes, one row per step (what
    each step bought), and the last step's quantized model.
    """
    chosen: List[str] = list(always_float)
    steps = []
    candidates: Optional[List[str]] = None
    while True:
        model = quantize_model(fp32_model, ranges, QuantConfig(flavour, method, tuple(chosen)), batch)
        fid = fidelity(reference, logits_of(model.SerializeToString(), batch))
        steps.append({"float_nodes": list(chosen), **fid.to_dict(), "bytes": model.ByteSize()})
        if fid.top1_agreement >= target_agreement or len(chosen) >= max_float:
            break
        if candidates is None:
            candidates = [n for n in ranking() if n not in chosen]
        if not candidates:
            break
        chosen.append(candidates.pop(0))
    return tuple(chosen), steps, model


def save_quantized(model: Any, path: Union[str, os.PathLike[str]]) -> None:
    onnx = require("onnx", "INT8 quantization")
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    log.info("wrote %s (%.2f MB)", path, Path(path).stat().st_size / 1e6)
