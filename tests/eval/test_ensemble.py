import json
import math

import numpy as np
import pandas as pd
import pytest

from dfdc.config.evaluate import EvaluateParams
from dfdc.eval.ensemble import ensemble, fit_weights
from dfdc.eval.metrics import binary_metrics, equal_error_rate, log_loss
from dfdc.eval.plots import write_plots
from dfdc.eval.report import evaluate, format_metrics_table
from dfdc.inference.combine import apply_temperature


def _table(videos, labels, probs, folds=None):
    folds = [0] * len(videos) if folds is None else folds
    return pd.DataFrame({"video": videos, "label": labels, "prob": probs, "fold": folds})


@pytest.fixture
def perfect_and_noise():
    rng = np.random.default_rng(3)
    n = 200
    y = rng.integers(0, 2, n)
    videos = [f"v{i:03d}.mp4" for i in range(n)]
    folds = rng.integers(0, 5, n)
    a = _table(videos, y, np.where(y == 1, 0.95, 0.05), folds)
    b = _table(videos, y, rng.uniform(size=n), folds)
    return {"A": a, "B": b}


def test_log_loss_hand_computed():
    assert log_loss([1, 0], [0.9, 0.2]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2, abs=1e-12)


def test_log_loss_clipping_keeps_it_finite():
    ll = log_loss([1, 0], [0.0, 1.0])
    assert math.isfinite(ll)
    hi = 1 - 1e-15
    assert ll == pytest.approx(-(math.log(1e-15) + math.log(1 - hi)) / 2)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-(math.log(hi) + math.log(1 - 1e-15)) / 2)
    assert log_loss([1], [0.0], bounds=(0.01, 0.99)) == pytest.approx(-math.log(0.01))


def test_log_loss_rejects_bad_input():
    with pytest.raises(ValueError):
        log_loss([1, 0], [0.5])
    with pytest.raises(ValueError):
        log_loss([1, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        log_loss([1, 0], [0.5, 1.5])


def test_binary_metrics_perfect_ranking():
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert m["auc"] == pytest.approx(0.75)
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8])
    assert m["auc"] == 1.0
    assert m["ap"] == 1.0
    assert m["eer"] == 0.0
    assert m["accuracy"] == 1.0
    assert (m["n"], m["n_real"], m["n_fake"]) == (4, 2, 2)


def test_binary_metrics_one_class_is_nan_but_serialisable():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(m["auc"]) and math.isnan(m["ap"]) and math.isnan(m["eer"])
    assert math.isnan(m["log_loss_real"])
    assert m["log_loss_fake"] == pytest.approx(-(math.log(0.2) + math.log(0.7) + math.log(0.9)) / 3)
    assert (m["n"], m["n_real"], m["n_fake"]) == (3, 0, 3)
    for v in m.values():
        assert type(v) in (int, float)
    json.dumps(m)


def test_accuracy_and_per_class_log_loss():
    y = [0, 0, 1, 1, 1]
    p = [0.2, 0.6, 0.5, 0.9, 0.3]
    m = binary_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 5)  # 0.2 real ok, 0.6 wrong, 0.5 fake ok, 0.9 ok, 0.3 wrong
    assert m["log_loss_real"] == pytest.approx(-(math.log(0.8) + math.log(0.4)) / 2)
    assert m["log_loss_fake"] == pytest.approx(-(math.log(0.5) + math.log(0.9) + math.log(0.3)) / 3)
    assert m["log_loss"] == pytest.approx((2 * m["log_loss_real"] + 3 * m["log_loss_fake"]) / 5)


def test_eer_interpolated_and_random():
    # ROC: (0,0) (0,.5) (.5,.5) (.5,1) (1,1); FPR = FNR at 0.5 on the flat segment
    assert equal_error_rate([0, 0, 1, 1], [0.3, 0.6, 0.4, 0.8]) == pytest.approx(0.5)
    # ROC: (0,0) (0,2/3) (1/2,2/3) (1/2,1) (1,1); FNR = 1/3 = FPR a third of the way along the flat segment
    assert equal_error_rate([0, 0, 1, 1, 1], [0.1, 0.5, 0.4, 0.6, 0.9]) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    assert equal_error_rate(y, rng.uniform(size=5000)) == pytest.approx(0.5, abs=0.05)


def test_eer_matches_threshold_sweep_on_continuous_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 4000)
    p = 1 / (1 + np.exp(-(rng.normal(size=4000) + 1.5 * y)))
    ts = np.linspace(0, 1, 2001)
    fpr = np.array([(p[y == 0] >= t).mean() for t in ts])
    fnr = np.array([(p[y == 1] < t).mean() for t in ts])
    i = np.argmin(np.abs(fpr - fnr))
    assert equal_error_rate(y, p) == pytest.approx((fpr[i] + fnr[i]) / 2, abs=0.01)


def test_ensemble_equal_is_plain_mean():
    a = _table(["x", "y", "z"], [0, 1, 1], [0.1, 0.7, 0.4], [0, 1, 2])
    b = _table(["z", "y", "x"], [1, 1, 0], [0.8, 0.5, 0.3], [2, 1, 0])
    e = ensemble({"a": a, "b": b})
    assert list(e.columns) == ["video", "label", "fold", "prob", "prob_a", "prob_b", "scored_a", "scored_b"]
    assert e["video"].tolist() == ["x", "y", "z"]
    assert e["prob"].tolist() == pytest.approx([0.2, 0.6, 0.6])
    assert e["label"].tolist() == [0, 1, 1] and e["fold"].tolist() == [0, 1, 2]
    assert e.attrs["weights"] == {"a": 0.5, "b": 0.5}
    assert e.attrs["partial"] == 0


def test_ensemble_given_weights_are_normalised():
    a = _table(["x", "y"], [0, 1], [0.2, 0.6])
    b = _table(["x", "y"], [0, 1], [0.6, 1.0])
    e = ensemble({"a": a, "b": b}, weights={"a": 3, "b": 1}, method="given")
    assert e.attrs["weights"] == pytest.approx({"a": 0.75, "b": 0.25})
    assert e["prob"].tolist() == pytest.approx([0.3, 0.7])


@pytest.mark.parametrize(
    "weights, match",
    [({"a": 1.0, "b": -0.5}, "'b'"), ({"a": 1.0}, "'b'"), ({"a": 1, "b": 1, "c": 1}, "c"), (None, "weights")],
)
def test_ensemble_given_weight_errors(weights, match):
    a = _table(["x"], [0], [0.2])
    b = _table(["x"], [0], [0.4])
    with pytest.raises(ValueError, match=match):
        ensemble({"a": a, "b": b}, weights=weights, method="given")


def test_ensemble_rejects_unknown_method_and_label_mismatch():
    a = _table(["x"], [0], [0.2])
    with pytest.raises(ValueError, match="method"):
        ensemble({"a": a}, method="median")
    with pytest.raises(ValueError, match="method"):
        evaluate({"a": a}, params=EvaluateParams(method="median", bootstrap=0))
    with pytest.raises(ValueError, match="disagree"):
        ensemble({"a": a, "b": _table(["x"], [1], [0.4])})


def test_a_model_that_did_not_score_a_video_is_left_out_of_it_as_dfdc_predict_leaves_it_out():
    """One rule for a missing model (`combine`): the others' weights renormalised; 0.5 when none scored."""
    from dfdc.inference.combine import combine

    a = _table(["x", "y", "z", "v"], [0, 1, 1, 0], [0.1, 0.7, 0.4, 0.5]).assign(reason=["", "", "", "no face"])
    b = _table(["x", "y", "w", "v"], [0, 1, 0, 0], [0.3, 0.5, 0.2, 0.5]).assign(reason=["", "", "", "no face"])
    e = ensemble({"a": a, "b": b}, weights={"a": 3, "b": 1}, method="given").set_index("video")
    assert sorted(e.index) == ["v", "w", "x", "y", "z"] and e.attrs["partial"] == 3  # z, w alone; v by none
    assert e.loc["x", "prob"] == pytest.approx(0.75 * 0.1 + 0.25 * 0.3)
    assert e.loc["z", "prob"] == pytest.approx(0.4) and e.loc["w", "prob"] == pytest.approx(0.2)
    assert e.loc["v", "prob"] == 0.5 and e.loc["z", "prob_b"] == 0.5 and not e.loc["z", "scored_b"]
    got = combine([[0.1, 0.3], [0.4, np.nan], [np.nan, np.nan]], [3, 1], temperature=2.0)
    assert got[:2] == pytest.approx([apply_temperature(0.15, 2.0), apply_temperature(0.4, 2.0)])
    assert np.isnan(got[2])
    with pytest.raises(ValueError, match="2 weights for 3 models"):
        combine([[0.1, 0.2, 0.3]], [1, 1])


def test_fitted_weights_favour_perfect_model_and_are_cross_fitted(perfect_and_noise):
    doc, e = evaluate(perfect_and_noise, params=EvaluateParams(method="fitted", bootstrap=0))
    assert doc["ensemble"]["cross_fitted"] is True
    assert e.attrs["weights"]["A"] > 0.8
    assert sum(e.attrs["weights"].values()) == pytest.approx(1.0)
    splits, split_w = e.attrs["split_videos"], e.attrs["split_weights"]
    assert len(splits) == len(split_w) == 2
    scored = [v for s in splits for v in s]
    assert sorted(scored) == sorted(e["video"]) and len(set(scored)) == len(scored)
    probs = e.set_index("video")
    for videos, w in zip(splits, split_w):
        rows = probs.loc[videos]
        expected = w["A"] * rows["prob_A"] + w["B"] * rows["prob_B"]
        assert rows["prob"].to_numpy() == pytest.approx(expected.to_numpy())
        others = probs.drop(index=videos)
        refit = fit_weights(others["label"], others[["prob_A", "prob_B"]].to_numpy())
        assert refit == pytest.approx([w["A"], w["B"]], abs=1e-6)


def test_cross_fitting_differs_from_in_sample_fit():
    """Weights fitted on the scored videos would exploit their noise; cross-fitting must not."""
    rng = np.random.default_rng(5)
    n = 40
    y = rng.integers(0, 2, n)
    videos = [f"v{i}" for i in range(n)]
    preds = {f"m{k}": _table(videos, y, np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1))
             for k in range(4)}
    _, e = evaluate(preds, params=EvaluateParams(method="fitted", splits=4, bootstrap=0))
    assert len(e.attrs["split_videos"]) == 4
    w_full = np.array([e.attrs["weights"][k] for k in preds])
    in_sample = e[[f"prob_{k}" for k in preds]].to_numpy() @ w_full
    assert not np.allclose(e["prob"].to_numpy(), in_sample)
    labels = e["label"].to_numpy()  # the ensemble's rows are sorted by video name
    assert log_loss(labels, in_sample) <= log_loss(labels, e["prob"]) + 1e-9


@pytest.mark.parametrize("n_splits", [1, 11])
def test_fitted_split_count_is_bounded(perfect_and_noise, n_splits):
    with pytest.raises(ValueError, match="n_splits"):
        evaluate(perfect_and_noise, params=EvaluateParams(method="fitted", splits=n_splits, bootstrap=0))


def test_evaluate_keys(perfect_and_noise):
    m, _ = evaluate(perfect_and_noise, params=EvaluateParams(method="fitted", bootstrap=100))
    assert set(m) == {"models", "ensemble", "calibration"}
    assert set(m["models"]) == {"A", "B"}
    assert m["models"]["A"]["auc"] == 1.0
    ens = m["ensemble"]
    assert {"log_loss", "auc", "ap", "eer", "accuracy", "log_loss_real", "log_loss_fake", "auc_lo", "auc_hi",
            "log_loss_lo", "log_loss_hi", "n", "n_real", "n_fake", "method", "weights"} <= set(ens)
    assert ens["method"] == "fitted" and ens["weights"]["A"] > 0.8
    assert ens["log_loss"] < m["models"]["B"]["log_loss"]
    json.loads(json.dumps(m))


def test_write_plots(tmp_path, perfect_and_noise):
    e = ensemble(perfect_and_noise)
    paths = write_plots(perfect_and_noise, e, tmp_path / "plots")
    names = {p.name for p in paths}
    assert names == {"roc.csv", "calibration.csv", "roc.png", "calibration.png", "models.png"}
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    roc = pd.read_csv(tmp_path / "plots" / "roc.csv")
    assert list(roc.columns) == ["model", "fpr", "tpr"]
    assert set(roc["model"]) == {"A", "B", "ensemble"}
    assert roc["fpr"].between(0, 1).all() and roc["tpr"].between(0, 1).all()
    cal = pd.read_csv(tmp_path / "plots" / "calibration.csv")
    assert list(cal.columns) == ["model", "mean_predicted", "fraction_positive"]
    a = cal[cal["model"] == "A"]
    assert len(a) == 2  # only the bins holding 0.05 and 0.95 are non-empty
    assert a["mean_predicted"].tolist() == pytest.approx([0.05, 0.95])
    assert a["fraction_positive"].tolist() == pytest.approx([0.0, 1.0])
    assert len(cal[cal["model"] == "B"]) == 10
    assert not [p for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]


def test_format_metrics_table(perfect_and_noise):
    doc, _ = evaluate(perfect_and_noise, params=EvaluateParams(bootstrap=100))
    table = format_metrics_table(doc)
    lines = table.splitlines()
    assert lines[1].split()[:2] == ["model", "log_loss"] and lines[1].split()[-1] == "n"
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert set(rows) == {"A", "B", "ensemble"}
    assert rows["A"][4] == "1.0000" and rows["A"][-1] == "200"  # auc of the perfect model, then its count
    assert "temperature scaling" in table


def test_frame_metrics_with_a_clip_model_keyed_apart():
    """Crop models share their crops' keys; a clip model's windows are its own rows: each model gets frame
    metrics on its own rows, the ensemble on the crops its frame models share."""
    rng = np.random.default_rng(0)
    videos = [f"v{i}.mp4" for i in range(40)]
    y = np.array([i % 2 for i in range(40)])
    preds = {n: _table(videos, y, np.clip(y * 0.6 + rng.uniform(0, 0.4, 40), 0, 1)) for n in ("a", "b", "clip")}
    crops = pd.DataFrame([{"key": f"{v}|{f}", "video": v, "label": int(l)} for v, l in zip(videos, y)
                          for f in range(3)])
    windows = pd.DataFrame([{"key": f"{v}|w{f}", "video": v, "label": int(l)} for v, l in zip(videos, y)
                            for f in range(2)])
    frames = {"a": crops.assign(prob=rng.uniform(size=len(crops))),
              "b": crops.assign(prob=np.where(crops["label"] == 1, 0.9, 0.1)),
              "clip": windows.assign(prob=np.where(windows["label"] == 1, 0.8, 0.3))}
    doc, _ = evaluate(preds, frames=frames, params=EvaluateParams(bootstrap=0))
    assert set(doc["frame"]) == {"a", "b", "clip", "ensemble"}
    assert doc["frame"]["clip"]["n"] == len(windows) and doc["frame"]["clip"]["auc"] == 1.0
    assert doc["frame"]["ensemble"]["n"] == len(crops)  # a and b's crops, not the windows
    ens = binary_metrics(crops["label"], (frames["a"]["prob"] + frames["b"]["prob"]) / 2)
    assert doc["frame"]["ensemble"]["log_loss"] == pytest.approx(ens["log_loss"])


def test_headline_holds_the_few_numbers_dvc_shows_first(perfect_and_noise):
    from dfdc.eval.report import headline

    doc, _ = evaluate(perfect_and_noise, params=EvaluateParams(bootstrap=50))
    degraded, _ = evaluate({k: v.assign(prob=v["prob"] * 0.5 + 0.25) for k, v in perfect_and_noise.items()},
                           params=EvaluateParams(bootstrap=50))
    h = headline(doc, degraded)
    assert list(h) == ["ensemble", "A", "B"]
    assert list(h["ensemble"])[:4] == ["log_loss", "auc", "degraded_log_loss", "degraded_auc"]
    assert h["A"]["log_loss"] == doc["models"]["A"]["log_loss"]
    assert h["A"]["degraded_auc"] == degraded["models"]["A"]["auc"]
    assert h["ensemble"]["auc_lo"] <= h["ensemble"]["auc"] <= h["ensemble"]["auc_hi"]
    assert all(isinstance(v, float) for row in h.values() for v in row.values())
    assert "degraded_log_loss" not in headline(doc)["A"] and "leave_out" not in h
    doc["leave_out"] = {"method": "face", "video": {"A": {"log_loss": 0.1, "auc": 0.9, "n": 4}}}
    assert headline(doc)["leave_out"] == {"A": {"log_loss": 0.1, "auc": 0.9}}
