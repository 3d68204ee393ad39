"""detect -> crops -> diffs on the tiny sample, the FF++ pairs and bad input."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import copy_real_and_fake

from dfdc.datasets.index import build_index
from dfdc.faces.crops import crop_box
from dfdc.masks import diff_mask
from dfdc.faces.crops import crop_key
from dfdc.preprocess.columns import LANDMARK_COLUMNS
from dfdc.preprocess.crops import crop_videos, read_crop
from dfdc.preprocess.detect import detect_videos
from dfdc.preprocess.diffs import diff_crops
from dfdc.video import read_frames, write_video


@pytest.fixture(scope="module")
def sample_run(tiny_sample, detector, tmp_path_factory):
    index = build_index(tiny_sample, progress=False)
    faces, dstatus = detect_videos(index, detector, every=5, min_track=2, workers=1, progress=False)
    out = tmp_path_factory.mktemp("prep")
    crops, cstatus = crop_videos(index, faces, out / "crops", workers=1, progress=False)
    diffs = diff_crops(crops, out / "crops", out / "diffs", workers=1, progress=False)
    return dict(index=index, faces=faces, dstatus=dstatus, crops=crops, cstatus=cstatus, diffs=diffs, out=out)


def test_detect_finds_faces_and_tracks(sample_run):
    faces, status, index = sample_run["faces"], sample_run["dstatus"], sample_run["index"]
    assert len(status) == (index["label"] == 0).sum() and status["ok"].all()
    assert set(faces["video"]) == set(index.loc[index["label"] == 0, "video"])
    assert sorted(status["tracks"].tolist()) == [1, 1, 1, 2]  # the 4th real video holds two faces
    assert (faces["frame"] % 5 == 0).all()
    assert (faces["score"] >= 0.9).all()
    lm = faces[LANDMARK_COLUMNS].to_numpy().reshape(-1, 5, 2)
    inside = (lm[..., 0] >= faces[["x1"]].to_numpy() - 2) & (lm[..., 0] <= faces[["x2"]].to_numpy() + 2)
    assert inside.mean() > 0.95


def test_fake_crops_use_the_original_boxes(sample_run):
    crops = sample_run["crops"].set_index("key")
    fakes = crops[crops["label"] == 1]
    assert len(fakes) > 0 and sample_run["cstatus"]["ok"].all()
    for key, row in fakes.iterrows():
        orig = crops.loc[crop_key(row["original"], row["frame"], row["track"])]
        assert orig["label"] == 0
        assert tuple(orig[["x1", "y1", "x2", "y2"]]) == tuple(row[["x1", "y1", "x2", "y2"]])
    # a crop is the frame region of its box, margin 30 % around the detected face
    row = fakes.iloc[0]
    image = read_crop(sample_run["out"] / "crops", row["shard"], row.name)
    assert image.shape == (row["y2"] - row["y1"], row["x2"] - row["x1"], 3)
    lm = row[LANDMARK_COLUMNS].to_numpy(float).reshape(5, 2)
    assert (lm >= 0).all() and (lm[:, 0] < image.shape[1]).all() and (lm[:, 1] < image.shape[0]).all()


def test_diff_masks_light_up_on_fakes(sample_run):
    diffs = sample_run["diffs"]
    assert diffs["ok"].all() and len(diffs) == (sample_run["crops"]["label"] == 1).sum()
    assert diffs["mean"].mean() > 0.05
    row = diffs.iloc[0]
    mask = read_crop(sample_run["out"] / "diffs", row["shard"], row["key"])
    assert mask.ndim == 2 and mask.dtype == np.uint8


def test_crop_box_margin_and_frame_edge():
    assert crop_box(np.array([100, 100, 200, 150]), 640, 480, 0.3) == (70, 85, 230, 165)
    assert crop_box(np.array([-5, 400, 60, 478]), 640, 480, 0.3) == (0, 376, 80, 480)  # clipped
    assert crop_box(np.array([600, 0, 640, 40]), 640, 480, 0.0) == (600, 0, 640, 40)


def _ffpp_index(root):
    index = build_index(root, progress=False)
    index["frames"] = index["frames"].clip(upper=60)  # the first 60 frames keep the test short
    return index


def test_ffpp_faces_crops_and_diff_masks(ffpp_root, detector, tmp_path):
    index = _ffpp_index(ffpp_root)
    faces, status = detect_videos(index, detector, every=10, min_track=3, workers=1, progress=False)
    assert status["ok"].all() and len(status) == 2
    crops, cstatus = crop_videos(index, faces, tmp_path / "crops", workers=1, progress=False)
    assert cstatus["ok"].all() and set(crops["video"]) == set(index["video"])
    diffs = diff_crops(crops, tmp_path / "crops", tmp_path / "diffs", workers=1, progress=False)
    assert diffs["ok"].all()
    merged = diffs.merge(crops[["key", "video", "shard"]], on="key")
    for method in ("Deepfakes", "FaceSwap"):
        row = merged[merged["video"].str.contains(method)].iloc[0]
        mask = read_crop(tmp_path / "diffs", row["shard_x"], row["key"])
        h, w = mask.shape
        centre = mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]  # the face, inside the 30 % margin
        assert centre.mean() > 20, f"{method}: mask inside the face is {centre.mean():.1f}"
    real = crops[crops["label"] == 0].iloc[0]
    image = read_crop(tmp_path / "crops", real["shard"], real["key"])
    assert diff_mask(image, image).max() == 0


@pytest.fixture()
def bad_tree(tiny_sample, tmp_path):
    """One part: a good real + fake, a real with no face + its fake, a fake shorter than its original."""
    part = tmp_path / "root" / "dfdc_train_part_0"
    real, fake = copy_real_and_fake(tiny_sample, part)
    rng = np.random.default_rng(0)
    write_video(part / "noface.mp4", [rng.integers(0, 40, (120, 160, 3), dtype=np.uint8) for _ in range(20)], 25)
    write_video(part / "noface_fake.mp4", [rng.integers(0, 40, (120, 160, 3), dtype=np.uint8) for _ in range(20)], 25)
    frames, _ = read_frames(part / fake)
    write_video(part / "short.mp4", [frames[i] for i in range(len(frames) // 2)], 25)
    write_video(part / "gone.mp4", [frames[i] for i in range(10)], 25)
    meta = {real: {"label": "REAL"}, fake: {"label": "FAKE", "original": real},
            "noface.mp4": {"label": "REAL"}, "noface_fake.mp4": {"label": "FAKE", "original": "noface.mp4"},
            "short.mp4": {"label": "FAKE", "original": real}, "gone.mp4": {"label": "REAL"}}
    (part / "metadata.json").write_text(json.dumps(meta))
    index = build_index(tmp_path / "root", progress=False)
    (part / "gone.mp4").write_bytes(b"not a video any more")  # breaks after indexing
    return index, real, fake


def test_bad_input_is_recorded_and_the_rest_survives(bad_tree, detector, tmp_path):
    index, real, fake = bad_tree
    faces, dstatus = detect_videos(index, detector, every=5, min_track=2, workers=2, progress=False)
    ds = dstatus.set_index("video")["error"]
    assert ds["dfdc_train_part_0/noface.mp4"] == "no face"
    assert "not a video or image file" in ds["dfdc_train_part_0/gone.mp4"]
    assert ds[f"dfdc_train_part_0/{real}"] == ""
    crops, cstatus = crop_videos(index, faces, tmp_path / "crops", workers=2, progress=False)
    cs = cstatus.set_index("video")
    assert cs.loc["dfdc_train_part_0/noface_fake.mp4", "error"] == "original has no faces"
    assert cs.loc["dfdc_train_part_0/short.mp4", "error"].startswith("shorter than its original")
    assert 0 < cs.loc["dfdc_train_part_0/short.mp4", "crops"] < cs.loc[f"dfdc_train_part_0/{fake}", "crops"]
    assert cs.loc[f"dfdc_train_part_0/{fake}", "ok"] and cs.loc[f"dfdc_train_part_0/{real}", "ok"]
    diffs = diff_crops(crops, tmp_path / "crops", tmp_path / "diffs", workers=1, progress=False)
    assert diffs["ok"].all() and len(diffs) == (crops["label"] == 1).sum()


def test_missing_original_crop_is_recorded(sample_run, tmp_path):
    crops = sample_run["crops"]
    fake = crops[crops["label"] == 1].iloc[:1]
    lonely = pd.concat([fake, crops[crops["label"] == 0].iloc[:0]])
    diffs = diff_crops(lonely, sample_run["out"] / "crops", tmp_path / "d", workers=0, progress=False)
    assert not diffs["ok"].iloc[0] and diffs["error"].iloc[0] == "original crop missing"


def test_tiny_crop_diff_is_recorded_not_fatal(tmp_path):
    from dfdc.store import ShardWriter, encode_png

    w = ShardWriter(tmp_path / "c")
    rows = []
    for video, label in (("r.mp4", 0), ("f.mp4", 1)):
        key = crop_key(video, 0, 0)
        shard = w.add(key, encode_png(np.full((5, 4, 3), 100 + label, np.uint8)))
        rows.append({"key": key, "video": video, "original": "r.mp4", "frame": 0, "track": 0, "label": label,
                     "shard": shard})
    w.close()
    diffs = diff_crops(pd.DataFrame(rows), tmp_path / "c", tmp_path / "d", workers=1, progress=False)
    assert not diffs["ok"].iloc[0] and "window" in diffs["error"].iloc[0]
