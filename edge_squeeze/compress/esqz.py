"""The ``.esqz`` container (format in docs/esqz-format.md): shared weights and float16 biases in,
Huffman-coded bodies and a zlib-deflated JSON header out, with a CRC-32 of the bodies; and back.

Reading needs numpy only (no torch): an ``.esqz`` decompresses to a float32 state dict.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.labels import Labels, imagenet_labels
from edge_squeeze.preprocess import PreprocessSpec

from .huffman import huffman_decode, huffman_encode, huffman_lengths
from .sharing import CompressOptions, SharedWeights

MAGIC = b"ESQZ"

VERSION = 2  # 2: labels may be {"builtin": "imagenet-1k"}; version 1 files are read as before


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


def read_model_file(path: Union[str, os.PathLike[str]]) -> EsqzModel:
    """An ``.esqz`` file, or the paper's Deep-Compression ``.net`` (SqueezeNet 1.0, ImageNet, Caffe
    preprocessing), decompressed to float32 weights with numpy."""
    from .netfile import deep_compression_config, read_deep_compression

    path = Path(path)
    if path.suffix == ".net":
        return EsqzModel(
            state_dict=read_deep_compression(path),
            config=deep_compression_config(),
            labels=imagenet_labels(),
            preprocess=PreprocessSpec.caffe(),
            compression={"format": "Deep Compression .net (the SqueezeNet paper's)"},
        )
    return read_esqz(path)
