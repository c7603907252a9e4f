"""The calibration range estimators on synthetic histograms, where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.export.ranges import HIST_BINS, TensorStats, _entropy_threshold_bin, compute_ranges


def _stats(samples: np.ndarray, name: str = "t") -> TensorStats:
    absmax = float(np.abs(samples).max())
    hist, _ = np.histogram(np.abs(samples), bins=HIST_BINS, range=(0.0, absmax))
    return TensorStats(
        [name], np.array([samples.min()]), np.array([samples.max()]), hist[None, :].astype(np.float64)
    )


def test_entropy_keeps_a_uniform_distribution_whole():
    hist = np.full(1024, 50.0)
    assert _entropy_threshold_bin(hist) == 1024


def test_entropy_clips_a_long_sparse_tail():
    """A half-normal core (|x| of a Gaussian, ~200 bins wide) and single outliers out to the maximum:
    the range that keeps the core's shape at 128 levels ends where the core does, not at the maximum
    (where each level would span 16 bins and blur it)."""
    bins = np.arange(2048)
    hist = np.round(1e6 * np.exp(-((bins / 60.0) ** 2)))
    hist[::97] += 1  # one outlier every 97 bins, to the end
    assert 150 <= _entropy_threshold_bin(hist) <= 260


def test_entropy_with_fewer_bins_than_levels_or_no_data_keeps_everything():
    assert _entropy_threshold_bin(np.ones(100)) == 100
    assert _entropy_threshold_bin(np.zeros(2048)) == 2048


def test_percentile_range_cuts_at_the_quantile():
    rng = np.random.default_rng(0)
    samples = np.concatenate([rng.uniform(-1, 1, 99_000), rng.uniform(-100, 100, 1_000)])
    ranges = compute_ranges(_stats(samples), "percentile", percentile=99.0)
    lo, hi = ranges["t"]
    # 99 % of |x| lies below ~1 (the uniform core plus 1 % of the tail): the range ends close to it
    assert -2.5 < lo < 0 < hi < 2.5
    assert compute_ranges(_stats(samples), "percentile", percentile=100.0)["t"][1] == pytest.approx(
        np.abs(samples).max(), rel=1e-3
    )


def test_minmax_is_the_observed_range_and_ranges_never_exceed_it():
    rng = np.random.default_rng(1)
    samples = np.maximum(rng.normal(0, 1, 50_000), 0) * 3  # a ReLU output: lo = 0
    stats = _stats(samples)
    assert compute_ranges(stats, "minmax")["t"] == (pytest.approx(0.0), pytest.approx(samples.max()))
    for method in ("entropy", "percentile"):
        lo, hi = compute_ranges(stats, method)["t"]
        assert lo == pytest.approx(0.0) and 0 < hi <= samples.max() + 1e-6
    with pytest.raises(EdgeSqueezeError, match="calibration method"):
        compute_ranges(stats, "kl")


def test_an_all_zero_tensor_keeps_its_zero_range():
    assert compute_ranges(_stats(np.zeros(100)), "entropy")["t"] == (0.0, 0.0)
