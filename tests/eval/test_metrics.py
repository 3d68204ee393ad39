import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dfdc.eval.metrics import binary_metrics, bootstrap_ci, per_group, per_method, weighted_auc


def _noisy(n, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    p = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, y.size), 0.001, 0.999)
    return y, p


def test_weighted_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.integers(0, 2, 40)
        p = rng.integers(0, 6, 40) / 5  # many ties
        w = rng.integers(0, 4, 40).astype(float)
        assert weighted_auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w))


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_videos():
    widths = []
    for n in (48, 480):
        y, p = _noisy(n)
        m, ci = binary_metrics(y, p), bootstrap_ci(y, p, n_boot=500, seed=0)
        assert ci["auc_lo"] <= m["auc"] <= ci["auc_hi"]
        assert ci["log_loss_lo"] <= m["log_loss"] <= ci["log_loss_hi"]
        widths.append((ci["auc_hi"] - ci["auc_lo"], ci["log_loss_hi"] - ci["log_loss_lo"]))
    assert widths[1][0] < widths[0][0] * 0.6 and widths[1][1] < widths[0][1] * 0.8  # 1/sqrt(10) ~ 0.32 expected
    assert bootstrap_ci(*_noisy(48), n_boot=200, seed=3) == bootstrap_ci(*_noisy(48), n_boot=200, seed=3)


def test_resampling_whole_groups_widens_the_interval_of_correlated_videos():
    """An original and its two fakes are hard or easy together: 16 independent groups, not 48 videos."""
    rng = np.random.default_rng(0)
    y, p, groups = [], [], []
    for g in range(16):
        hard = rng.uniform(0, 0.6)  # how wrong every video of this group is
        y += [0, 1, 1]
        p += [0.2 + hard, 0.8 - hard, 0.8 - hard]
        groups += [g] * 3
    alone = bootstrap_ci(y, p, n_boot=1000)
    grouped = bootstrap_ci(y, p, groups, n_boot=1000)
    assert grouped["log_loss_hi"] - grouped["log_loss_lo"] > 1.3 * (alone["log_loss_hi"] - alone["log_loss_lo"])


def test_bootstrap_without_both_classes_is_nan():
    ci = bootstrap_ci([1, 1, 1], [0.2, 0.9, 0.7], n_boot=50)
    assert all(math.isnan(v) for v in ci.values())


def test_per_method_scores_each_method_against_every_real():
    t = pd.DataFrame({"video": list("abcdef"), "label": [0, 0, 1, 1, 1, 1],
                      "method": [None, "", "Deepfakes", "Deepfakes", "FaceSwap", "FaceSwap"],
                      "p": [0.1, 0.2, 0.9, 0.8, 0.15, 0.3]})
    out = per_method(t, {"m": "p"})
    assert set(out) == {"Deepfakes", "FaceSwap"}
    assert out["Deepfakes"]["m"]["n"] == 4 and out["Deepfakes"]["m"]["auc"] == 1.0
    assert out["FaceSwap"]["m"]["auc"] == pytest.approx(0.75)  # 0.15 sits below 0.2, above 0.1
    by = per_group(t.assign(dataset=["x", "x", "x", "y", "y", "y"]), "dataset", {"m": "p"})
    assert by["x"]["m"]["n"] == 3 and by["y"]["m"]["n_real"] == 0
