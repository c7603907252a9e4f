"""Deep Compression for SqueezeNet: the paper's own compressed model, and ``.esqz`` files of our own.

**Reading the paper's file** (``compressed_SqueezeNet.net``, SqueezeNet 1.0 in Caffe layout): a header
of 26 uint32 entry counts, then per conv layer a 256-entry float32 codebook, the float32 biases, one
byte code per entry, and 4-bit gaps (low nibble first) giving each entry's position after the
previous one (+1); gaps over 15 are bridged by zero-code filler entries. Its Caffe conventions
(227x227, BGR 0-255 minus mean 104/117/123, conv10 with padding 1) become a model config and a
preprocessing spec, not special cases anywhere else.

**The ``.esqz`` format** (all little-endian), version 2::

    magic   b"ESQZ"            4 bytes
    version uint16             2 (1 is read too)
    header  uint32 length n, then n bytes of zlib-deflated UTF-8 JSON: model config, labels (or,
            version 2, {"builtin": "imagenet-1k"} for the ImageNet names shipped with edge-squeeze),
            preprocessing, one entry per tensor {name, shape, kind, ...} in stream order, and
            "body_crc32", the CRC-32 of all the bodies (files written before it was added lack it
            and are read unchecked; readers that predate it ignore it)
    body    per tensor, in header order:
            kind "sparse": codebook (float32 x 2**bits), float16 scale per output channel
                           (weights are shared in units of their channel's maximum), then a Huffman-coded stream of
                           (gap, code) symbols; positions as in Deep Compression, with gap
                           symbols of ``index_bits`` and zero-code fillers for longer gaps
            kind "dense":  float16 values (biases)

Huffman tables are stored as canonical code lengths (one byte per symbol), in the header JSON.
Magnitude pruning is per layer, k-means weight sharing (linear initialisation, as in the paper) has a
codebook per layer, and nothing is retrained. A layer may instead be shared on a uniform grid
(0, ±1/L, ..., ±1 channel maxima): the same format, its codebook being that grid and its zeros
coded as gaps (entropy-coded scalar quantization). Its step sizes give ``--max-bytes`` finer
choices than powers of two; on SqueezeNet 1.1's large late layers it measured less output error per
byte than k-means, on small or synthetic layers about the same, so ``--max-bytes`` measures both.
Given calibration images, each weight's code is chosen to keep its layer's outputs rather than the
weight itself (:mod:`.calibrated_sharing`); the file format is the same.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import io
import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .errors import EdgeSqueezeError
from .fileio import write_bytes_atomic
from .labels import Labels, imagenet_labels
from .preprocess import PreprocessSpec

log = logging.getLogger("edge_squeeze")

MAGIC = b"ESQZ"
VERSION = 2  # 2: labels may be {"builtin": "imagenet-1k"}; version 1 files are read as before

# --- the paper's file --------------------------------------------------------------------------

# (Caffe layer, our state-dict prefix, weight shape) in the file's order, SqueezeNet 1.0
_FIRE_INDEX = {2: 3, 3: 4, 4: 5, 5: 7, 6: 8, 7: 9, 8: 10, 9: 12}


def deep_compression_layers() -> List[Tuple[str, str, Tuple[int, int, int, int]]]:
    from .models import SqueezeNetConfig

    layers = [("conv1", "features.0", (96, 3, 7, 7))]
    channels = 96
    for k, (s, e1, e3) in zip(range(2, 10), SqueezeNetConfig().fire_widths()):
        prefix = f"features.{_FIRE_INDEX[k]}"
        layers += [
            (f"fire{k}/conv1x1_1", f"{prefix}.squeeze", (s, channels, 1, 1)),
            (f"fire{k}/conv1x1_2", f"{prefix}.expand1x1", (e1, s, 1, 1)),
            (f"fire{k}/conv3x3_2", f"{prefix}.expand3x3", (e3, s, 3, 3)),
        ]
        channels = e1 + e3
    layers.append(("conv10", "classifier.1", (1000, channels, 1, 1)))
    return layers


def read_deep_compression(path: Union[str, os.PathLike[str]]) -> Dict[str, np.ndarray]:
    """The paper's compressed SqueezeNet 1.0 as a float32 state dict (torchvision key names)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeSqueezeError(f"Deep-Compression file not found: {path}")
    data = path.read_bytes()
    layers = deep_compression_layers()
    head = 4 * len(layers)
    if len(data) < head:
        raise EdgeSqueezeError(f"{path} is truncated: shorter than its {len(layers)}-entry header")
    counts = struct.unpack(f"<{len(layers)}I", data[:head])
    expected = head + sum(1024 + 4 * shape[0] + n + (n + 1) // 2 for (_, _, shape), n in zip(layers, counts))
    if expected != len(data):
        raise EdgeSqueezeError(
            f"{path} is not the Deep-Compression SqueezeNet 1.0 file: its header promises {expected} bytes, "
            f"it has {len(data)} (truncated or another model)"
        )
    state: Dict[str, np.ndarray] = {}
    offset = head
    for (name, prefix, shape), n in zip(layers, counts):
        codebook = np.frombuffer(data, np.float32, 256, offset)
        offset += 1024
        bias = np.frombuffer(data, np.float32, shape[0], offset)
        offset += 4 * shape[0]
        values = np.frombuffer(data, np.uint8, n, offset)
        offset += n
        nibbles = np.frombuffer(data, np.uint8, (n + 1) // 2, offset)
        offset += (n + 1) // 2
        gaps = np.empty(2 * len(nibbles), np.int64)
        gaps[0::2] = nibbles & 0x0F
        gaps[1::2] = nibbles >> 4
        positions = np.cumsum(gaps[:n] + 1) - 1  # p0 = g0, pk = pk-1 + gk + 1
        size = int(np.prod(shape))
        if n and positions[-1] >= size:
            raise EdgeSqueezeError(
                f"{path}: layer {name} indexes past its {size} weights; the file is corrupt"
            )
        codes = np.zeros(size, np.uint8)
        codes[positions] = values
        state[f"{prefix}.weight"] = codebook[codes].reshape(shape).astype(np.float32)
        state[f"{prefix}.bias"] = bias.astype(np.float32).copy()
    return state


def deep_compression_config() -> Dict[str, Any]:
    from .models import config_for

    return config_for("squeezenet1_0", num_classes=1000, conv10_padding=1).to_dict()


# --- Huffman coding ----------------------------------------------------------------------------


def huffman_lengths(counts: np.ndarray, max_len: int = 24) -> np.ndarray:
    """Code length per symbol (0 for unused symbols) of an optimal prefix code."""
    symbols = [int(i) for i in np.nonzero(counts)[0]]
    lengths = np.zeros(len(counts), np.uint8)
    if len(symbols) == 1:
        lengths[symbols[0]] = 1
        return lengths
    heap: List[Tuple[int, int, List[int]]] = [(int(counts[s]), s, [s]) for s in symbols]
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        tie += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
    if lengths.max() > max_len:
        raise EdgeSqueezeError("Huffman code too long; use fewer bits")
    return lengths


def canonical_codes(lengths: np.ndarray) -> Dict[int, Tuple[int, int]]:
    """symbol -> (code, length), canonical order: by length, then symbol."""
    order = sorted((int(length), s) for s, length in enumerate(lengths) if length)
    codes: Dict[int, Tuple[int, int]] = {}
    code, prev_len = 0, order[0][0] if order else 0
    for length, s in order:
        code <<= length - prev_len
        codes[s] = (code, length)
        code += 1
        prev_len = length
    return codes


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    codes = canonical_codes(lengths)
    table_code = np.zeros(len(lengths), np.int64)
    table_len = np.zeros(len(lengths), np.int64)
    for s, (c, n) in codes.items():
        table_code[s], table_len[s] = c, n
    lens = table_len[symbols]
    total = int(lens.sum())
    bits = np.zeros(total, np.uint8)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    max_len = int(lens.max()) if len(lens) else 0
    vals = table_code[symbols]
    for k in range(max_len):  # bit k counted from the most significant bit of each code
        has = lens > k
        shift = lens[has] - 1 - k
        bits[starts[has] + k] = (vals[has] >> shift) & 1
    return np.packbits(bits).tobytes()


def huffman_decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` symbols with a lookup table indexed by the next max-length bits."""
    codes = canonical_codes(lengths)
    width = max(n for _, n in codes.values())
    table_sym = np.zeros(1 << width, np.int64)
    table_len = np.zeros(1 << width, np.int64)
    for s, (c, n) in codes.items():
        lo = c << (width - n)
        table_sym[lo : lo + (1 << (width - n))] = s
        table_len[lo : lo + (1 << (width - n))] = n
    bits = np.concatenate([np.unpackbits(np.frombuffer(data, np.uint8)), np.zeros(width, np.uint8)])
    windows = np.zeros(len(bits) - width, np.int64)
    for k in range(width):  # the width bits starting at every position, as one integer
        windows = (windows << 1) | bits[k : k + len(windows)]
    sym_at = table_sym[windows].tolist()
    len_at = table_len[windows].tolist()
    limit = len(bits) - width
    out = [0] * count
    pos = 0
    for i in range(count):
        if pos >= limit:
            raise EdgeSqueezeError(".esqz file is truncated: its Huffman stream ends early")
        out[i] = sym_at[pos]
        pos += len_at[pos]
    if pos > limit:
        raise EdgeSqueezeError(".esqz file is truncated: its Huffman stream ends early")
    return np.asarray(out, np.int64)


# --- compression -------------------------------------------------------------------------------


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


# uniform grids --max-bytes tries with calibration (2L + 1 values), besides k-means of 2..--bits bits
UNIFORM_LEVELS = (2, 3, 4, 6, 8, 12, 16, 24)


@dataclasses.dataclass(frozen=True)
class CompressOptions:
    sparsity: float = 0.0  # share of weights pruned per layer (by magnitude)
    bits: int = 8  # codebook size 2**bits (code 0 is reserved for the pruned zero)
    index_bits: int = 4
    dense_layers: Tuple[str, ...] = ("features.0",)  # pruned lightly: few weights, most sensitive
    dense_layer_sparsity: float = 0.1
    # (state-dict prefix, bits) overriding ``bits`` for those layers, e.g. (("classifier", 4),)
    layer_bits: Tuple[Tuple[str, int], ...] = ()
    # (state-dict prefix, L): these layers use the uniform grid of 2L + 1 values (see Grid) instead
    layer_levels: Tuple[Tuple[str, int], ...] = ()
    # images the codes were chosen on (calibrated sharing, see calibrated_sharing); 0: nearest entry
    calibration_images: int = 0


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
    compensated as in :mod:`.calibrated_sharing`.
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
        from .calibrated_sharing import round_with_compensation

        codes = round_with_compensation(scaled, keep, codebook.astype(np.float64), hessian, usable)
    elif usable is not None:  # a uniform grid, nearest value
        from .calibrated_sharing import nearest_code_table

        table, bounds = nearest_code_table(codebook, usable)
        codes = np.where(keep, table[np.searchsorted(bounds, scaled)], 0)
    else:
        codes = np.zeros(rows.shape, np.int64)
        codes[keep] = assign + 1
    return SharedWeights(tuple(weight.shape), codebook, scales, codes, bits)


def encode_shared(shared: SharedWeights, index_bits: int) -> Tuple[Dict[str, Any], bytes]:
    """Relative positions and Huffman coding: one shared weight to (header entry, body bytes)."""
    bits = shared.bits
    flat_codes = shared.codes.ravel()
    positions = np.nonzero(flat_codes)[0]
    codes = flat_codes[positions]
    # relative positions: gaps of at most 2**index_bits - 1, longer ones bridged by zero-code fillers
    max_gap = 2**index_bits - 1
    gaps_out: List[int] = []
    codes_out: List[int] = []
    prev = -1
    for pos, code in zip(positions.tolist(), codes.tolist()):
        gap = pos - prev - 1
        while gap > max_gap:
            gaps_out.append(max_gap)
            codes_out.append(0)
            gap -= max_gap + 1
        gaps_out.append(gap)
        codes_out.append(code)
        prev = pos
    # one symbol per entry: (gap, code) packed so one Huffman table covers both
    symbols = np.asarray(gaps_out, np.int64) * (2**bits) + np.asarray(codes_out, np.int64)
    counts = (
        np.bincount(symbols, minlength=(max_gap + 1) * 2**bits) if len(symbols) else np.zeros(1, np.int64)
    )
    lengths = huffman_lengths(counts) if len(symbols) else np.zeros(1, np.uint8)
    stream = huffman_encode(symbols, lengths) if len(symbols) else b""
    body = shared.codebook.tobytes() + shared.scales.tobytes() + stream
    used = np.nonzero(lengths)[0]
    entry = {
        "kind": "sparse",
        "shape": list(shared.shape),
        "bits": bits,
        "index_bits": index_bits,
        "entries": len(symbols),
        "nonzero": len(positions),
        "stream_bytes": len(stream),
        # sparse table of Huffman code lengths: symbols and their lengths
        "huffman": {"symbols": used.tolist(), "lengths": lengths[used].tolist()},
    }
    return entry, body


def _as_array(value: Any) -> np.ndarray:
    """A state-dict value (torch tensor or array) as float32 numpy."""
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float32)


def _dense(arr: np.ndarray) -> Tuple[Dict[str, Any], bytes]:
    """A non-conv tensor (biases) as float16: (header entry, body bytes)."""
    return {"kind": "dense", "shape": list(arr.shape), "dtype": "float16"}, arr.astype(np.float16).tobytes()


def decompress_tensor(entry: Dict[str, Any], body: bytes) -> np.ndarray:
    bits, index_bits = int(entry["bits"]), int(entry["index_bits"])
    shape = tuple(entry["shape"])
    size = int(np.prod(shape))
    codebook = np.frombuffer(body, np.float32, 2**bits, 0)
    scales = np.frombuffer(body, np.float16, shape[0], 4 * 2**bits).astype(np.float32)
    n = int(entry["entries"])
    flat = np.zeros(size, np.float32)
    if n:
        nsym = (2**index_bits) * 2**bits
        lengths = np.zeros(nsym, np.uint8)
        lengths[np.asarray(entry["huffman"]["symbols"], np.int64)] = np.asarray(
            entry["huffman"]["lengths"], np.uint8
        )
        symbols = huffman_decode(body[4 * 2**bits + 2 * shape[0] :], lengths, n)
        gaps, codes = symbols // 2**bits, symbols % 2**bits
        positions = np.cumsum(gaps + 1) - 1
        if positions[-1] >= size:
            raise EdgeSqueezeError(".esqz file is corrupt: positions run past the tensor")
        flat[positions] = codebook[codes]
    return (flat.reshape(shape[0], -1) * scales[:, None]).reshape(shape)


def _shared_layer_names(state: Dict[str, Any]) -> List[str]:
    """The state-dict entries a file shares on a grid (the conv weights); the rest are stored dense."""
    return [name for name, value in state.items() if _as_array(value).ndim == 4]


def _share(
    name: str, weight: np.ndarray, options: CompressOptions, grid: Grid, hessian: Optional[np.ndarray] = None
) -> SharedWeights:
    return share_weights(weight, _layer_sparsity(name, options), grid.bits, hessian, grid.levels)


def compress_state_dict(
    state: Dict[str, Any],
    options: CompressOptions,
    model: Any = None,
    calibration: Optional[np.ndarray] = None,
    progress: bool = False,
) -> Tuple[List[Dict[str, Any]], List[bytes]]:
    """Header entries and bodies for every tensor: conv weights shared, biases float16.

    With ``calibration`` images (and the torch ``model`` holding ``state``), codes are chosen layer
    by layer to keep each layer's outputs (:mod:`.calibrated_sharing`); the model is left holding
    the compressed weights.
    """
    shared: Dict[str, SharedWeights] = {}
    if calibration is not None:
        from .calibrated_sharing import share_sequentially

        if model is None:
            raise EdgeSqueezeError("calibrated sharing needs the torch model that holds the weights")

        def round_layer(layer: str, weight: np.ndarray, hessian: np.ndarray) -> np.ndarray:
            name = f"{layer}.weight"
            shared[name] = _share(name, weight, options, _layer_grid(name, options), hessian)
            return shared[name].weight()

        share_sequentially(model, calibration, round_layer, progress=progress)
        state = model.state_dict()
    entries, bodies = [], []
    sharable = set(_shared_layer_names(state))
    for name, value in state.items():
        arr = _as_array(value)
        if name in sharable:
            weights = shared.get(name) or _share(name, arr, options, _layer_grid(name, options))
            entry, body = encode_shared(weights, options.index_bits)
        else:
            entry, body = _dense(arr)
        entries.append({**entry, "name": name, "bytes": len(body)})
        bodies.append(body)
    return entries, bodies


def _labels_entry(labels: Labels) -> Dict[str, Any]:
    """The ImageNet-1k names ship with edge-squeeze: name them instead of storing ~10 kB of text."""
    if len(labels) == 1000 and labels == imagenet_labels():
        return {"builtin": "imagenet-1k"}
    return labels.to_dict()


def _labels_from_entry(entry: Dict[str, Any]) -> Labels:
    if "builtin" in entry:
        if entry["builtin"] != "imagenet-1k":
            raise EdgeSqueezeError(f"unknown built-in label set {entry['builtin']!r}: upgrade edge-squeeze")
        return imagenet_labels()
    return Labels.from_dict(entry)


def _pack(
    config: Dict[str, Any],
    labels: Labels,
    spec: PreprocessSpec,
    options: CompressOptions,
    entries: List[Dict[str, Any]],
    bodies: List[bytes],
) -> bytes:
    header = {
        "config": config,
        "labels": _labels_entry(labels),
        "preprocess": spec.to_dict(),
        "compression": dataclasses.asdict(options),
        "tensors": entries,
    }
    # zlib's own check covers the header; a damaged weight would otherwise decode to a silently wrong
    # model (a flipped byte in a codebook or Huffman stream reads as another value)
    payload = b"".join(bodies)
    header["body_crc32"] = zlib.crc32(payload)
    head = json.dumps(header, separators=(",", ":")).encode()
    packed = zlib.compress(head, 9)  # the header is mostly Huffman tables (and custom labels)
    blob = io.BytesIO()
    blob.write(MAGIC)
    blob.write(struct.pack("<HI", VERSION, len(packed)))
    blob.write(packed)
    blob.write(payload)
    return blob.getvalue()


MIN_BITS = 2


def candidate_grids(name: str, options: CompressOptions) -> List[Grid]:
    """What ``--max-bytes`` with calibration tries for a layer: k-means of 2 to its own bits, and the
    uniform grids that fit in a codebook of its own bits."""
    top = _layer_grid(name, options).bits
    return [Grid(b) for b in range(MIN_BITS, top + 1)] + [
        Grid.uniform(n) for n in UNIFORM_LEVELS if Grid.uniform(n).bits <= top
    ]


def measure_layer_costs(
    model: Any, calibration: np.ndarray, options: CompressOptions, progress: bool = False
) -> List[Any]:
    """Bytes and output divergence of each conv layer on each of its :func:`candidate_grids`
    (:func:`.bit_allocation.measure_sensitivity`; ~10 minutes for SqueezeNet 1.1 on 2 cores)."""
    from .bit_allocation import measure_sensitivity

    return measure_sensitivity(
        model,
        calibration,
        grids=lambda name: candidate_grids(name, options),
        share=lambda name, w, h, grid: _share(name, w, options, grid, h),
        encoded_bytes=lambda shared: len(encode_shared(shared, options.index_bits)[1]),
        progress=progress,
    )


def _smaller(grid: Grid) -> Optional[Grid]:
    """The next cheaper grid of the same kind, for the bytes-only fit."""
    if grid.levels is None:
        return Grid(grid.bits - 1) if grid.bits > MIN_BITS else None
    fewer = [n for n in UNIFORM_LEVELS if n < grid.levels]
    return Grid.uniform(fewer[-1]) if fewer else None


def fit_layer_bits(
    state: Dict[str, Any],
    config: Dict[str, Any],
    labels: Labels,
    spec: PreprocessSpec,
    options: CompressOptions,
    max_bytes: int,
    costs: Optional[Callable[[], List[Any]]] = None,
) -> CompressOptions:
    """``options`` with a grid per layer (at most each layer's own bits) that fits the file in
    ``max_bytes``.

    With ``costs`` (returning :func:`measure_layer_costs`; called only if the file does not fit at
    every layer's own bits, as the measurement takes minutes), the grids are the ones that least
    change the model's outputs within the budget (:mod:`.bit_allocation`); the calibrated codes'
    sizes come from that measurement, so :func:`write_esqz` checks the real file and tightens the
    budget if needed.
    Without, each step takes one bit from the layer where that bit saves the most bytes (on
    SqueezeNet the final 1x1 conv first: 41 % of 1.1's weights), with sizes from nearest-entry
    sharing, which is exact for uncalibrated files.
    """
    arrays = {name: _as_array(v) for name, v in state.items()}
    convs = _shared_layer_names(arrays)
    encoded: Dict[Tuple[str, Grid], Tuple[Dict[str, Any], bytes]] = {}

    def encode(name: str, grid: Grid) -> Tuple[Dict[str, Any], bytes]:
        if (name, grid) not in encoded:
            encoded[name, grid] = encode_shared(_share(name, arrays[name], options, grid), options.index_bits)
        return encoded[name, grid]

    def file_size(grids: Dict[str, Grid]) -> int:
        entries, bodies = [], []
        for name, a in arrays.items():
            entry, body = encode(name, grids[name]) if name in grids else _dense(a)
            entries.append({**entry, "name": name, "bytes": len(body)})
            bodies.append(body)
        return len(_pack(config, labels, spec, options, entries, bodies))

    grids = {name: _layer_grid(name, options) for name in convs}
    full = file_size(grids)
    if costs is not None and full > max_bytes:
        from .bit_allocation import allocate_bits

        # biases and header: what the file holds besides the shared weights
        budget = max_bytes - (full - sum(len(encode(n, g)[1]) for n, g in grids.items()))
        grids = {name: cost.grid for name, cost in allocate_bits(costs(), budget).items()}
    else:
        while file_size(grids) > max_bytes:
            savings = [
                (len(encode(n, g)[1]) - len(encode(n, smaller)[1]), n, smaller)
                for n, g in grids.items()
                for smaller in [_smaller(g)]
                if smaller is not None
            ]
            if not savings:
                raise EdgeSqueezeError(
                    f"cannot fit the model in {max_bytes:,} bytes even at {MIN_BITS} bits a layer; "
                    "raise --max-bytes or add --sparsity"
                )
            _, name, smaller = max(savings)
            grids[name] = smaller

    def prefix(name: str) -> str:
        return name[: -len(".weight")] if name.endswith(".weight") else name

    layer_bits = tuple(
        (prefix(n), g.bits) for n, g in grids.items() if g.levels is None and g.bits != options.bits
    )
    layer_levels = tuple((prefix(n), g.levels) for n, g in grids.items() if g.levels is not None)
    log.info(
        "to fit %s bytes: %s",
        f"{max_bytes:,}",
        ", ".join(f"{prefix(n)} {g}" for n, g in grids.items() if g != Grid(options.bits))
        or f"{options.bits} bits, no layer lowered",
    )
    return dataclasses.replace(options, layer_bits=layer_bits, layer_levels=layer_levels)


def write_esqz(
    path: Union[str, os.PathLike[str]],
    state: Dict[str, Any],
    config: Dict[str, Any],
    labels: Labels,
    spec: PreprocessSpec,
    options: CompressOptions,
    model: Any = None,
    calibration: Optional[np.ndarray] = None,
    progress: bool = False,
    max_bytes: Optional[int] = None,
    layer_costs: Optional[List[Any]] = None,
) -> int:
    """Write an ``.esqz`` file atomically; returns its size in bytes (see :func:`compress_state_dict`).

    With ``max_bytes``, grids are first chosen layer by layer to fit (:func:`fit_layer_bits`, by
    measured sensitivity when ``calibration`` is given). Calibrated codes compress a little
    differently from the per-layer measurement, so an over-budget result is redone (up to twice)
    on a budget tightened by the excess; a file that still comes out larger is not written.
    ``layer_costs``, a :func:`measure_layer_costs` result for the same float model, calibration
    images and options, stands in for that measurement, so several budgets can be tried on one
    (it is most of the time a budget takes).
    """
    if calibration is not None:
        options = dataclasses.replace(options, calibration_images=len(calibration))
        if model is None:
            raise EdgeSqueezeError("calibrated sharing needs the torch model that holds the weights")
    costs: Optional[Callable[[], List[Any]]] = None
    original = None
    if max_bytes is not None and calibration is not None:
        if layer_costs is not None and {c.layer for c in layer_costs} != set(_shared_layer_names(state)):
            raise EdgeSqueezeError(
                "layer_costs were measured on another model (their layers differ from this one's "
                "conv weights): measure them with measure_layer_costs on this model"
            )
        measured: List[Any] = list(layer_costs or [])

        def measure() -> List[Any]:  # once, and only if the budget needs it
            if not measured:
                measured.extend(measure_layer_costs(model, calibration, options, progress))
            return measured

        costs = measure
        original = copy.deepcopy(model.state_dict())
    slack = 0  # bytes the calibrated codes took beyond the measurement's prediction
    retries = 2 if original is not None else 0
    for attempt in range(retries + 1):
        fitted = (
            options
            if max_bytes is None
            else fit_layer_bits(state, config, labels, spec, options, max_bytes - slack, costs)
        )
        entries, bodies = compress_state_dict(state, fitted, model, calibration, progress)
        data = _pack(config, labels, spec, fitted, entries, bodies)
        if max_bytes is None or len(data) <= max_bytes or attempt == retries:
            break
        log.info("calibrated file is %s bytes, over budget: refitting", f"{len(data):,}")
        slack += len(data) - max_bytes
        model.load_state_dict(original)
    if max_bytes is not None and len(data) > max_bytes:
        raise EdgeSqueezeError(
            f"the compressed model is {len(data):,} bytes, over --max-bytes {max_bytes:,}; "
            "lower --bits by one or raise --max-bytes"
        )
    write_bytes_atomic(path, data)
    return len(data)


@dataclasses.dataclass
class EsqzModel:
    state_dict: Dict[str, np.ndarray]
    config: Dict[str, Any]
    labels: Labels
    preprocess: PreprocessSpec
    compression: Dict[str, Any]


def read_esqz(path: Union[str, os.PathLike[str]]) -> EsqzModel:
    """Decompress an ``.esqz`` file to float weights, with one clear error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise EdgeSqueezeError(f".esqz file not found: {path}")
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise EdgeSqueezeError(
            f"{path} is not an .esqz file (wrong magic); make one with edge-squeeze compress"
        )
    if len(data) < 10:
        raise EdgeSqueezeError(f"{path} is truncated (no header)")
    version, head_len = struct.unpack("<HI", data[4:10])
    if version > VERSION:
        raise EdgeSqueezeError(
            f"{path} is .esqz version {version}; this edge-squeeze reads up to {VERSION}: upgrade it"
        )
    try:
        header = json.loads(zlib.decompress(data[10 : 10 + head_len]))
    except (zlib.error, ValueError) as exc:
        raise EdgeSqueezeError(f"{path} is truncated or corrupt (unreadable header)") from exc
    offset = 10 + head_len
    bodies = []
    for entry in header["tensors"]:
        size = int(entry["bytes"])
        body = data[offset : offset + size]
        if len(body) < size:
            raise EdgeSqueezeError(f"{path} is truncated: tensor {entry['name']} is cut short")
        offset += size
        bodies.append(body)
    if "body_crc32" in header and zlib.crc32(data[10 + head_len : offset]) != header["body_crc32"]:
        raise EdgeSqueezeError(
            f"{path} is corrupt: its weights fail their checksum (damaged on disk or in transfer); "
            "copy it again or re-run edge-squeeze compress"
        )
    state: Dict[str, np.ndarray] = {}
    for entry, body in zip(header["tensors"], bodies):
        if entry["kind"] == "dense":
            state[entry["name"]] = np.frombuffer(body, np.float16).astype(np.float32).reshape(entry["shape"])
        else:
            state[entry["name"]] = decompress_tensor(entry, body)
    return EsqzModel(
        state_dict=state,
        config=header["config"],
        labels=_labels_from_entry(header["labels"]),
        preprocess=PreprocessSpec.from_dict(header["preprocess"]),
        compression=header.get("compression", {}),
    )
