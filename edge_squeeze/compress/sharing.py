"""Weight sharing for one conv layer: magnitude pruning, then a per-layer codebook (k-means with
linear initialisation, as in the paper, or a uniform grid of channel maxima), and each weight's code
(nearest entry, or chosen on calibration data by :mod:`.calibrated`)."""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

from edge_squeeze.options import FloatRange, IntRange, PrefixBits, flag, internal, validate


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 20) -> Tuple[np.ndarray, np.ndarray]:
    """Codebook (k,) and assignments; linear initialisation over [min, max] (Deep Compression's best)."""
    if len(values) == 0:
        return np.zeros(k, np.float32), np.zeros(0, np.int64)
    centroids = np.linspace(values.min(), values.max(), k).astype(np.float64)
    order = np.argsort(values)
    sorted_vals = values[order].astype(np.float64)
    for _ in range(iterations):
        bounds = (centroids[1:] + centroids[:-1]) / 2
        idx = np.searchsorted(bounds, sorted_vals)
        sums = np.bincount(idx, sorted_vals, minlength=k)
        counts = np.bincount(idx, minlength=k)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(moved, centroids):
            break
        centroids = np.sort(moved)
    bounds = (centroids[1:] + centroids[:-1]) / 2
    assign = np.searchsorted(bounds, values.astype(np.float64))
    return centroids.astype(np.float32), assign


@dataclasses.dataclass(frozen=True)
class Grid:
    """How one layer's weights are shared: a k-means codebook of ``2**bits - 1`` entries, or, with
    ``levels``, the uniform grid 0, ±1/levels, ..., ±1 (in channel maxima) of ``2 * levels + 1``
    values, ``bits`` then being the codebook width those values need."""

    bits: int
    levels: Optional[int] = None

    @classmethod
    def uniform(cls, levels: int) -> Grid:
        return cls(int(np.ceil(np.log2(2 * levels + 1))), levels)

    def __str__(self) -> str:
        return f"{self.bits} bits" if self.levels is None else f"uniform {2 * self.levels + 1}"


MIN_BITS = 2

# uniform grids --max-bytes tries with calibration (2L + 1 values), besides k-means of 2..--bits bits
UNIFORM_LEVELS = (2, 3, 4, 6, 8, 12, 16, 24)


@dataclasses.dataclass(frozen=True)
class CompressOptions:
    sparsity: float = flag(
        "--sparsity",
        0.0,
        type=FloatRange(0, 1, high_open=True),
        help="share of each layer's weights pruned, by magnitude (default 0)",
    )
    # codebook size 2**bits (code 0 is reserved for the pruned zero)
    bits: int = flag("--bits", 8, type=IntRange(MIN_BITS, 8), help="codebook bits per layer (default 8)")
    index_bits: int = internal(4, why="the sparse index width of the format (docs/esqz-format.md)")
    dense_layers: Tuple[str, ...] = internal(
        ("features.0",), why="pruned lightly: few weights, most sensitive"
    )
    dense_layer_sparsity: float = internal(0.1, why="the dense layers' sparsity cap")
    # (state-dict prefix, bits) overriding ``bits`` for those layers, e.g. (("classifier", 4),)
    layer_bits: Tuple[Tuple[str, int], ...] = flag(
        "--layer-bits",
        (),
        type=PrefixBits(MIN_BITS, 8),
        action="append",
        metavar="PREFIX=BITS",
        help="other bits for layers whose name starts with PREFIX, e.g. classifier=4 (repeatable)",
    )
    # (state-dict prefix, L): these layers use the uniform grid of 2L + 1 values (see Grid) instead
    layer_levels: Tuple[Tuple[str, int], ...] = internal((), why="chosen by the calibrated budget fit")
    # images the codes were chosen on (calibrated sharing, see compress/calibrated.py); 0: nearest entry
    calibration_images: int = internal(0, why="set by write_esqz from the calibration set")

    def __post_init__(self) -> None:
        validate(self)


def _for_layer(name: str, pairs: Tuple[Tuple[str, int], ...]) -> Optional[int]:
    for prefix, value in pairs:
        if name == prefix or name.startswith(prefix + "."):
            return value
    return None


def _layer_grid(name: str, options: CompressOptions) -> Grid:
    levels = _for_layer(name, options.layer_levels)
    if levels is not None:
        return Grid.uniform(levels)
    bits = _for_layer(name, options.layer_bits)
    return Grid(options.bits if bits is None else bits)


def _layer_sparsity(name: str, options: CompressOptions) -> float:
    """The first conv holds few weights and is the most sensitive: it is pruned at most lightly."""
    if any(name.startswith(p + ".") for p in options.dense_layers):
        return min(options.sparsity, options.dense_layer_sparsity)
    return options.sparsity


@dataclasses.dataclass
class SharedWeights:
    """One conv weight after pruning and weight sharing: what an ``.esqz`` tensor stores."""

    shape: Tuple[int, ...]
    codebook: np.ndarray  # float32 (2**bits,), entry 0 is 0.0 (pruned weights and gap fillers)
    scales: np.ndarray  # float16 per output channel: weights are shared in units of these
    codes: np.ndarray  # int64 (out, rest) indices into codebook, 0 where pruned
    bits: int

    def weight(self) -> np.ndarray:
        rows = self.codebook[self.codes] * self.scales.astype(np.float32)[:, None]
        return rows.reshape(self.shape).astype(np.float32)


def share_weights(
    weight: np.ndarray,
    sparsity: float,
    bits: int,
    hessian: Optional[np.ndarray] = None,
    levels: Optional[int] = None,
) -> SharedWeights:
    """Prune by magnitude, fit a per-layer codebook (k-means; with ``levels``, the uniform grid of
    :class:`Grid`, ``bits`` then being ignored) and pick each weight's code.

    Each output channel is divided by its float16 absolute maximum first, so one codebook serves
    channels of very different ranges (one shared per-layer codebook cost SqueezeNet 1.1 far more
    accuracy at the same bits). Without ``hessian`` every weight takes its nearest entry; with the
    Hessian of the layer's calibration inputs (``input_statistics``), rounding errors are
    compensated as in :mod:`.calibrated`.
    """
    out_channels = weight.shape[0]
    rows = weight.astype(np.float32).reshape(out_channels, -1)
    scales = np.abs(rows).max(axis=1).astype(np.float16)
    scales[scales == 0] = 1.0  # all-zero channels (and ones below float16's range) stay zero
    scaled = rows / scales.astype(np.float32)[:, None]
    keep = scaled != 0
    if sparsity > 0:
        # with calibration data, prune what the layer's outputs miss least (w^2 H_jj); without, the
        # smallest weights
        saliency = np.abs(scaled) if hessian is None else scaled**2 * np.diag(hessian)[None, :]
        threshold = np.quantile(saliency, sparsity)
        keep &= saliency > threshold
    usable: Optional[np.ndarray] = None  # codes a kept weight may take; default all but 0
    if levels is not None:
        bits = Grid.uniform(levels).bits
        steps = np.concatenate([np.arange(-levels, 0), np.arange(1, levels + 1)]) / levels
        codebook = np.zeros(2**bits, np.float32)  # entries past the grid are never used
        codebook[1 : 2 * levels + 1] = steps
        usable = np.arange(2 * levels + 1)  # 0 included: a kept weight may round to zero
    else:
        k = 2**bits - 1  # code 0 is the zero used by pruned positions and fillers
        centroids, assign = kmeans_1d(scaled[keep], k)
        codebook = np.concatenate([[0.0], centroids]).astype(np.float32)
    if hessian is not None:
        from .calibrated import round_with_compensation

        codes = round_with_compensation(scaled, keep, codebook.astype(np.float64), hessian, usable)
    elif usable is not None:  # a uniform grid, nearest value
        from .calibrated import nearest_code_table

        table, bounds = nearest_code_table(codebook, usable)
        codes = np.where(keep, table[np.searchsorted(bounds, scaled)], 0)
    else:
        codes = np.zeros(rows.shape, np.int64)
        codes[keep] = assign + 1
    return SharedWeights(tuple(weight.shape), codebook, scales, codes, bits)


def _share(
    name: str, weight: np.ndarray, options: CompressOptions, grid: Grid, hessian: Optional[np.ndarray] = None
) -> SharedWeights:
    return share_weights(weight, _layer_sparsity(name, options), grid.bits, hessian, grid.levels)


def candidate_grids(name: str, options: CompressOptions) -> List[Grid]:
    """What ``--max-bytes`` with calibration tries for a layer: k-means of 2 to its own bits, and the
    uniform grids that fit in a codebook of its own bits."""
    top = _layer_grid(name, options).bits
    return [Grid(b) for b in range(MIN_BITS, top + 1)] + [
        Grid.uniform(n) for n in UNIFORM_LEVELS if Grid.uniform(n).bits <= top
    ]


def _smaller(grid: Grid) -> Optional[Grid]:
    """The next cheaper grid of the same kind, for the bytes-only fit."""
    if grid.levels is None:
        return Grid(grid.bits - 1) if grid.bits > MIN_BITS else None
    fewer = [n for n in UNIFORM_LEVELS if n < grid.levels]
    return Grid.uniform(fewer[-1]) if fewer else None
