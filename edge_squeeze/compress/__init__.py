"""Deep Compression for SqueezeNet (Han et al., ICLR 2016, as the SqueezeNet paper applies it): the
paper's own compressed model, and ``.esqz`` files of our own. Nothing is retrained.

* :mod:`.netfile`: the paper's ``compressed_SqueezeNet.net`` read into a state dict;
* :mod:`.sharing`: magnitude pruning and per-layer weight sharing (k-means or a uniform grid);
* :mod:`.calibrated`: codes chosen to keep each layer's outputs on calibration images (needs torch);
* :mod:`.huffman`: canonical Huffman coding of the weight streams;
* :mod:`.esqz`: the ``.esqz`` container (docs/esqz-format.md), read with numpy alone;
* :mod:`.budget`: the grid per layer that fits a byte budget (``--max-bytes``);
* :mod:`.writer`: all of it together, ``write_esqz``.

An ``.esqz`` file runs without torch: ONNX Runtime takes the fp32 graph :mod:`edge_squeeze.onnx_graph`
builds from its weights in memory.
"""

from __future__ import annotations

from .budget import LayerCost, allocate_bits, fit_layer_bits, measure_layer_costs
from .esqz import EsqzModel, read_esqz
from .netfile import deep_compression_config, read_deep_compression
from .sharing import CompressOptions, Grid, share_weights
from .writer import compress_state_dict, write_esqz

__all__ = [
    "CompressOptions",
    "EsqzModel",
    "Grid",
    "LayerCost",
    "allocate_bits",
    "compress_state_dict",
    "deep_compression_config",
    "fit_layer_bits",
    "measure_layer_costs",
    "read_deep_compression",
    "read_esqz",
    "share_weights",
    "write_esqz",
]
