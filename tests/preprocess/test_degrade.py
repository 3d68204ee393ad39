from collections import Counter

import numpy as np
import pandas as pd
import pytest

from dfdc.preprocess.degrade import (Degradation, assign_degradations, degrade_faces, degrade_holdout,
                                     parse_degradation)
from dfdc.preprocess.frames import read_video_frames
from dfdc.video import read_frames

SHARES = {"jpeg": 0.25, "downscale": 0.25, "half_fps": 0.25, "none": 0.25}


def test_draws_follow_the_shares_exactly_and_reproduce_for_a_seed():
    originals = [f"part/o{i:02d}.mp4" for i in range(16)]
    a = assign_degradations(originals, SHARES, (30, 60), seed=0)
    assert Counter(d.kind for d in a.values()) == {"jpeg": 4, "downscale": 4, "half_fps": 4, "none": 4}
    assert a == assign_degradations(list(reversed(originals)), SHARES, (30, 60), seed=0)  # order does not matter
    assert a != assign_degradations(originals, SHARES, (30, 60), seed=1)
    assert all(30 <= d.quality <= 60 for d in a.values() if d.kind == "jpeg")
    odd = assign_degradations(originals[:5], {"jpeg": 1, "none": 1}, (50, 50), seed=0)
    assert sorted(Counter(d.kind for d in odd.values()).values()) == [2, 3]


@pytest.fixture(scope="module")
def real_row(tiny_prep):
    return tiny_prep["index"].query("label == 0").iloc[0]


def _degraded(row, d: Degradation, scale: float = 0.25):
    """``row`` as the degraded holdout's index describes it under ``d``."""
    index = pd.DataFrame([row]).assign(original=None)
    rows, _ = degrade_holdout(index, [row.video], shares={d.kind: 1}, jpeg_quality=(d.quality or 1,) * 2,
                              scale=scale, seed=0)
    return rows.iloc[0]


def test_each_degradation_is_applied_to_the_frames_read(real_row):
    frames, n = read_frames(real_row.path)
    got = {}
    for d in (Degradation("jpeg", 10), Degradation("jpeg", 90), Degradation("downscale"), Degradation("half_fps"),
              Degradation("none")):
        row = _degraded(real_row, d)
        assert row.path == real_row.path and row.degradation == d.describe()
        got[d.describe()], held = read_video_frames(row)
        assert held == row.frames == len(got[d.describe()]), d
        assert got[d.describe()][0].shape == (row.height, row.width, 3)
    assert all(np.array_equal(got["none"][i], frames[i]) for i in range(n))
    small = _degraded(real_row, Degradation("downscale"))
    assert (small.width, small.height) == (round(real_row.width / 8) * 2, round(real_row.height / 8) * 2)
    half = _degraded(real_row, Degradation("half_fps"))
    assert half.frames == (n + 1) // 2 and half.fps == pytest.approx(real_row.fps / 2)
    assert all(np.array_equal(got["half_fps"][i], frames[2 * i]) for i in got["half_fps"])  # frame i is frame 2i

    def error(name):
        return np.abs(got[name][3].astype(int) - frames[3]).mean()

    assert error("jpeg q=10") > error("jpeg q=90") > 0  # lower quality, larger error
    some, _ = read_video_frames(_degraded(real_row, Degradation("jpeg", 10)), [3, 5])
    assert sorted(some) == [3, 5] and np.array_equal(some[3], got["jpeg q=10"][3])  # the same frame, read alone
    assert parse_degradation("jpeg q=10") == Degradation("jpeg", 10)
    with pytest.raises(ValueError, match="unknown degradation 'blur'"):
        parse_degradation("blur")


def test_faces_move_with_the_degradation():
    faces = pd.DataFrame({"video": ["a", "a", "b", "b"], "frame": [0, 5, 10, 20], "face": 0, "track": 0,
                          "x1": 40.0, "y1": 20.0, "x2": 80.0, "y2": 60.0, "score": 0.99,
                          **{f"l{a}{i}": 50.0 for i in range(5) for a in "xy"}})
    index = pd.DataFrame({"video": ["a", "b"], "width": [640, 640], "height": [360, 360]})
    moved = degrade_faces(faces, index, {"a": Degradation("downscale"), "b": Degradation("half_fps")},
                          {"a": (160, 90), "b": (640, 360)})
    a, b = moved[moved.video == "a"], moved[moved.video == "b"]
    assert a["x1"].tolist() == [10.0, 10.0] and a["y2"].tolist() == [15.0, 15.0] and a["lx0"].iloc[0] == 12.5
    assert b["frame"].tolist() == [5, 10] and b["x1"].tolist() == [40.0, 40.0]
    odd = degrade_faces(faces.assign(frame=[1, 3, 11, 20], x1=[1.0, 2.0, 3.0, 4.0]), index,
                        {"b": Degradation("half_fps")}, {"b": (640, 360)})
    assert odd["frame"].tolist() == [5, 10]  # "a" is not degraded; odd frame 11 lands on kept frame 5
    both = degrade_faces(faces.assign(video="b", frame=[10, 11, 20, 21], x1=[1.0, 2.0, 3.0, 4.0]), index,
                         {"b": Degradation("half_fps")}, {"b": (640, 360)})
    assert both["frame"].tolist() == [5, 10] and both["x1"].tolist() == [1.0, 3.0]  # the even frame's own box wins


def test_degrade_holdout_gives_fakes_their_originals_draw_and_reads_no_video(tiny_prep, monkeypatch):
    import dfdc.video

    def no_reading(*_a, **_k):
        raise AssertionError("degrade_holdout read a video")

    monkeypatch.setattr(dfdc.video, "_opened", no_reading)
    index = tiny_prep["index"]
    videos = index["video"].tolist()
    rows, assigned = degrade_holdout(index, videos, shares=SHARES, jpeg_quality=(30, 60), scale=0.25, seed=0)
    assert rows["ok"].all() and len(rows) == len(index)
    for r in rows.itertuples():
        if isinstance(r.original, str) and r.original:
            assert assigned[r.video] == assigned[r.original]
            real = rows.set_index("video").loc[r.original]
            assert (r.width, r.height, r.frames) == (real["width"], real["height"], real["frames"])
        assert r.path == index.set_index("video").loc[r.video, "path"]
