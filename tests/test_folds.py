import pandas as pd
import pytest

from dfdc.datasets.index import build_index
from dfdc.folds import FoldLeak, assign_folds, check_no_leak, unseen_videos, with_methods


def _index(rows):
    return pd.DataFrame(rows, columns=["video", "label", "original", "part"])


def test_folds_group_by_part_and_merge_cross_part_fakes():
    rows = []
    for p in range(6):
        rows.append((f"p{p}/r.mp4", 0, None, f"p{p}"))
        rows.append((f"p{p}/f.mp4", 1, f"p{p}/r.mp4", f"p{p}"))
    rows.append(("p5/x.mp4", 1, "p0/r.mp4", "p5"))  # a fake in another part than its original
    folds = assign_folds(_index(rows), k=3, seed=1)
    f = dict(zip(folds["video"], folds["fold"]))
    assert f["p5/x.mp4"] == f["p0/r.mp4"] == f["p5/r.mp4"]  # parts 0 and 5 merged
    assert folds["fold"].nunique() == 3
    check_no_leak(folds)


def test_folds_group_by_original_without_parts():
    rows = [(f"o{i}.mp4", 0, None, None) for i in range(8)]
    rows += [(f"o{i}_f{j}.mp4", 1, f"o{i}.mp4", None) for i in range(8) for j in range(2)]
    folds = assign_folds(_index(rows), k=4)
    assert folds["group"].nunique() == 8
    assert sorted(folds.groupby("fold").size().tolist()) == [6, 6, 6, 6]
    check_no_leak(folds)


def test_leak_is_detected():
    folds = pd.DataFrame({"video": ["a", "b"], "original": [None, "a"], "fold": [0, 1]})
    with pytest.raises(FoldLeak, match="b is in fold 1 but its original a is in fold 0"):
        check_no_leak(folds)


def test_folds_on_sample_and_ffpp(tiny_sample, ffpp_root):
    for root in (tiny_sample, ffpp_root):
        folds = assign_folds(build_index(root, progress=False), k=2)
        check_no_leak(folds)
        assert set(folds["fold"]) == {0, 1}


def _methods_index():
    rows = []
    for i in range(8):
        rows.append((f"o{i}.mp4", 0, None, None, None))
        for j, m in enumerate(("face", "mouth")):
            rows.append((f"o{i}_{m}.mp4", 1, f"o{i}.mp4", None, m))
    return pd.DataFrame(rows, columns=["video", "label", "original", "part", "method"])


def test_leave_out_keeps_a_manipulation_out_of_training_and_selection():
    from dfdc.eval.holdout import holdout_videos
    from dfdc.train.data import split_by_fold

    index = _methods_index()
    folds = with_methods(assign_folds(index, k=2, seed=0), index)
    assert folds.loc[folds["label"] == 0, "method"].isna().all()
    assert set(folds.loc[folds["label"] == 1, "method"]) == {"face", "mouth"}
    unseen = unseen_videos(folds, "mouth")
    assert unseen == {f"o{i}_mouth.mp4" for i in range(8)} and unseen_videos(folds, None) == set()
    table = folds[["video", "label"]].assign(key=folds["video"] + "|0", shard="s")  # one crop per video
    train, val = split_by_fold(table, folds, 0, leave_out="mouth")
    assert not set(train["video"]) & unseen and not set(val["video"]) & unseen
    assert set(train["video"]) | set(val["video"]) == set(folds["video"]) - unseen
    full_train, _ = split_by_fold(table, folds, 0)
    assert set(full_train["video"]) & unseen  # without the switch they train
    scored = holdout_videos(folds, 0)  # predict@ scores every holdout video, the unseen fakes too
    assert set(scored["video"]) & unseen == {v for v in unseen if folds.set_index("video").loc[v, "fold"] == 0}
    assert not set(holdout_videos(folds, 0, "mouth")["video"]) & unseen
    with pytest.raises(ValueError, match=r"no fake has method 'nose'.*\['face', 'mouth'\]"):
        unseen_videos(folds, "nose")
