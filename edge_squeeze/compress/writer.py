"""Compressing a model into an ``.esqz`` file: every conv weight shared (on calibration images when
given), biases in float16, and, with a byte budget, the grids that fit it (:mod:`.budget`)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.fileio import write_bytes_atomic
from edge_squeeze.labels import Labels
from edge_squeeze.preprocess import PreprocessSpec

from .budget import fit_layer_bits, measure_layer_costs
from .esqz import _as_array, _dense, _pack, _shared_layer_names, encode_shared
from .sharing import CompressOptions, SharedWeights, _layer_grid, _share

log = logging.getLogger("edge_squeeze")


def compress_state_dict(
    state: Dict[str, Any],
    options: CompressOptions,
    model: Any = None,
    calibration: Optional[np.ndarray] = None,
    progress: bool = False,
) -> Tuple[List[Dict[str, Any]], List[bytes]]:
    """Header entries and bodies for every tensor: conv weights shared, biases float16.

    With ``calibration`` images (and the torch ``model`` holding ``state``), codes are chosen layer
    by layer to keep each layer's outputs (:mod:`.calibrated`); the model is left holding
    the compressed weights.
    """
    shared: Dict[str, SharedWeights] = {}
    if calibration is not None:
        from .calibrated import share_sequentially

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
