"""Activation ranges from calibration images: statistics, calibration methods and the range cache.

Statistics are gathered once per (model, calibration set, preprocessing) by running the fp32 model in
ONNX Runtime with every intermediate tensor exposed; min/max and a histogram of |x| per tensor are
enough for every method:

* ``minmax``: the observed range;
* ``percentile``: |x| clipped at a percentile (99.99 by default) of its histogram;
* ``entropy``: the threshold that minimises the KL divergence between the 2048-bin |x| histogram and
  its 128-level quantisation: TensorRT's IInt8EntropyCalibrator2 algorithm. Exact zeros are left out
  of the histograms: they are exactly representable, and the spike ReLU puts there would otherwise
  drag every threshold down.

The statistics are cached as ``.npz`` beside the model, keyed by model hash, calibration set and
preprocessing, so a rerun (another method, other excluded layers) costs no new inference. The same
ranges can be written as a TensorRT calibration cache (:func:`tensorrt_calibration_cache`).
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError, require
from edge_squeeze.fileio import atomic_path

from .calibration import CalibrationSet

log = logging.getLogger("edge_squeeze")

HIST_BINS = 2048
METHODS = ("entropy", "minmax", "percentile")


class TensorStats:
    """Per-tensor min, max and a histogram of |x| over [0, absmax]."""

    def __init__(self, names: List[str], lo: np.ndarray, hi: np.ndarray, hist: np.ndarray) -> None:
        self.names = names
        self.lo = lo
        self.hi = hi
        self.hist = hist  # (tensors, HIST_BINS)

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.lo), np.abs(self.hi))

    def save(self, path: Union[str, os.PathLike[str]], key: str) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, key=key, names=np.array(self.names), lo=self.lo, hi=self.hi, hist=self.hist
            )

    @classmethod
    def load(cls, path: Union[str, os.PathLike[str]], key: str) -> Optional[TensorStats]:
        """The cached statistics, or None when absent, computed for something else, or unreadable (a
        file cut short by a killed or disk-full run: then with one warning; the caller rebuilds it)."""
        if not Path(path).exists():
            return None
        try:
            with np.load(str(path), allow_pickle=False) as data:
                if str(data["key"]) != key:
                    return None
                stats = cls(list(map(str, data["names"])), data["lo"], data["hi"], data["hist"])
        except Exception as exc:  # numpy raises BadZipFile, EOFError, ValueError, OSError ... for a bad file
            log.warning("ignoring unreadable calibration statistics %s (%s); recomputing them", path, exc)
            return None
        if not (len(stats.names) == len(stats.lo) == len(stats.hi) == len(stats.hist)):
            log.warning("ignoring inconsistent calibration statistics %s; recomputing them", path)
            return None
        return stats


def activation_tensor_names(model: Any) -> List[str]:
    """Float tensors that flow between nodes (the graph input and every node output), not weights.

    Outputs computed only from constants (the exporter's Identity copies of shared initializers,
    Constant nodes, shape arithmetic) are weights too and are left out.
    """
    constant = {init.name for init in model.graph.initializer}
    names = [inp.name for inp in model.graph.input if inp.name not in constant]
    for node in model.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in ("Constant", "Shape") or (inputs and all(name in constant for name in inputs)):
            constant.update(node.output)
            continue
        names.extend(out for out in node.output if out)
    return names


def _exposed_model(model: Any, names: List[str]) -> bytes:
    onnx = require("onnx", "calibration")
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    existing = {out.name for out in exposed.graph.output}
    for name in names:
        if name not in existing:
            exposed.graph.output.add().name = name
    return exposed.SerializeToString()


def collect_stats(
    model: Any, calib: CalibrationSet, batch_size: int = 8, progress: bool = False
) -> TensorStats:
    """Two passes of the fp32 model over the calibration set: min/max, then |x| histograms."""
    ort = require("onnxruntime", "calibration")
    names = activation_tensor_names(model)
    so = ort.SessionOptions()
    # no graph rewrites: ranges must be of the tensors the quantizer will see, not fused ones
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(_exposed_model(model, names), so, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    lo = np.full(len(names), np.inf, dtype=np.float64)
    hi = np.full(len(names), -np.inf, dtype=np.float64)
    n_batches = (len(calib) + batch_size - 1) // batch_size
    batches: Any = calib.batches(batch_size)
    if progress:
        from edge_squeeze.progress import progress_bar

        batches = progress_bar(batches, desc="calibration ranges (1/2)", total=n_batches, unit="batch")
    for batch in batches:
        outs = session.run(names, {input_name: batch})
        for i, arr in enumerate(outs):
            lo[i] = min(lo[i], float(arr.min()))
            hi[i] = max(hi[i], float(arr.max()))
    absmax = np.maximum(np.abs(lo), np.abs(hi))
    hist = np.zeros((len(names), HIST_BINS), dtype=np.float64)
    batches = calib.batches(batch_size)
    if progress:
        from edge_squeeze.progress import progress_bar

        batches = progress_bar(batches, desc="calibration ranges (2/2)", total=n_batches, unit="batch")
    for batch in batches:
        outs = session.run(names, {input_name: batch})
        for i, arr in enumerate(outs):
            top = absmax[i] if absmax[i] > 0 else 1.0
            bins = np.minimum((np.abs(arr.ravel()) * (HIST_BINS / top)).astype(np.int32), HIST_BINS - 1)
            hist[i] += np.bincount(bins, minlength=HIST_BINS)
            # zeros (half of every ReLU output) are exact in int8: leave them out
            hist[i, 0] -= arr.size - np.count_nonzero(arr)
    return TensorStats(names, lo.astype(np.float32), hi.astype(np.float32), hist)


def _entropy_threshold_bin(hist: np.ndarray, quant_levels: int = 128, stride: int = 1) -> int:
    """The histogram bin count i (a threshold at the i-th bin edge) minimising KL(P || Q)."""
    hist = hist.astype(np.float64)
    nbins = len(hist)
    if hist.sum() == 0 or nbins <= quant_levels:
        return nbins
    best_i, best_kl = nbins, np.inf
    for i in range(quant_levels, nbins + 1, stride):
        candidate = hist[:i]
        p = candidate.copy()
        p[i - 1] += hist[i:].sum()  # clipped outliers land in the last bin
        # merge i bins into quant_levels, then spread each level evenly over its non-empty bins
        edges = np.linspace(0, i, quant_levels + 1).astype(np.int64)
        nonempty = candidate != 0
        sums = np.add.reduceat(candidate, edges[:-1])
        counts = np.add.reduceat(nonempty.astype(np.float64), edges[:-1])
        level = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        q = np.repeat(level, np.diff(edges)) * nonempty
        if q.sum() == 0:
            continue
        p_n = p / p.sum()
        q_n = q / q.sum()
        support = p_n > 0
        if np.any(support & (q_n == 0)):
            continue  # Q assigns no mass where P has some: infinite divergence
        kl = float(np.sum(p_n[support] * np.log(p_n[support] / q_n[support])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i


def compute_ranges(
    stats: TensorStats, method: str, percentile: float = 99.99
) -> Dict[str, Tuple[float, float]]:
    """(rmin, rmax) per tensor for ``method``; clipping thresholds apply to |x|."""
    if method not in METHODS:
        raise EdgeSqueezeError(f"calibration method must be one of {', '.join(METHODS)}, not {method!r}")
    ranges: Dict[str, Tuple[float, float]] = {}
    absmax = stats.absmax
    for i, name in enumerate(stats.names):
        lo, hi = float(stats.lo[i]), float(stats.hi[i])
        if method == "minmax" or absmax[i] == 0:
            ranges[name] = (lo, hi)
            continue
        width = float(absmax[i]) / HIST_BINS
        if method == "percentile":
            cdf = np.cumsum(stats.hist[i]) / max(stats.hist[i].sum(), 1.0)
            t = (int(np.searchsorted(cdf, percentile / 100.0)) + 1) * width
        else:
            t = _entropy_threshold_bin(stats.hist[i], stride=4) * width
        ranges[name] = (max(lo, -t), min(hi, t))
    return ranges


def tensorrt_calibration_cache(ranges: Dict[str, Tuple[float, float]], trt_version: str = "8501") -> str:
    """Ranges as a TensorRT calibration cache: a header line, then ``tensor: <scale as big-endian hex>``.

    The scale is amax / 127 (symmetric int8), the form IInt8Calibrator.read_calibration_cache returns.
    TensorRT checks only that the header names a calibrator it knows.
    """
    lines = [f"TRT-{trt_version}-EntropyCalibration2"]
    for name, (lo, hi) in ranges.items():
        amax = max(abs(lo), abs(hi))
        scale = np.float32(amax / 127.0 if amax > 0 else 1.0 / 127.0)
        lines.append(f"{name}: {struct.pack('>f', float(scale)).hex()}")
    return "\n".join(lines) + "\n"


def parse_tensorrt_calibration_cache(text: str) -> Dict[str, float]:
    """Scales per tensor from a TensorRT calibration cache (inverse of :func:`tensorrt_calibration_cache`)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise EdgeSqueezeError("not a TensorRT calibration cache: the first line must start with 'TRT-'")
    scales = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(":")
        scales[name.strip()] = struct.unpack(">f", bytes.fromhex(value.strip()))[0]
    return scales


def cached_stats(
    model: Any, calib: CalibrationSet, cache_path: Path, key: str, progress: bool = False
) -> Tuple[TensorStats, bool]:
    """Statistics from ``cache_path`` when its key matches, otherwise computed and cached there."""
    stats = TensorStats.load(cache_path, key)
    if stats is not None:
        log.info("reusing calibration statistics from %s", cache_path)
        return stats, True
    stats = collect_stats(model, calib, progress=progress)
    stats.save(cache_path, key)
    return stats, False


def fold_relu_ranges(model: Any, ranges: Dict[str, Tuple[float, float]]) -> Dict[str, Tuple[float, float]]:
    """Give a tensor consumed only by a Relu the Relu's output range.

    Negative values die in the Relu anyway, so clipping them costs nothing, while a symmetric scale
    sized for a large negative tail wastes most of int8's levels on values that become zero
    (SqueezeNet 1.1's conv1: -18.6 .. 17.7 before the Relu). TensorRT fuses Conv+Relu and quantizes
    after the Relu for the same reason.
    """
    consumers: Dict[str, List[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = dict(ranges)
    for node in model.graph.node:
        if node.op_type != "Relu":
            continue
        src, out = node.input[0], node.output[0]
        if src in folded and out in folded and len(consumers.get(src, [])) == 1:
            folded[src] = folded[out]
    return folded


def unify_concat_ranges(model: Any, ranges: Dict[str, Tuple[float, float]]) -> Dict[str, Tuple[float, float]]:
    """Give every Concat's inputs and output one range: the union of theirs.

    A Fire module concatenates its two expand branches; with one scale for all three tensors the
    quantized Concat is a plain copy instead of a requantization: faster and closer to fp32 on the
    CPU file, which alone uses it (on the Q/DQ file it cost val top-1; docs/int8.md has both
    measurements). Apply after :func:`fold_relu_ranges`.
    """
    unified = dict(ranges)
    for node in model.graph.node:
        if node.op_type != "Concat":
            continue
        names = [n for n in [*node.input, node.output[0]] if n in unified]
        if not names:
            continue
        lo = min(unified[n][0] for n in names)
        hi = max(unified[n][1] for n in names)
        for n in names:
            unified[n] = (lo, hi)
    return unified
