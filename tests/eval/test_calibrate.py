import numpy as np
import pandas as pd
import pytest

from dfdc.config.evaluate import EvaluateParams
from dfdc.eval.calibrate import expected_calibration_error, fit_temperature, reliability
from dfdc.eval.metrics import log_loss
from dfdc.eval.report import evaluate
from dfdc.inference.combine import apply_temperature


def _overconfident(n=400, seed=0):
    """Scores right 75% of the time but claiming 99%: temperature must soften them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    right = rng.uniform(size=n) < 0.75
    p = np.where(right == (y == 1), 0.99, 0.01)
    return y, p


def test_temperature_softens_overconfident_scores_and_lowers_the_log_loss():
    y, p = _overconfident()
    t = fit_temperature(y, p)
    assert t > 1
    assert log_loss(y, apply_temperature(p, t)) < log_loss(y, p) - 0.5
    assert apply_temperature([0.5], 3.0)[0] == pytest.approx(0.5)
    assert fit_temperature([1, 1], [0.2, 0.4]) == 1.0  # one class: nothing to fit


def test_ece_against_a_hand_value():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.15, 0.85, 0.95])
    # bins [0, .1): {0.05 | 0} -> 0.05; [.1, .2): {0.15, 0.15 | 0, 1} -> |0.5 - 0.15| = 0.35; [.8, .9): 0.15; [.9, 1]: 0.05
    expected = (1 * 0.05 + 2 * 0.35 + 1 * 0.15 + 1 * 0.05) / 5
    assert expected_calibration_error(y, p) == pytest.approx(expected)
    table = reliability(y, p)
    assert table["n"].tolist() == [1, 2, 1, 1] and table["fraction_positive"].tolist() == [0, 0.5, 1, 1]
    assert expected_calibration_error([1], [1.0]) == 0.0  # p = 1 falls in the last bin


def _tables(n=60, seed=2, thresholds=False):
    """Two over-confident models on n videos in originals of 3 (a real and two fakes)."""
    rng = np.random.default_rng(seed)
    videos = [f"v{i:03d}" for i in range(n)]
    y = np.array([0, 1, 1] * (n // 3))
    out = {}
    for m in ("a", "b"):
        right = rng.uniform(size=n) < 0.8
        p = np.where(right == (y == 1), rng.uniform(0.9, 0.99, n), rng.uniform(0.01, 0.1, n))
        t = pd.DataFrame({"video": videos, "label": y, "prob": p, "fold": 0,
                          "original": [videos[i - i % 3] if i % 3 else None for i in range(n)]})
        if thresholds:  # as cross-fitted thresholds leave them: each split's view of every video
            t["split"] = [(i // 3) % 2 for i in range(n)]
            for k in (0, 1):
                t[f"prob_fit{k}"] = np.where(t["split"] == k, p, np.clip(p + rng.normal(0, 0.05, n), 0.01, 0.99))
        out[m] = t
    return out


@pytest.mark.parametrize("thresholds", [False, True])
def test_the_fitted_chain_never_lets_a_videos_label_reach_its_own_score(thresholds):
    """Fitted weights, then a temperature (after cross-fitted thresholds): flip one label, its score stays."""
    preds = _tables(thresholds=thresholds)
    _, base = evaluate(preds, params=EvaluateParams(method="fitted", calibrate=True, bootstrap=0))
    for i in (0, 17, 41):
        flipped = {m: t.assign(label=np.where(np.arange(len(t)) == i, 1 - t["label"], t["label"]))
                   for m, t in preds.items()}
        _, again = evaluate(flipped, params=EvaluateParams(method="fitted", calibrate=True, bootstrap=0))
        v = preds["a"]["video"][i]
        assert again.set_index("video").loc[v, "prob"] == pytest.approx(base.set_index("video").loc[v, "prob"])
        assert not np.allclose(again["prob"], base["prob"])  # the others' scores do move: the label reached them
        for m in ("a", "b", "ensemble"):
            assert again.attrs["calibrated"][m][base["video"].tolist().index(v)] == pytest.approx(
                base.attrs["calibrated"][m][base["video"].tolist().index(v)])


def test_calibration_before_and_after():
    doc, ens = evaluate(_tables(n=300, seed=4), params=EvaluateParams(bootstrap=0))
    c = doc["calibration"]["a"]
    assert c["temperature"] > 1 and len(c["split_temperatures"]) == 2
    assert c["ece_after"] < c["ece_before"] and c["log_loss_after"] < c["log_loss_before"]
    assert ens.attrs["calibrated"]["ensemble"].shape == (300,)


def test_degraded_videos_take_their_clean_twins_split_fit():
    preds = _tables(n=60)
    _, clean = evaluate(preds, params=EvaluateParams(method="fitted", calibrate=True, bootstrap=0))
    degraded = {m: t.assign(prob=np.clip(t["prob"] * 0.8 + 0.1, 0, 1)) for m, t in preds.items()}
    _, d = evaluate(degraded, fitted=clean.attrs, params=EvaluateParams(bootstrap=0))
    a, b = (degraded[m].set_index("video")["prob"] for m in ("a", "b"))
    for k, videos in enumerate(clean.attrs["split_videos"]):
        w, t = clean.attrs["split_weights"][k], clean.attrs["split_temperatures"][k]
        expected = apply_temperature(w["a"] * a.loc[videos] + w["b"] * b.loc[videos], t)
        assert d.set_index("video").loc[videos, "prob"].to_numpy() == pytest.approx(expected)
    # no clean split could be made (too few originals): what ships
    _, alone = evaluate(degraded, fitted={"split_videos": [], "split_weights": [], "weights": clean.attrs["weights"]},
                        params=EvaluateParams(bootstrap=0))
    w = clean.attrs["weights"]
    assert alone.set_index("video")["prob"].to_numpy() == pytest.approx((w["a"] * a + w["b"] * b).to_numpy())
