"""fp32 ONNX -> INT8 Q/DQ ONNX, as two files, from cached calibration statistics.

* ``s8`` (``model.int8.onnx``): int8 symmetric activations (zero point 0), per-tensor; int8
  symmetric per-channel weights; biases left in float. This is what TensorRT builds in explicit
  quantization mode (TensorRT 10 recommends it, 11 requires it; its parser rejects int32 bias DQ).
* ``u8`` (``model.int8.cpu.onnx``): uint8 asymmetric activations, int8 per-channel weights, and the
  first Conv's weights at 7 bits: the file ONNX Runtime runs on integer kernels, fast on x86 CPUs
  without VNNI. AVX2's u8 x s8 multiply adds pairs of products into a saturating int16; the first
  Conv's dense, full-range input (the image) overflows those sums often enough with 8-bit weights
  to cost a fifth of the agreement with fp32, so it gets 7 (:func:`first_conv_7bit`; NNCF's default
  overflow fix, ``OverflowFix.FIRST_LAYER``, draws the same line). Deeper Convs overflow rarely and
  slightly; 7 bits there would cost more than it saves. ``docs/int8.md`` has the measurements.

Ranges come from :mod:`.ranges`; ONNX Runtime's ``quantize_static`` places the Q/DQ nodes, with every
activation's range given through ``TensorQuantOverrides`` so its own calibration pass does not decide.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError, require
from edge_squeeze.fileio import atomic_path
from edge_squeeze.preprocess import PreprocessSpec

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
            "weights": "int8 symmetric per-channel" + (", first Conv 7-bit" if self.flavour == "u8" else ""),
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
        # ORT nags about pre-processing through logging.warning(), which first gives an unconfigured
        # root logger a stderr handler (basicConfig); left there, that handler prints every
        # edge_squeeze message a second time. Silence root for the call and put its handlers back.
        root = logging.getLogger()
        was, handlers = root.disabled, list(root.handlers)
        root.disabled = True
        try:
            q.quantize_static(
                src,
                dst,
                _OneBatchReader(input_name, sample),
                quant_format=q.QuantFormat.QDQ,
                per_channel=True,
                reduce_range=False,
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
            root.disabled = was
            root.handlers[:] = handlers
        quantized = onnx.load(dst)
    return quantized if s8 else first_conv_7bit(quantized, fp32_model)


def _first_conv(model: Any) -> Optional[Any]:
    """The Conv fed by the graph input (through its Q/DQ pair in a quantized model)."""
    feeds = {model.graph.input[0].name}
    for node in model.graph.node:
        if any(name in feeds for name in node.input):
            if node.op_type == "Conv":
                return node
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                return None
            feeds.update(node.output)
    return None


def first_conv_7bit(model: Any, fp32_model: Any) -> Any:
    """``model`` (a ``u8`` Q/DQ model of ``fp32_model``) with its first Conv's weights requantized to
    7 bits per channel (|q| <= 63) from the fp32 weights, and its int32 bias to the new scales.

    With 8-bit weights, two products of a full-range image pixel pair (255 x 127 each) overflow the
    int16 that AVX2's ``vpmaddubsw`` sums them into; deeper layers' sparse ReLU outputs reach that
    rarely (a few photos' logits move slightly: docs/int8.md, section 6).
    Returns ``model`` unchanged when its first Conv is float or not in the expected Q/DQ form.
    """
    from onnx import numpy_helper

    conv = _first_conv(model)
    float_conv = _first_conv(fp32_model)
    if conv is None or float_conv is None or len(conv.input) < 3 or len(float_conv.input) < 3:
        return model
    inits = {init.name: init for init in model.graph.initializer}
    float_inits = {init.name: init for init in fp32_model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    x_dq, w_dq, b_dq = (producer.get(name) for name in conv.input[:3])
    if any(node is None or node.op_type != "DequantizeLinear" for node in (x_dq, w_dq, b_dq)):
        return model
    assert x_dq is not None and w_dq is not None and b_dq is not None
    if not {w_dq.input[0], w_dq.input[1], b_dq.input[0], b_dq.input[1], x_dq.input[1]} <= set(inits):
        return model
    if not set(float_conv.input[1:3]) <= set(float_inits):
        return model
    weight = numpy_helper.to_array(float_inits[float_conv.input[1]]).astype(np.float64)
    bias = numpy_helper.to_array(float_inits[float_conv.input[2]]).astype(np.float64)
    input_scale = float(numpy_helper.to_array(inits[x_dq.input[1]]))
    _set_conv_weights(inits, w_dq, b_dq, weight, bias, input_scale, qmax=63)
    return model


def _set_conv_weights(
    inits: Dict[str, Any],
    w_dq: Any,
    b_dq: Any,
    weight: np.ndarray,
    bias: np.ndarray,
    input_scale: float,
    qmax: float,
) -> None:
    """Overwrite a quantized Conv's weight and bias initializers (those its two DequantizeLinear
    nodes ``w_dq``, ``b_dq`` read) with the float ``weight`` (OIHW) quantized symmetrically per
    output channel to ``|q| <= qmax`` and ``bias`` to int32 at ``input_scale * scale``: each rounded
    once, from float. All-zero channels get scale 1."""
    from onnx import numpy_helper

    scale = np.abs(weight).reshape(len(weight), -1).max(axis=1) / qmax
    scale = np.where(scale > 0, scale, 1.0)
    w_q = np.clip(np.round(weight / scale.reshape(-1, 1, 1, 1)), -qmax, qmax).astype(np.int8)
    b_q = np.round(bias / (input_scale * scale)).astype(np.int32)
    for name, value in (
        (w_dq.input[0], w_q),
        (w_dq.input[1], scale.astype(np.float32)),
        (b_dq.input[0], b_q),
        (b_dq.input[1], (input_scale * scale).astype(np.float32)),
    ):
        inits[name].CopyFrom(numpy_helper.from_array(value, name))


def u8_weight_twin(model: Any, convs: Optional[Iterable[str]] = None) -> Any:
    """A copy of the Q/DQ ``model`` whose Convs (all, or those named in ``convs``) keep their int8
    weights as uint8 ``q + 128`` with zero point 128: the same numbers, so the same arithmetic, but
    ONNX Runtime then runs those Convs on its u8 x u8 kernels, which on x86 widen both operands to
    16 bits and never saturate. Run with fused kernels, the twin of the CPU file is that file's exact
    integer arithmetic (a reference, slower than the file on AVX2: docs/int8.md, section 6)."""
    from onnx import ModelProto, numpy_helper

    twin = ModelProto()
    twin.CopyFrom(model)
    wanted = None if convs is None else set(convs)
    inits = {init.name: init for init in twin.graph.initializer}
    weights = {
        n.input[1] for n in twin.graph.node if n.op_type == "Conv" and (wanted is None or n.name in wanted)
    }
    for node in twin.graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in weights or len(node.input) < 3:
            continue
        if node.input[0] not in inits or node.input[2] not in inits:
            continue
        q, zero = (numpy_helper.to_array(inits[name]) for name in (node.input[0], node.input[2]))
        if q.dtype != np.int8 or np.any(zero != 0):
            continue
        for i, value in (
            (0, (q.astype(np.int16) + 128).astype(np.uint8)),
            (2, np.full(zero.shape, 128, np.uint8)),
        ):
            node.input[i] = f"{node.input[i]}_u8"  # new initializers: the old ones may be shared
            twin.graph.initializer.append(numpy_helper.from_array(value, node.input[i]))
    used = {name for node in twin.graph.node for name in node.input}
    kept = [init for init in twin.graph.initializer if init.name in used]
    del twin.graph.initializer[:]
    twin.graph.initializer.extend(kept)
    return twin


def conv_nodes(model: Any) -> List[str]:
    return [node.name for node in model.graph.node if node.op_type == "Conv"]


def pixel_input(model: Any, fp32_model: Any, spec: PreprocessSpec) -> Optional[Any]:
    """The ``u8`` Q/DQ ``model`` (quantized from ``fp32_model``) taking the crop's raw uint8 NHWC
    pixels as the pixel-input ``spec`` describes them (``uint8-nhwc`` or ``uint8-nhwc4``), with its
    scale, mean and std folded into the first convolution; None where that
    is not exact (a padded first convolution, or an input that does not feed exactly one Conv
    through its Q/DQ pair).

    The normalised input is ``x_c = a_c p_c - b_c`` (``a = scale / std``, ``b = mean / std``), so the
    first Conv computes ``sum W (a p - b) + bias = sum (W a) p + (bias - sum W b)``: weights scaled
    per input channel and quantized per output channel to the same integer range (from the fp32
    weights: rounding once), the bias shifted. Pixels are integers, so the input's quantization (scale 1, zero point 0) is exact. ONNX
    Runtime then drops the input's QuantizeLinear and its NCHW->NHWC transpose (about 4 % of the
    INT8 model's time at batch 1 here) and the preprocessing its normalisation.

    With ``uint8-nhwc4`` the model takes a fourth input channel (the preprocessing's alpha) that
    zero weights ignore: the outputs are identical, and ONNX Runtime's x86 integer convolution
    (MLAS's symmetric kernels, which need input channels in multiples of 4) then runs conv1
    without im2col: the whole model ~5 % faster at batch 1 on this project's AVX2 VM.
    """
    if not spec.pixel_input:
        raise ValueError(f"pixel_input needs a uint8 pixel spec, got input_format {spec.input_format!r}")
    onnx = require("onnx", "INT8 quantization")
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {init.name: init for init in graph.initializer}
    consumers: Dict[str, List[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(name: str, op_type: str) -> Optional[Any]:
        nodes = consumers.get(name, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op_type else None

    graph_input = graph.input[0]
    quant = only_consumer(graph_input.name, "QuantizeLinear")
    dequant = quant and only_consumer(quant.output[0], "DequantizeLinear")
    conv = dequant and only_consumer(dequant.output[0], "Conv")
    if conv is None or len(conv.input) < 3:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    if any(attrs.get("pads", [])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        return None  # a zero-padded border would see -mean/std in float but 0 after folding
    producer = {out_name: node for node in graph.node for out_name in node.output}
    w_dq, b_dq = producer.get(conv.input[1]), producer.get(conv.input[2])
    if w_dq is None or b_dq is None or {w_dq.op_type, b_dq.op_type} != {"DequantizeLinear"}:
        return None

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    float_conv = [n for n in fp32_model.graph.node if n.name == conv.name and n.op_type == "Conv"]
    float_inits = {init.name: init for init in fp32_model.graph.initializer}
    if len(float_conv) != 1 or not set(float_conv[0].input[1:3]) <= set(float_inits):
        return None
    w_q = array(w_dq.input[0])
    if w_q.dtype != np.int8 or (len(w_dq.input) > 2 and array(w_dq.input[2]).any()):
        return None  # weights are symmetric int8 in both files; anything else is not ours
    weight = numpy_helper.to_array(float_inits[float_conv[0].input[1]]).astype(np.float64)
    bias = numpy_helper.to_array(float_inits[float_conv[0].input[2]]).astype(np.float64)
    std = np.asarray(spec.std, np.float64)
    a, b = spec.scale / std, np.asarray(spec.mean, np.float64) / std
    folded = weight * a.reshape(1, -1, 1, 1)
    new_bias = bias - (weight * b.reshape(1, -1, 1, 1)).sum(axis=(1, 2, 3))
    extra = spec.input_channels - folded.shape[1]
    if extra < 0:
        return None
    # zero weights for the extra (alpha) channels change no scale; pixels are integers: input scale 1
    folded = np.pad(folded, ((0, 0), (0, extra), (0, 0), (0, 0)))
    qmax = float(np.abs(w_q).max())  # the file's integer range for this Conv (63: 7 bits)
    _set_conv_weights(inits, w_dq, b_dq, folded, new_bias, 1.0, qmax)

    nchw = f"{graph_input.name}_nchw"
    graph.node.remove(quant)
    graph.node.insert(
        0, helper.make_node("Transpose", [graph_input.name], [nchw], perm=[0, 3, 1, 2], name="pixels_to_nchw")
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "pixel_scale"),
            numpy_helper.from_array(np.array(0, np.uint8), "pixel_zero_point"),
        ]
    )
    dequant.input[:] = [nchw, "pixel_scale", "pixel_zero_point"]
    used = {name for node in graph.node for name in node.input}
    for name in quant.input[1:]:
        if name not in used and name in inits:
            graph.initializer.remove(inits[name])
    dims = graph_input.type.tensor_type.shape.dim
    batch = dims[0].dim_param or dims[0].dim_value
    graph.input.remove(graph_input)
    graph.input.insert(
        0,
        helper.make_tensor_value_info(
            graph_input.name, onnx.TensorProto.UINT8, [batch, spec.crop, spec.crop, spec.input_channels]
        ),
    )
    onnx.checker.check_model(out)
    return out


def save_quantized(model: Any, path: Union[str, os.PathLike[str]]) -> None:
    onnx = require("onnx", "INT8 quantization")
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    log.info("wrote %s (%.2f MB)", path, Path(path).stat().st_size / 1e6)
