import hashlib
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from dfdc.preprocess.degrade import (Degradation, assign_degradations, degrade_faces, degrade_holdout,
                                     degrade_video)
from dfdc.video import probe, read_frames

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


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def real_video(tiny_prep):
    row = tiny_prep["index"].query("label == 0").iloc[0]
    return row.path, probe(row.path)


def test_each_degradation_is_really_applied(real_video, tmp_path):
    src, info = real_video
    frames, _ = read_frames(src)
    out = {}
    for d in (Degradation("jpeg", 10), Degradation("jpeg", 90), Degradation("downscale"), Degradation("half_fps"),
              Degradation("none")):
        dst = tmp_path / f"{d.describe().replace(' ', '_')}.mp4"
        got = degrade_video(src, dst, d, scale=0.25)
        out[d.describe()] = (dst, got)
        assert probe(dst).frames == got["frames"]
    none_path, none = out["none"]
    assert _sha(none_path) == _sha(src) and none["frames"] == info.frames
    _, small = out["downscale"]
    assert (small["width"], small["height"]) == (round(info.width / 8) * 2, round(info.height / 8) * 2)
    assert small["frames"] == info.frames
    _, half = out["half_fps"]
    assert half["frames"] == (info.frames + 1) // 2 and half["fps"] == pytest.approx(info.fps / 2)
    half_frames, _ = read_frames(out["half_fps"][0])
    assert np.abs(half_frames[1].astype(int) - frames[2]).mean() < 2  # degraded frame 1 is frame 2 (lossless x264)

    def error(name):
        f, _ = read_frames(out[name][0], [3])
        return np.abs(f[3].astype(int) - frames[3]).mean()

    assert error("jpeg q=10") > error("jpeg q=90") > 0  # lower quality, larger error


def test_degradation_is_byte_reproducible(real_video, tmp_path):
    src, _ = real_video
    d = Degradation("jpeg", 40)
    degrade_video(src, tmp_path / "a.mp4", d)
    degrade_video(src, tmp_path / "b.mp4", d)
    assert _sha(tmp_path / "a.mp4") == _sha(tmp_path / "b.mp4")


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


def test_degrade_holdout_gives_fakes_their_originals_draw(tiny_prep, tmp_path):
    index = tiny_prep["index"]
    videos = index["video"].tolist()
    rows, assigned = degrade_holdout(index, videos, tmp_path / "videos", shares=SHARES, jpeg_quality=(30, 60),
                                     scale=0.25, crf=0, seed=0, workers=1, progress=False,
                                     recorded_dir="data/degraded/videos")
    assert rows["ok"].all() and len(rows) == len(index)
    for r in rows.itertuples():
        if isinstance(r.original, str) and r.original:
            assert assigned[r.video] == assigned[r.original]
            real = rows.set_index("video").loc[r.original]
            assert (r.width, r.height, r.frames) == (real["width"], real["height"], real["frames"])
        assert r.path == f"data/degraded/videos/{r.video}" and (tmp_path / "videos" / r.video).is_file()
