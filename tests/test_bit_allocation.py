from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_squeeze.compress.budget import LayerCost, allocate_bits
from edge_squeeze.errors import EdgeSqueezeError


def _random_costs(seed: int, layers: int = 5):
    rng = np.random.default_rng(seed)
    costs = []
    for i in range(layers):
        size = int(rng.integers(200, 5000))
        for bits in range(2, 7):
            # more bits: more bytes, less divergence, at a layer-specific rate
            costs.append(LayerCost(f"l{i}.weight", bits, size * bits, float(rng.random() * 4.0**-bits)))
    return costs


@pytest.mark.parametrize("seed", range(4))
def test_allocation_is_the_best_within_the_budget(seed):
    costs = _random_costs(seed)
    table = {(c.layer, c.grid): c for c in costs}
    layers = list(dict.fromkeys(c.layer for c in costs))
    total_at = {bits: sum(table[layer, bits].bytes for layer in layers) for bits in range(2, 7)}
    budget = (total_at[3] + total_at[5]) // 2
    chosen = {layer: c.grid for layer, c in allocate_bits(costs, budget, granularity=1).items()}
    assert list(chosen) == layers
    assert sum(table[layer, b].bytes for layer, b in chosen.items()) <= budget
    best = min(
        (sum(table[layer, b].divergence for layer, b in zip(layers, combo)), combo)
        for combo in itertools.product(range(2, 7), repeat=len(layers))
        if sum(table[layer, b].bytes for layer, b in zip(layers, combo)) <= budget
    )
    got = sum(table[layer, b].divergence for layer, b in chosen.items())
    assert got == pytest.approx(best[0])
    # coarser byte units never overshoot the budget
    coarse = allocate_bits(costs, budget, granularity=64)
    assert sum(c.bytes for c in coarse.values()) <= budget


def test_allocation_that_cannot_fit_says_how_much_it_needs():
    costs = _random_costs(0, layers=2)
    smallest = sum(min(c.bytes for c in costs if c.layer == layer) for layer in ("l0.weight", "l1.weight"))
    with pytest.raises(EdgeSqueezeError, match=f"{smallest:,} bytes"):
        allocate_bits(costs, smallest - 1, granularity=1)


def test_sensitivity_is_measured_without_changing_the_model(narrow_checkpoint, pattern_dataset):
    torch = pytest.importorskip("torch")
    from edge_squeeze.compress.budget import measure_sensitivity
    from edge_squeeze.compress.esqz import encode_shared
    from edge_squeeze.compress.sharing import share_weights
    from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images
    from edge_squeeze.models import load_model

    bundle = load_model(narrow_checkpoint)
    model = bundle.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = CalibrationSet(select_calibration_images(pattern_dataset / "train", 16), bundle.preprocess).data
    costs = measure_sensitivity(
        model,
        images,
        grids=lambda name: (2, 6),
        share=lambda name, w, h, b: share_weights(w, 0.0, b, h),
        encoded_bytes=lambda shared: len(encode_shared(shared, 4)[1]),
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    convs = [k for k, v in before.items() if v.ndim == 4]
    assert [c.layer for c in costs] == [name for name in convs for _ in (2, 6)]
    by = {(c.layer, c.grid): c for c in costs}
    for name in convs:
        assert by[name, 2].bytes < by[name, 6].bytes
        assert by[name, 6].divergence >= 0
    # two bits disturb the outputs more than six, summed over the model
    assert sum(by[n, 2].divergence for n in convs) > 10 * sum(by[n, 6].divergence for n in convs)


def test_calibrated_fit_uses_measured_sensitivity_and_fits(narrow_checkpoint, pattern_dataset, tmp_path):
    pytest.importorskip("torch")
    from edge_squeeze.compress import CompressOptions, read_esqz, write_esqz
    from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images
    from edge_squeeze.models import load_model

    def bundle():
        return load_model(narrow_checkpoint)

    b = bundle()
    images = CalibrationSet(select_calibration_images(pattern_dataset / "train", 16), b.preprocess).data
    args = (b.config.to_dict(), b.labels, b.preprocess, CompressOptions(bits=4))
    full = write_esqz(tmp_path / "full.esqz", b.model.state_dict(), *args)
    budget = int(full * 0.8)
    b = bundle()
    size = write_esqz(
        tmp_path / "fit.esqz",
        b.model.state_dict(),
        *args,
        model=b.model,
        calibration=images,
        max_bytes=budget,
    )
    assert size <= budget
    compression = read_esqz(tmp_path / "fit.esqz").compression
    layer_bits, layer_levels = dict(compression["layer_bits"]), dict(compression["layer_levels"])
    assert layer_bits or layer_levels
    assert all(2 <= v < 4 for v in layer_bits.values())
    # uniform grids that fit a 4-bit codebook: at most 15 values
    assert all(2 * v + 1 <= 15 for v in layer_levels.values())
