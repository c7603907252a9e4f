"""Bits per layer for a size budget, chosen by what each layer's bits cost the model's outputs.

Each conv layer is shared alone (calibrated, :mod:`.calibrated`) on every candidate grid
(a k-means codebook of some width, or a uniform grid of some step), with the rest of the model in
float, and the calibration images measure two things: the layer's bytes on that grid and the mean KL
divergence of the model's class probabilities from the float model's. Summed divergence stands in
for the whole model's (the HAWQ-style additive assumption), and the grids that minimise it within
the byte budget are a multiple-choice knapsack, solved exactly by dynamic programming
(:func:`allocate_bits`).

On SqueezeNet 1.1 at 500 kB this puts the large layers (3x3 expands, the final conv) on uniform
grids of 9-25 values and the small ones on 5-6 bit k-means or fine uniform grids, where a bytes-only
rule takes bits from the final conv first. Needs torch for the measurement; :func:`allocate_bits`
is plain Python.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError, require
from edge_squeeze.labels import Labels
from edge_squeeze.preprocess import PreprocessSpec

from .esqz import _as_array, _dense, _pack, _shared_layer_names, encode_shared
from .sharing import MIN_BITS, CompressOptions, Grid, _layer_grid, _share, _smaller, candidate_grids

log = logging.getLogger("edge_squeeze")


@dataclasses.dataclass(frozen=True)
class LayerCost:
    layer: str  # the weight's state-dict name
    grid: Any  # how it was shared (for edge-squeeze, a compression.Grid); opaque here
    bytes: int
    divergence: float  # mean KL(float model || this layer alone shared) on calibration images


def allocate_bits(costs: Sequence[LayerCost], budget: int, granularity: int = 64) -> Dict[str, LayerCost]:
    """The candidate per layer that minimises summed divergence with summed bytes <= ``budget``.

    Exact over byte sizes rounded up to ``granularity`` (so the result never exceeds the budget).
    """
    by_layer: Dict[str, List[LayerCost]] = {}
    for cost in costs:
        by_layer.setdefault(cost.layer, []).append(cost)
    capacity = budget // granularity
    if capacity < 0:
        raise EdgeSqueezeError(f"no room for the weights in a budget of {budget:,} bytes")
    inf = math.inf
    best = np.zeros(capacity + 1)  # best[c]: least divergence of the layers so far within c units
    picks: List[np.ndarray] = []
    for options in by_layer.values():
        new = np.full(capacity + 1, inf)
        pick = np.full(capacity + 1, -1)
        for i, cost in enumerate(options):
            units = math.ceil(cost.bytes / granularity)
            if units > capacity:
                continue
            candidate = np.full(capacity + 1, inf)
            candidate[units:] = best[: capacity + 1 - units] + cost.divergence
            better = candidate < new
            new[better] = candidate[better]
            pick[better] = i
        best = new
        picks.append(pick)
    if not np.isfinite(best[capacity]):
        smallest = sum(min(c.bytes for c in options) for options in by_layer.values())
        raise EdgeSqueezeError(
            f"the weights need at least {smallest:,} bytes at the lowest width; "
            f"the budget leaves {budget:,}: raise --max-bytes or add --sparsity"
        )
    chosen: Dict[str, LayerCost] = {}
    units = capacity
    for (layer, options), pick in zip(reversed(list(by_layer.items())), reversed(picks)):
        cost = options[int(pick[units])]
        chosen[layer] = cost
        units -= math.ceil(cost.bytes / granularity)
    return {layer: chosen[layer] for layer in by_layer}


def _suffix(model: Any, layer: str) -> Callable[[Any], Any]:
    """A function from the input of ``layer``'s top-level block to the logits, for SqueezeNet-shaped
    models (``features`` and ``classifier`` sequences): measuring a late layer then skips the early
    ones, which hold most of the compute."""
    torch = require("torch", "bit allocation")
    part, index = layer.split(".")[:2]
    if part == "features":
        rest = model.features[int(index) :]
        return lambda x: torch.flatten(model.classifier(rest(x)), 1)
    return lambda x: torch.flatten(model.classifier(x), 1)


def measure_sensitivity(
    model: Any,
    images: np.ndarray,
    grids: Callable[[str], Sequence[Any]],
    share: Callable[[str, np.ndarray, np.ndarray, Any], Any],
    encoded_bytes: Callable[[Any], int],
    batch: int = 64,
    progress: bool = False,
) -> List[LayerCost]:
    """Bytes and output divergence of every conv weight shared alone on each of ``grids(name)``.

    ``share(name, weight, hessian, grid)`` returns the shared weights (with ``.weight()``), and
    ``encoded_bytes`` their encoded size. The model is left as it was.
    """
    torch = require("torch", "bit allocation")
    from .calibrated import conv_layers_in_order, input_statistics, layer_inputs

    model.eval()
    modules = dict(model.named_modules())
    layers = conv_layers_in_order(model)
    batches = [torch.from_numpy(images[i : i + batch]) for i in range(0, len(images), batch)]
    with torch.no_grad():
        reference = [torch.log_softmax(model(x), 1) for x in batches]
    iterator: Any = layers
    if progress:
        from edge_squeeze.progress import progress_bar

        iterator = progress_bar(layers, desc="layer sensitivity", unit="layer")
    costs: List[LayerCost] = []
    for layer in iterator:
        conv = modules[layer]
        h = input_statistics(conv, layer_inputs(model, layer, images))
        block = ".".join(layer.split(".")[:2])
        block_inputs = layer_inputs(model, block, images, batch=batch)
        run = _suffix(model, layer)
        weight = conv.weight.detach().cpu().numpy().copy()
        name = f"{layer}.weight"
        try:
            for grid in grids(name):
                shared = share(name, weight, h, grid)
                new = shared.weight()
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(new))
                    divergence = sum(
                        float(torch.sum(ref.exp() * (ref - torch.log_softmax(run(x), 1))))
                        for x, ref in zip(block_inputs, reference)
                    ) / len(images)
                # float32 rounding can leave a hair below zero when nothing changed
                costs.append(LayerCost(name, grid, encoded_bytes(shared), max(divergence, 0.0)))
        finally:
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(weight))
    return costs


__all__ = ["LayerCost", "allocate_bits", "measure_sensitivity"]


def measure_layer_costs(
    model: Any, calibration: np.ndarray, options: CompressOptions, progress: bool = False
) -> List[Any]:
    """Bytes and output divergence of each conv layer on each of its :func:`candidate_grids`
    (:func:`measure_sensitivity`; ~10 minutes for SqueezeNet 1.1 on 2 cores)."""
    return measure_sensitivity(
        model,
        calibration,
        grids=lambda name: candidate_grids(name, options),
        share=lambda name, w, h, grid: _share(name, w, options, grid, h),
        encoded_bytes=lambda shared: len(encode_shared(shared, options.index_bits)[1]),
        progress=progress,
    )


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
    change the model's outputs within the budget (:func:`allocate_bits`); the calibrated codes'
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

    def prefix(name: str) -> str:
        return name[: -len(".weight")] if name.endswith(".weight") else name

    def options_for(grids: Dict[str, Grid]) -> CompressOptions:
        """``options`` naming each grid that differs from ``--bits`` (the header the file will carry)."""
        layer_bits = tuple(
            (prefix(n), g.bits) for n, g in grids.items() if g.levels is None and g.bits != options.bits
        )
        layer_levels = tuple((prefix(n), g.levels) for n, g in grids.items() if g.levels is not None)
        return dataclasses.replace(options, layer_bits=layer_bits, layer_levels=layer_levels)

    def file_size(grids: Dict[str, Grid]) -> int:
        entries, bodies = [], []
        for name, a in arrays.items():
            entry, body = encode(name, grids[name]) if name in grids else _dense(a)
            entries.append({**entry, "name": name, "bytes": len(body)})
            bodies.append(body)
        return len(_pack(config, labels, spec, options_for(grids), entries, bodies))

    grids = {name: _layer_grid(name, options) for name in convs}
    full = file_size(grids)
    if costs is not None and full > max_bytes:
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

    log.info(
        "to fit %s bytes: %s",
        f"{max_bytes:,}",
        ", ".join(f"{prefix(n)} {g}" for n, g in grids.items() if g != Grid(options.bits))
        or f"{options.bits} bits, no layer lowered",
    )
    return options_for(grids)
