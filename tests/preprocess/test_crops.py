"""detect -> crops (with the fakes' diff masks) on the tiny sample, the FF++ pairs and bad input."""
import json

import numpy as np
import pytest

from helpers import copy_real_and_fake

from dfdc.datasets.index import build_index
from dfdc.faces.crops import crop_box
from dfdc.masks import diff_mask
from dfdc.faces.crops import crop_key
from dfdc.preprocess.columns import LANDMARK_COLUMNS
from dfdc.preprocess.crops import mask_or_reason, read_crop
from dfdc.preprocess.cut import crop_videos
from dfdc.preprocess.detect import detect_videos
from dfdc.video import read_frames, write_video


@pytest.fixture(scope="module")
def sample_run(tiny_sample, detector, tmp_path_factory):
    index = build_index(tiny_sample, progress=False)
    faces, dstatus = detect_videos(index, detector, every=5, min_track=2, workers=1, progress=False)
    out = tmp_path_factory.mktemp("prep")
    crops, cstatus = crop_videos(index, faces, out / "crops", workers=1, progress=False)
    return dict(index=index, faces=faces, dstatus=dstatus, crops=crops, cstatus=cstatus, out=out)


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
    crops = sample_run["crops"]
    fakes, reals = crops[crops["label"] == 1], crops[crops["label"] == 0]
    assert (fakes["mask"] != "").all() and (fakes["mask_error"] == "").all() and len(fakes)
    assert (reals["mask"] == "").all() and reals["mask_mean"].isna().all()  # a real has no diff mask
    assert fakes["mask_mean"].mean() > 0.05
    row = fakes.iloc[0]
    mask = read_crop(sample_run["out"] / "crops", row["mask"], row["key"])
    assert row["mask"].endswith(".masks.npz") and mask.ndim == 2 and mask.dtype == np.uint8
    image = read_crop(sample_run["out"] / "crops", row["shard"], row["key"])
    assert mask.shape == image.shape[:2] and mask.mean() / 255 == pytest.approx(row["mask_mean"])


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
    fakes = crops[crops["label"] == 1]
    assert (fakes["mask"] != "").all()
    for method in ("Deepfakes", "FaceSwap"):
        row = fakes[fakes["video"].str.contains(method)].iloc[0]
        mask = read_crop(tmp_path / "crops", row["mask"], row["key"])
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
    fakes = crops[crops["label"] == 1]
    assert (fakes["mask"] != "").all()  # every fake crop (the short fake's too) has its original's crop


def test_a_fake_whose_original_cannot_be_cropped_keeps_its_crops_without_masks(tiny_sample, detector, tmp_path):
    part = tmp_path / "root" / "dfdc_train_part_0"
    real, fake = copy_real_and_fake(tiny_sample, part)
    (part / "metadata.json").write_text(json.dumps({real: {"label": "REAL"},
                                                    fake: {"label": "FAKE", "original": real}}))
    index = build_index(tmp_path / "root", progress=False)
    faces, _ = detect_videos(index, detector, every=5, min_track=2, workers=0, progress=False)
    (part / real).write_bytes(b"broken after detection")
    crops, status = crop_videos(index, faces, tmp_path / "crops", workers=0, progress=False)
    assert not status.set_index("video").loc[f"dfdc_train_part_0/{real}", "ok"]
    assert len(crops) and (crops["label"] == 1).all()
    assert (crops["mask"] == "").all() and (crops["mask_error"] == "original crop missing").all()
    _, _ = crop_videos(index, faces, tmp_path / "nomasks", workers=0, masks=False, progress=False)
    assert not list((tmp_path / "nomasks").glob("*.masks.npz"))


def test_a_mask_that_cannot_be_made_says_why():
    small = np.full((5, 4, 3), 100, np.uint8)
    assert mask_or_reason(small, small + 1)[0] is None and "window" in mask_or_reason(small, small + 1)[1]
    big = np.zeros((32, 32, 3), np.uint8)
    assert mask_or_reason(big, big[:16])[1].startswith("crop sizes differ")
    assert mask_or_reason(None, big) == (None, "original crop missing")
    mask, why = mask_or_reason(big, big)
    assert why == "" and mask.shape == (32, 32) and not mask.any()
