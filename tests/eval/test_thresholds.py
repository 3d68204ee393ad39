import numpy as np
import pandas as pd
import pytest

from dfdc.eval.crossfit import group_splits
from dfdc.eval.thresholds import TrackTable, candidates, fit_thresholds
from dfdc.inference.aggregate import aggregate_tracks, check_rules, threshold_strategy


def test_rule_hand_computed():
    p = [0.95, 0.92, 0.6, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]  # 10 frames
    rules = [(0.9, 0.3), (0.5, 0.3)]
    # 2 of 10 above 0.9 < ceil(0.3 * 10) = 3; 3 above 0.5 -> their mean
    assert threshold_strategy(p, rules) == pytest.approx((0.95 + 0.92 + 0.6) / 3)
    assert threshold_strategy(p, [(0.9, 0.2)]) == pytest.approx((0.95 + 0.92) / 2)
    assert threshold_strategy(p, [(0.99, 0.1)]) == pytest.approx(np.mean(p))  # no rule fires: plain mean
    assert threshold_strategy(p, []) == pytest.approx(np.mean(p))
    assert threshold_strategy([0.4, 0.45], [(0.4, 0.01)]) == pytest.approx(0.45)  # strictly above t; >= 1 frame


def test_candidates_fall_in_t_and_rise_in_k():
    c = candidates(2, t_grid=(0.5, 0.9), k_grid=(0.1, 0.3))
    assert c[0] == () and len(c) == 1 + 4 + 1
    assert ((0.9, 0.1), (0.5, 0.3)) in c


def _frames(n_videos=24, seed=0):
    rng = np.random.default_rng(seed)
    rows, videos = [], []
    for v in range(n_videos):
        label = v % 2
        name = f"v{v:02d}.mp4"
        videos.append({"video": name, "label": label, "original": f"o{v // 2}"})
        for track in range(1 + (v % 3 == 0)):
            n = int(rng.integers(3, 12))
            base = rng.uniform(0.05, 0.5, n)
            if label and track == 0:
                base[: n // 3 + 1] = rng.uniform(0.85, 0.99, n // 3 + 1)  # a few confident fake frames
            rows += [{"video": name, "track": track, "prob": float(q)} for q in base]
    return pd.DataFrame(videos), pd.DataFrame(rows)


def test_vectorised_scores_equal_the_scalar_rule():
    videos, frames = _frames()
    videos = pd.concat([videos, pd.DataFrame([{"video": "noface.mp4", "label": 1, "original": "x"}])])
    table = TrackTable(frames, videos["video"].tolist())
    groups = dict(tuple(frames.groupby("video")))
    for rules in [(), ((0.9, 0.1),), ((0.9, 0.3), (0.6, 0.5), (0.5, 0.8))]:
        fast = table.scores(rules)
        slow = [aggregate_tracks(groups[v]["prob"], groups[v]["track"], "thresholds", rules=rules)
                if v in groups else 0.5 for v in videos["video"]]
        assert fast == pytest.approx(slow)


def test_fit_beats_the_mean_and_is_cross_fitted():
    videos, frames = _frames(40)
    fit = fit_thresholds(videos, frames, levels=2, n_splits=2)
    assert fit.rules and all(t >= 0.5 for t, _ in fit.rules)
    mean = TrackTable(frames, videos["video"].tolist()).scores(())
    y = videos["label"].to_numpy()

    def ll(q):
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    assert ll(fit.prob) < ll(mean)
    assert sorted(v for s in fit.split_videos for v in s) == sorted(videos["video"])
    by_video = fit.rules_by_video()
    assert set(by_video) == set(videos["video"])
    assert all(by_video[v] == rules for rules, vs in zip(fit.split_rules, fit.split_videos) for v in vs)
    doc = fit.to_dict()
    assert doc["rules"] == [list(r) for r in fit.rules] and doc["split_videos"] == fit.split_videos


def test_flipping_a_label_never_changes_that_videos_own_score():
    videos, frames = _frames(40, seed=3)
    base = fit_thresholds(videos, frames, levels=2, n_splits=2)
    for i in (0, 7, 30):
        flipped = videos.copy()
        flipped.loc[i, "label"] = 1 - flipped.loc[i, "label"]
        again = fit_thresholds(flipped, frames, levels=2, n_splits=2)
        assert again.prob[i] == pytest.approx(base.prob[i])
        assert again.split_videos == base.split_videos


def test_group_splits_keep_groups_and_ignore_labels():
    groups = [f"o{i // 3}" for i in range(30)]
    parts = group_splits(groups, 3, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(30))
    for part in parts:
        seen = {groups[i] for i in part}
        assert all(groups[j] not in seen for other in parts if other is not part for j in other)
    assert [len(p) for p in parts] == [12, 9, 9] or sorted(len(p) for p in parts) == [9, 9, 12]
    with pytest.raises(ValueError, match="groups"):
        group_splits(["a", "a"], 2)


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="needs 0 <= t < 1"):
        check_rules([[0.9, 0.0]], "ensemble.json")
    with pytest.raises(ValueError, match="pair"):
        check_rules([[0.9]], "ensemble.json")
