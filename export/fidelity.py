"""How closely a quantized model follows fp32: logits computed exactly (as TensorRT computes Q/DQ),
fidelity, per-layer sensitivity, and the choice of layers to keep in float."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edge_squeeze.errors import require
from edge_squeeze.results import top1_agreement

from .quantize import QuantConfig, conv_nodes, quantize_model


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
    return np.concatenate([session.run(None, {name: batch[i : i + 32]})[0] for i in range(0, len(batch), 32)])


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
        top1_agreement=top1_agreement(logits, reference),
        top5_overlap=overlap,
        logit_mse=float(np.mean((reference - logits) ** 2)),
    )


@dataclasses.dataclass
class QuantProblem:
    """One fp32 model to quantize and what every trial on it shares: the activation ranges, the
    activation encoding and calibration method, the calibration images and the fp32 logits on them."""

    fp32_model: Any
    ranges: Dict[str, Tuple[float, float]]
    flavour: str  # activation encoding: "s8" (the Q/DQ file) or "u8" (the CPU file)
    method: str
    batch: np.ndarray
    reference: np.ndarray  # fp32 logits on ``batch``

    def trial(self, float_nodes: Sequence[str]) -> Tuple[Any, Fidelity]:
        """The model quantized with ``float_nodes`` left in float, and how closely it follows fp32
        (computed exactly, as TensorRT does)."""
        config = QuantConfig(self.flavour, self.method, tuple(float_nodes))
        model = quantize_model(self.fp32_model, self.ranges, config, self.batch)
        return model, fidelity(self.reference, logits_of(model.SerializeToString(), self.batch))


def sensitivity(
    problem: QuantProblem,
    nodes: Optional[Sequence[str]] = None,
    keep_float: Sequence[str] = (),
    progress: bool = False,
) -> List[Dict[str, Any]]:
    """Per-layer sensitivity: quantize one Conv at a time (all other Convs and ``keep_float`` float)
    and measure the damage.

    Sorted most sensitive first (largest logit MSE against fp32 on the problem's images). Pass the
    layers every candidate model keeps float (the logits' pool): quantized in every trial, their
    error would swamp the one layer's.
    """
    all_convs = conv_nodes(problem.fp32_model)
    targets: Iterable[str] = nodes if nodes is not None else all_convs
    if progress:
        from edge_squeeze.progress import progress_bar

        targets = progress_bar(list(targets), desc="per-layer sensitivity", unit="layer")
    rows = []
    for node in targets:
        _, fid = problem.trial([*keep_float, *(n for n in all_convs if n != node)])
        rows.append({"node": node, **fid.to_dict()})
    rows.sort(key=lambda r: -r["logit_mse"])
    return rows


def choose_float_nodes(
    problem: QuantProblem,
    ranking: Callable[[], Sequence[str]],
    target_agreement: float,
    max_float: int,
    always_float: Sequence[str] = (),
    first_trial: Optional[Tuple[Any, Fidelity]] = None,
) -> Tuple[Tuple[str, ...], List[Dict[str, Any]], Any]:
    """Keep the most sensitive layers in float, one at a time, until agreement reaches the target.

    ``ranking`` (most sensitive first) is only called once a layer must be added: the sensitivity
    analysis costs a quantization per layer. ``first_trial`` is ``problem.trial(always_float)`` when
    the caller already has it. Returns the chosen float nodes, one row per step (what each step
    bought), and the last step's quantized model.
    """
    chosen: List[str] = list(always_float)
    steps = []
    candidates: Optional[List[str]] = None
    while True:
        model, fid = first_trial if first_trial is not None and not steps else problem.trial(chosen)
        steps.append({"float_nodes": list(chosen), **fid.to_dict(), "bytes": model.ByteSize()})
        if fid.top1_agreement >= target_agreement or len(chosen) >= max_float:
            break
        if candidates is None:
            candidates = [n for n in ranking() if n not in chosen]
        if not candidates:
            break
        chosen.append(candidates.pop(0))
    return tuple(chosen), steps, model
