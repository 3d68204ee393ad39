import pandas as pd
import pytest

from dfdc.datasets.index import build_index
from dfdc.folds import FoldLeak, assign_folds, check_no_leak


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
