"""The SqueezeNet paper's own Deep-Compression file (``compressed_SqueezeNet.net``, SqueezeNet 1.0 in
Caffe layout) read into a float32 state dict with torchvision's key names.

The format (docs/esqz-format.md has it with the ``.esqz`` one): a header of 26 uint32 entry counts,
then per conv layer a 256-entry float32 codebook, the float32 biases, one byte code per entry, and
4-bit gaps (low nibble first) giving each entry's position after the previous one (+1); gaps over
15 are bridged by zero-code filler entries. Its Caffe conventions (227x227, BGR 0-255 minus mean
104/117/123, conv10 with padding 1) become a model config and a preprocessing spec, not special
cases anywhere else.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np

from edge_squeeze.config import SqueezeNetConfig, config_for
from edge_squeeze.errors import EdgeSqueezeError

# (Caffe layer, our state-dict prefix, weight shape) in the file's order, SqueezeNet 1.0
_FIRE_INDEX = {2: 3, 3: 4, 4: 5, 5: 7, 6: 8, 7: 9, 8: 10, 9: 12}


def deep_compression_layers() -> List[Tuple[str, str, Tuple[int, int, int, int]]]:
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
    return config_for("squeezenet1_0", num_classes=1000, conv10_padding=1).to_dict()
