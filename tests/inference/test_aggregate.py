"""Video-level aggregation of frame probabilities."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dfdc.inference.aggregate import (
    AGGREGATORS, aggregate, confidence_weighted, confident_strategy, mean_strategy,
)


def frames(high: int, low: int, rest: int, rest_value: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``high`` frames above 0.8, ``low`` below 0.2 and ``rest`` at ``rest_value``."""
    hi = np.linspace(0.81, 0.99, high)
    lo = np.linspace(0.01, 0.19, low)
    p = np.concatenate([hi, lo, np.full(rest, rest_value)])
    return np.random.default_rng(0).permutation(p), hi, lo


def test_confident_many_fakes_takes_their_mean():
    p, hi, _ = frames(20, 0, 12, rest_value=0.3)
    assert confident_strategy(p) == pytest.approx(hi.mean())
    assert hi.mean() == pytest.approx(0.9)


def test_confident_mostly_real_takes_mean_of_real():
    p, _, lo = frames(2, 30, 0)
    assert confident_strategy(p) == pytest.approx(lo.mean())
    assert lo.mean() == pytest.approx(0.1)


def test_confident_otherwise_plain_mean():
    p, _, _ = frames(5, 10, 17)
    assert confident_strategy(p) == pytest.approx(p.mean())


@pytest.mark.parametrize("size, needed", [(32, 13), (20, 12), (40, 17)])
def test_confident_fake_count_boundary(size, needed):
    # needs fakes > size // 2.5 (32 -> 12.0, 40 -> 16.0) and fakes > 11
    below, _, _ = frames(needed - 1, 0, size - needed + 1)
    assert confident_strategy(below) == pytest.approx(below.mean())
    at, hi, _ = frames(needed, 0, size - needed)
    assert confident_strategy(at) == pytest.approx(hi.mean())


def test_confident_real_count_boundary():
    # needs more than 0.9 * 32 = 28.8 frames below 0.2
    p, _, lo = frames(0, 29, 3)
    assert confident_strategy(p) == pytest.approx(lo.mean())
    p, _, _ = frames(0, 28, 4)
    assert confident_strategy(p) == pytest.approx(p.mean())


def test_confident_threshold_is_strict():
    p = np.array([0.8] * 20 + [0.5] * 12)
    assert confident_strategy(p) == pytest.approx(p.mean())
    assert confident_strategy(p, t=0.79) == pytest.approx(0.8)


def test_confidence_weighted_by_hand():
    fake = min(0.5 + 0.4 ** 0.65, 0.99)  # 1.051 clipped to 0.99
    real = 0.5 - 0.3 ** 0.65
    expected = (fake * 0.4001 + real * 0.3001) / (0.4001 + 0.3001)
    assert fake == 0.99
    assert confidence_weighted([0.9, 0.2]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.584028, abs=1e-6)
    assert confidence_weighted([0.1, 0.8]) == pytest.approx(1 - expected, rel=1e-12)


def test_confidence_weighted_power():
    assert confidence_weighted([0.75], power=1.0) == pytest.approx(0.75)
    assert confidence_weighted([0.6], power=0.5) == pytest.approx(0.5 + math.sqrt(0.1))
    assert confidence_weighted([0.75], power=0.5) == 0.99  # 0.5 + sqrt(0.25) clipped


def test_mean_strategy():
    assert mean_strategy([0.1, 0.2, 0.6]) == pytest.approx(0.3)


@pytest.mark.parametrize("strategy", sorted(AGGREGATORS))
def test_empty_or_all_nan_falls_back(strategy):
    assert aggregate([], strategy) == 0.5
    assert aggregate(np.array([np.nan, np.nan]), strategy, fallback=0.3) == 0.3


def test_nans_are_ignored():
    assert aggregate([0.2, np.nan, 0.4], "mean") == pytest.approx(0.3)
    p, hi, _ = frames(20, 0, 12, rest_value=0.3)
    assert aggregate(np.append(p, [np.nan] * 40), "confident") == pytest.approx(hi.mean())


def test_strategies_reject_empty_input():
    with pytest.raises(ValueError, match="no frame probabilities"):
        confident_strategy([])


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="unknown aggregation strategy 'median'.*confident, mean, thresholds, weighted"):
        aggregate([0.5], "median")


def test_aggregate_tracks_takes_the_most_fake_person():
    from dfdc.inference.aggregate import aggregate_tracks

    p = [0.1, 0.1, 0.9, 0.9, 0.1, 0.95]
    tracks = [0, 0, 1, 1, 0, 1]
    assert aggregate_tracks(p, tracks, "mean") == pytest.approx((0.9 + 0.9 + 0.95) / 3)
    # a one-frame flash does not decide the video while longer tracks exist
    assert aggregate_tracks([0.1, 0.1, 0.1, 0.99], [0, 0, 0, 7], "mean") == pytest.approx(0.1)
    assert aggregate_tracks([0.99], [7], "mean") == pytest.approx(0.99)
    assert aggregate_tracks([], [], "mean") == 0.5
