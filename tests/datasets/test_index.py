from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfdc.datasets.index import COLUMNS, build_index, summarize_index, write_manifest
from dfdc.video import write_video

REPO = Path(__file__).resolve().parents[2]
FFPP = REPO.parent / "shared" / "data" / "ffpp"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny real videos: 'a' is 8 frames of 64x48, 'b' is 12 frames of 48x32 (both 25 fps)."""
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    specs = {"a": (8, 48, 64), "b": (12, 32, 48)}
    out = {}
    for name, (n, h, w) in specs.items():
        out[name] = d / f"{name}.mp4"
        write_video(out[name], [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)], fps=25)
    return out


def _put(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _meta(folder: Path, meta: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(meta))


def _dfdc_tree(root: Path, clips: dict[str, Path]) -> Path:
    p0, p1 = root / "dfdc_train_part_0", root / "dfdc_train_part_1"
    _put(clips["a"], p0 / "real0.mp4")
    _put(clips["a"], p0 / "fake0.mp4")
    _put(clips["b"], p1 / "real1.mp4")
    _put(clips["b"], p1 / "fake1.mp4")
    _put(clips["b"], p1 / "fake2.mp4")
    _meta(p0, {"fake0.mp4": {"label": "FAKE", "split": "train", "original": "real0.mp4"},
               "real0.mp4": {"label": "REAL", "split": "train"}})
    _meta(p1, {"fake1.mp4": {"label": "FAKE", "split": "train", "original": "real1.mp4"},
               "fake2.mp4": {"label": "FAKE", "split": "train", "original": "real1.mp4"},
               "real1.mp4": {"label": "REAL", "split": "train"}})
    return root


def _rows(df: pd.DataFrame) -> dict[str, dict]:
    return {r["video"]: r for r in df.to_dict("records")}


# ---------------------------------------------------------------- DFDC


def test_dfdc_layout(tmp_path: Path, clips: dict[str, Path]) -> None:
    root = _dfdc_tree(tmp_path / "dfdc", clips)
    df = build_index(root, progress=False)

    assert list(df.columns) == COLUMNS
    assert df["label"].dtype == np.int8
    assert df["ok"].dtype == bool
    for c in ("frames", "width", "height"):
        assert pd.api.types.is_integer_dtype(df[c])
    assert df["fps"].dtype == np.float64
    assert df["video"].tolist() == sorted(df["video"]) and df["video"].is_unique
    assert df["ok"].all() and (df["error"] == "").all()

    rows = _rows(df)
    assert set(rows) == {"dfdc_train_part_0/fake0.mp4", "dfdc_train_part_0/real0.mp4",
                         "dfdc_train_part_1/fake1.mp4", "dfdc_train_part_1/fake2.mp4",
                         "dfdc_train_part_1/real1.mp4"}
    real, fake = rows["dfdc_train_part_0/real0.mp4"], rows["dfdc_train_part_1/fake2.mp4"]
    assert real["label"] == 0 and real["original"] is None and real["method"] is None
    assert fake["label"] == 1 and fake["original"] == "dfdc_train_part_1/real1.mp4" and fake["method"] == "dfdc"
    assert real["part"] == "dfdc_train_part_0" and fake["part"] == "dfdc_train_part_1"
    assert real["quality"] is None
    assert Path(real["path"]) == root / real["video"] and Path(real["path"]).is_file()
    assert (real["frames"], real["fps"], real["width"], real["height"]) == (8, 25.0, 64, 48)
    assert (fake["frames"], fake["fps"], fake["width"], fake["height"]) == (12, 25.0, 48, 32)
    assert summarize_index(df) == "index: 5 videos (2 real, 3 fake), 0 not ok"


def test_dfdc_root_is_one_part(tmp_path: Path, clips: dict[str, Path]) -> None:
    part = tmp_path / "dfdc_train_part_7"
    _put(clips["a"], part / "x.mp4")
    _put(clips["a"], part / "y.mp4")
    _meta(part, {"y.mp4": {"label": "FAKE", "original": "x.mp4"}, "x.mp4": {"label": "REAL"}})
    rows = _rows(build_index(part, progress=False))
    assert rows["y.mp4"]["original"] == "x.mp4" and rows["y.mp4"]["part"] == "dfdc_train_part_7"
    assert rows["x.mp4"]["ok"] and rows["y.mp4"]["ok"]


def test_workers_give_same_index(tmp_path: Path, clips: dict[str, Path]) -> None:
    root = _dfdc_tree(tmp_path / "dfdc", clips)
    pd.testing.assert_frame_equal(build_index(root, workers=2, progress=False),
                                  build_index(root, workers=0, progress=False))


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_are_recorded(tmp_path: Path, clips: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "dfdc"
    p = root / "part_bad"
    _put(clips["a"], p / "good.mp4")
    _put(clips["a"], p / "fake_ok.mp4")
    (p / "empty.mp4").write_bytes(b"")
    (p / "text.mp4").write_text("this is not a video\n")
    data = clips["a"].read_bytes()
    (p / "cut.mp4").write_bytes(data[: len(data) // 2])
    _put(clips["a"], p / "orphan_fake.mp4")
    _put(clips["a"], p / "lost_fake.mp4")
    _put(clips["a"], p / "weird.mp4")
    _put(clips["a"], p / "unlisted.mp4")
    _meta(p, {
        "good.mp4": {"label": "REAL"},
        "fake_ok.mp4": {"label": "FAKE", "original": "good.mp4"},
        "empty.mp4": {"label": "REAL"},
        "text.mp4": {"label": "REAL"},
        "cut.mp4": {"label": "REAL"},
        "gone.mp4": {"label": "REAL"},
        "orphan_fake.mp4": {"label": "FAKE", "original": "nowhere.mp4"},
        "lost_fake.mp4": {"label": "FAKE", "original": "gone.mp4"},
        "weird.mp4": {"label": "MAYBE"},
        "../escape.mp4": {"label": "REAL"},
    })
    broken = root / "part_broken"
    _put(clips["a"], broken / "v1.mp4")
    _put(clips["b"], broken / "v2.mp4")
    (broken / "metadata.json").write_text("{not json")
    listed = root / "part_list"
    _put(clips["a"], listed / "w.mp4")
    _meta(listed, ["w.mp4"])
    _dfdc_tree(root, clips)

    with caplog.at_level(logging.WARNING, logger="dfdc.index"):
        df = build_index(root, workers=2, progress=False)
    rows = _rows(df)

    def err(name: str) -> str:
        r = rows[name]
        assert not r["ok"], name
        return r["error"]

    assert "zero-byte" in err("part_bad/empty.mp4")
    assert "not a video or image file" in err("part_bad/text.mp4")
    assert "truncated" in err("part_bad/cut.mp4")
    assert err("part_bad/gone.mp4") == "file missing"
    assert rows["part_bad/gone.mp4"]["frames"] == -1 and math.isnan(rows["part_bad/gone.mp4"]["fps"])
    assert err("part_bad/orphan_fake.mp4").startswith("original missing: nowhere.mp4")
    assert err("part_bad/lost_fake.mp4").startswith("original missing: gone.mp4")
    assert rows["part_bad/lost_fake.mp4"]["original"] == "part_bad/gone.mp4"
    assert rows["part_bad/lost_fake.mp4"]["frames"] == 8
    assert err("part_bad/weird.mp4") == "unknown label 'MAYBE'" and rows["part_bad/weird.mp4"]["label"] == -1
    assert err("part_bad/unlisted.mp4") == "not in metadata.json"
    assert err("part_bad/../escape.mp4").startswith("bad file name in metadata.json: '../escape.mp4'")
    assert rows["part_bad/unlisted.mp4"]["label"] == -1
    for name in ("part_broken/v1.mp4", "part_broken/v2.mp4"):
        assert err(name).startswith("metadata.json unreadable: JSONDecodeError")
        assert rows[name]["label"] == -1
    assert rows["part_broken/v2.mp4"]["width"] == 48
    assert err("part_list/w.mp4").startswith("metadata.json unreadable: expected a JSON object")

    good = [n for n, r in rows.items() if r["ok"]]
    assert sorted(good) == sorted(["part_bad/good.mp4", "part_bad/fake_ok.mp4", "dfdc_train_part_0/fake0.mp4",
                                   "dfdc_train_part_0/real0.mp4", "dfdc_train_part_1/fake1.mp4",
                                   "dfdc_train_part_1/fake2.mp4", "dfdc_train_part_1/real1.mp4"])
    assert rows["part_bad/fake_ok.mp4"]["original"] == "part_bad/good.mp4"
    assert summarize_index(df) == f"index: {len(df)} videos (8 real, 6 fake, 5 unknown), 12 not ok"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "dfdc.index")
    assert "part_bad/cut.mp4" in logged and "part_broken/v1.mp4" in logged


def test_truncated_file_is_not_ok(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    whole = tmp_path / "whole.mp4"
    write_video(whole, [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(30)], fps=25)
    part = tmp_path / "p"
    part.mkdir()
    data = whole.read_bytes()
    (part / "t.mp4").write_bytes(data[: len(data) // 2])
    shutil.copyfile(whole, part / "w.mp4")
    _meta(part, {"t.mp4": {"label": "REAL"}, "w.mp4": {"label": "REAL"}})
    rows = _rows(build_index(tmp_path, progress=False))
    assert rows["p/w.mp4"]["ok"] and rows["p/w.mp4"]["frames"] == 30
    assert not rows["p/t.mp4"]["ok"] and "truncated" in rows["p/t.mp4"]["error"]


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        build_index(tmp_path / "nope")


def test_unknown_layout(tmp_path: Path, clips: dict[str, Path]) -> None:
    root = tmp_path / "plain"
    _put(clips["a"], root / "sub" / "v.mp4")
    with pytest.raises(ValueError, match="plain") as e:
        build_index(root)
    assert "DFDC" in str(e.value) and "FaceForensics++" in str(e.value)


# ---------------------------------------------------------------- FaceForensics++


def test_ffpp_layout(tmp_path: Path, clips: dict[str, Path]) -> None:
    root = tmp_path / "ffpp"
    real = root / "original_sequences"
    fake = root / "manipulated_sequences"
    _put(clips["a"], real / "youtube" / "c23" / "videos" / "000.mp4")
    _put(clips["b"], real / "youtube" / "c23" / "videos" / "001.mp4")
    _put(clips["a"], real / "actors" / "c23" / "videos" / "01__walking.mp4")
    _put(clips["a"], fake / "Deepfakes" / "c23" / "videos" / "000_001.mp4")
    _put(clips["b"], fake / "Face2Face" / "c23" / "videos" / "001_000.mp4")
    _put(clips["a"], fake / "FaceSwap" / "c40" / "videos" / "000_001.mp4")
    _put(clips["a"], fake / "FaceSwap" / "c23" / "videos" / "oddname.mp4")
    _put(clips["a"], fake / "DeepFakeDetection" / "c23" / "videos" / "01_02__walking__ABCDEF12.mp4")
    _put(clips["a"], fake / "Deepfakes" / "masks" / "videos" / "000_001.mp4")

    df = build_index(root, progress=False)
    assert list(df.columns) == COLUMNS
    assert df["video"].tolist() == sorted(df["video"])
    rows = _rows(df)
    assert not any("/masks/" in v for v in rows)
    assert len(rows) == 8

    r = rows["original_sequences/youtube/c23/videos/000.mp4"]
    assert (r["label"], r["original"], r["method"], r["quality"], r["part"]) == (0, None, None, "c23", None)
    assert (r["frames"], r["width"], r["height"], r["ok"]) == (8, 64, 48, True)
    f = rows["manipulated_sequences/Face2Face/c23/videos/001_000.mp4"]
    assert (f["label"], f["method"], f["quality"], f["ok"]) == (1, "Face2Face", "c23", True)
    assert f["original"] == "original_sequences/youtube/c23/videos/001.mp4"
    assert (f["frames"], f["width"], f["height"]) == (12, 48, 32)
    d = rows["manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walking__ABCDEF12.mp4"]
    assert d["ok"] and d["original"] == "original_sequences/actors/c23/videos/01__walking.mp4"
    c40 = rows["manipulated_sequences/FaceSwap/c40/videos/000_001.mp4"]
    assert not c40["ok"] and c40["error"] == "original missing: original_sequences/youtube/c40/videos/000.mp4"
    assert c40["frames"] == 8
    odd = rows["manipulated_sequences/FaceSwap/c23/videos/oddname.mp4"]
    assert not odd["ok"] and odd["error"].startswith("original missing:") and odd["original"] is None


def test_real_ffpp_sample() -> None:
    if not FFPP.is_dir():
        pytest.skip(f"{FFPP} not present")
    rows = _rows(build_index(FFPP, workers=2, progress=False))
    assert set(rows) == {
        "original_sequences/youtube/c23/videos/519.mp4",
        "original_sequences/youtube/c23/videos/634.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/519_515.mp4",
        "manipulated_sequences/FaceSwap/c23/videos/634_660.mp4",
    }
    assert all(r["ok"] for r in rows.values())
    df519 = rows["manipulated_sequences/Deepfakes/c23/videos/519_515.mp4"]
    fs634 = rows["manipulated_sequences/FaceSwap/c23/videos/634_660.mp4"]
    assert df519["original"] == "original_sequences/youtube/c23/videos/519.mp4" and df519["method"] == "Deepfakes"
    assert fs634["original"] == "original_sequences/youtube/c23/videos/634.mp4" and fs634["method"] == "FaceSwap"
    for fake in (df519, fs634):
        orig = rows[fake["original"]]
        assert orig["label"] == 0 and fake["label"] == 1 and fake["quality"] == "c23"
        assert (fake["frames"], fake["width"], fake["height"]) == (orig["frames"], orig["width"], orig["height"])
        assert 100 < fake["frames"] < 10_000 and 20 <= fake["fps"] <= 60
        assert fake["width"] >= 320 and fake["height"] >= 240


# ---------------------------------------------------------------- stage


def _params(tmp_path: Path, root: Path) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  root: {json.dumps(str(root))}\nindex:\n  workers: 0\n")
    return params


def _stage(params: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / "index.py"), "--params", str(params),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_stage_missing_root_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "index.parquet"
    proc = _stage(_params(tmp_path, tmp_path / "missing"), out)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "missing" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_stage_writes_parquet(tmp_path: Path, clips: dict[str, Path]) -> None:
    root = _dfdc_tree(tmp_path / "dfdc", clips)
    out = tmp_path / "data" / "index.parquet"
    proc = _stage(_params(tmp_path, root), out)
    assert proc.returncode == 0, proc.stderr
    assert "index: 5 videos (2 real, 3 fake), 0 not ok" in proc.stdout
    df = pd.read_parquet(out)
    assert list(df.columns) == COLUMNS and len(df) == 5 and df["ok"].all()


# ---------------------------------------------------------------- manifest


def test_manifest(tmp_path: Path, clips: dict[str, Path]) -> None:
    root = _dfdc_tree(tmp_path / "dfdc", clips)
    out = tmp_path / "manifest.txt"
    assert write_manifest(root, out) == 5
    first = out.read_text()
    lines = first.splitlines()
    assert lines == sorted(lines)
    videos = [ln.split("\t") for ln in lines if ln.startswith("video\t")]
    assert [v[1] for v in videos] == sorted(str(p.relative_to(root)) for p in root.rglob("*.mp4"))
    real0 = next(v for v in videos if v[1] == "dfdc_train_part_0/real0.mp4")
    assert int(real0[2]) == clips["a"].stat().st_size
    assert sum(ln.startswith("metadata\t") for ln in lines) == 2
    assert write_manifest(root, out) == 5 and out.read_text() == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    (root / "dfdc_train_part_0" / "real0.mp4").write_bytes(b"changed")
    write_manifest(root, out)
    assert out.read_text() != first

    second = out.read_text()
    _meta(root / "dfdc_train_part_0", {"real0.mp4": {"label": "REAL"}})
    write_manifest(root, out)
    assert out.read_text() != second


def test_a_relative_root_gives_the_same_index_wherever_the_repo_lies(tmp_path: Path, clips: dict[str, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tables = []
    for where in ("one", "two"):
        _dfdc_tree(tmp_path / where / "data", clips)
        monkeypatch.chdir(tmp_path / where)
        tables.append(build_index("data", progress=False))
    assert tables[0]["path"].iloc[0].startswith("data/")
    assert tables[0].equals(tables[1])
