"""`clips`: windows along the face tracks, frame-aligned across a real video and its fakes, bad cases recorded."""
import json

import numpy as np
import pandas as pd
import pytest
from helpers import copy_real_and_fake

from dfdc.data.clips import ClipDataset, read_clips
from dfdc.datasets.index import build_index
from dfdc.preprocess.clips import cut_square, square_box, window_box, window_starts
from dfdc.preprocess.cut import clip_videos
from dfdc.preprocess.detect import detect_videos
from dfdc.video import read_frames, write_video


def test_windows_spread_evenly_inside_the_track():
    assert window_starts(0, 60, 8, 2) == [0, 53]
    assert window_starts(0, 60, 8, 3) == [0, 26, 53]
    assert window_starts(10, 20, 11, 4) == [10]  # exactly one window fits
    assert window_starts(10, 20, 12, 2) == []  # the track is shorter than a window
    assert window_starts(0, 60, 8, 1) == [26]  # one window: the middle


def test_the_box_is_the_union_over_the_window_and_reaches_past_the_edge_in_black():
    det = pd.DataFrame({"frame": [0, 10, 20, 30], "x1": [10, 20, 30, 40], "y1": [10, 10, 10, 10],
                        "x2": [30, 40, 50, 60], "y2": [30, 30, 30, 30]})
    # window [12, 18]: detections 10 and 20 bracket it
    x1, y1, x2, y2 = window_box(det, 12, 18, margin=0.0)
    assert (x1, x2) == (20, 50) and x2 - x1 == y2 - y1  # square about the union 20..50 x 10..30
    frame = np.full((40, 40, 3), 200, np.uint8)
    box = square_box(np.array([0, 0, 20, 20]), margin=0.5)  # (-10, -10, 30, 30)
    assert box == (-10, -10, 30, 30)
    out = cut_square(frame, box, 40)
    assert out.shape == (40, 40, 3) and out[:10].max() == 0 and out[:, :10].max() == 0 and out[20:, 20:].min() == 200


@pytest.fixture(scope="module")
def clips_png(tiny_prep, tmp_path_factory):
    out = tmp_path_factory.mktemp("clips") / "png"
    clips, status = clip_videos(tiny_prep["index"], tiny_prep["faces"], out, window=4, stride=2, per_track=2,
                                size=32, codec="png", workers=1, progress=False)
    return clips, status, out


def test_clips_cut_consecutive_frames_at_the_originals_boxes(tiny_prep, clips_png):
    clips, status, out = clips_png
    index = tiny_prep["index"]
    assert status["ok"].all() and set(clips["video"]) == set(index["video"])
    assert (clips["frames"] == 4).all() and (clips["stride"] == 2).all() and (clips["codec"] == "png").all()
    key = lambda c: c["key"].str.split("|", n=1).str[1]  # noqa: E731 - (track, start)
    real = clips[clips["label"] == 0]
    for fake_video, rows in clips[clips["label"] == 1].groupby("video"):
        source = rows["original"].iloc[0]
        assert sorted(key(rows)) == sorted(key(real[real["video"] == source]))  # the original's windows, all
    row = clips[clips["label"] == 1].iloc[0]
    clip = next(read_clips(pd.DataFrame([row]), out))[0]
    path = index.set_index("video").loc[row["video"], "path"]
    wanted = [row["frame"] + 2 * t for t in range(4)]
    frames, _ = read_frames(path, wanted)
    box = (row["x1"], row["y1"], row["x2"], row["y2"])
    expected = np.stack([cut_square(frames[i], box, 32) for i in wanted])
    np.testing.assert_array_equal(clip, expected)  # every frame of the window, 2 frames apart, one fixed box


def test_mp4_clips_round_trip_close_to_png(tiny_prep, clips_png, tmp_path):
    png, _, png_dir = clips_png
    mp4, status, mp4_dir = *clip_videos(tiny_prep["index"], tiny_prep["faces"], tmp_path / "mp4", window=4,
                                        stride=2, per_track=2, size=32, codec="mp4", crf=18, workers=1,
                                        progress=False), tmp_path / "mp4"
    assert list(mp4["key"]) == list(png["key"]) and (mp4["codec"] == "mp4").all()
    a = np.concatenate(next(read_clips(png.head(8), png_dir)))
    b = np.concatenate(next(read_clips(mp4.head(8), mp4_dir)))
    err = np.abs(a.astype(int) - b.astype(int)).mean()
    assert a.shape == b.shape and 0 < err < 12, err  # lossy, close (about 8 levels at 32 px, 4 at 64 px)
    ds = ClipDataset(mp4, mp4_dir, None)
    assert ds[0]["x"].shape == (4, 32, 32, 3)
    assert len(list((mp4_dir).iterdir())) < len(mp4)  # shards, not a file per clip


@pytest.fixture()
def odd_tree(tiny_sample, tmp_path):
    """A real and its fake, a fake shorter than its original, and a real whose face hugs the frame edge."""
    part = tmp_path / "root" / "dfdc_train_part_0"
    real, fake = copy_real_and_fake(tiny_sample, part)
    frames, _ = read_frames(part / fake)
    write_video(part / "short.mp4", [frames[i] for i in range(len(frames) // 3)], 25)
    meta = {real: {"label": "REAL"}, fake: {"label": "FAKE", "original": real},
            "short.mp4": {"label": "FAKE", "original": real}}
    (part / "metadata.json").write_text(json.dumps(meta))
    return build_index(tmp_path / "root", progress=False), real


def test_short_fakes_short_tracks_and_edge_faces_are_recorded(odd_tree, detector, tmp_path):
    index, real = odd_tree
    faces, _ = detect_videos(index, detector, every=5, min_track=2, workers=1, progress=False)
    # a window longer than any track: every video recorded, none fatal
    none, status = clip_videos(index, faces, tmp_path / "long", window=200, codec="png", workers=1, progress=False)
    assert none.empty and not status["ok"].any() and (status["short_tracks"] > 0).all()
    assert status["error"].str.contains("shorter than one window").all()
    clips, status = clip_videos(index, faces, tmp_path / "ok", window=4, stride=2, per_track=3, size=32,
                                margin=2.0, codec="png", workers=1, progress=False)
    short = status.set_index("video").loc[index[index["path"].str.endswith("short.mp4")]["video"].iloc[0]]
    assert short["missing_clips"] > 0 and short["error"].startswith("shorter than its original")
    assert (status["edge_clips"] > 0).any() and clips["edge"].any()  # a 2x margin reaches past the frame


def test_ffpp_fake_and_real_clips_are_frame_aligned(ffpp_root, detector, tmp_path):
    index = build_index(ffpp_root, progress=False)
    index["frames"] = index["frames"].clip(upper=60)
    faces, _ = detect_videos(index, detector, every=10, min_track=3, workers=1, progress=False)
    clips, status = clip_videos(index, faces, tmp_path / "c", window=6, stride=1, per_track=2, size=64,
                                margin=0.3, codec="png", workers=1, progress=False)
    assert status["ok"].all() and set(clips["video"]) == set(index["video"])
    clips["place"] = clips["key"].str.split("|", n=1).str[1]
    by_place = clips[clips["label"] == 0].set_index(["original", "place"])
    checked = 0
    for row in clips[clips["label"] == 1].itertuples():
        real = by_place.loc[(row.original, row.place)]
        f = next(read_clips(pd.DataFrame([row._asdict()]), tmp_path / "c"))[0].astype(int)
        r = next(read_clips(pd.DataFrame([real.to_dict() | {"key": real["key"]}]), tmp_path / "c"))[0].astype(int)
        border = np.ones((64, 64), bool)
        border[12:52, 12:52] = False  # outside the face: the fake kept the original's pixels
        same = np.abs(f - r)[:, border].mean()
        shifted = np.abs(f[1:] - r[:-1])[:, border].mean()  # one frame off
        assert same < 3.0 and same < shifted, (row.video, same, shifted)
        checked += 1
    assert checked >= 4


def test_3d_cutmix_and_codec_augmentation_on_real_clips(clips_png):
    import torch

    from dfdc.data.batch import Batch
    from dfdc.data.codec import apply_codec, draw_codec_params, reencode_clip
    from dfdc.data.mix import CutMix

    clips, _, out = clips_png
    real = clips[clips["label"] == 0].head(2)
    fake = clips[clips["label"] == 1].head(2)
    table = pd.concat([real, fake])
    x = np.stack(next(read_clips(table, out)))  # (4, T, H, W, 3) real clips of the tiny sample
    batch = Batch(torch.from_numpy(x), torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.arange(4)).unit()
    rng = np.random.default_rng(3)
    mixed = CutMix(alpha=1.0, p=1.0)(batch, np.random.default_rng(3))
    assert mixed.x.shape == batch.x.shape == (4, 3, 4, 32, 32) and 0 <= mixed.x.min() and mixed.x.max() <= 1
    changed = (mixed.x != batch.x).any(dim=1)  # (B, T, H, W): the pasted voxels that differ from the item's own
    for i in range(4):
        share = abs(mixed.y[i].item() - batch.y[i].item())
        if share:  # a real/fake pair: the target moved by the pasted cuboid's share of the clip
            assert changed[i].float().mean().item() <= share + 1e-6
            assert changed[i].float().mean().item() > 0.5 * share  # real clips differ almost everywhere
    clip = x[2]
    params = draw_codec_params(rng)
    out_clip = apply_codec(clip, params)
    assert out_clip.shape == clip.shape and out_clip.dtype == np.uint8 and not np.array_equal(out_clip, clip)
    assert np.abs(out_clip.astype(int) - clip.astype(int)).mean() < 40  # the same faces, re-encoded
    again = reencode_clip(clip, np.random.default_rng(5))
    assert np.array_equal(again, reencode_clip(clip, np.random.default_rng(5)))


def test_a_clip_that_cannot_be_encoded_loses_its_video_not_the_stage(tiny_prep, tmp_path, monkeypatch):
    import dfdc.preprocess.clips as stage
    from dfdc.data.codec import CodecError

    bad = tiny_prep["index"]["video"].iloc[0]
    real = stage.encode_clip_mp4

    def encode(frames, **kw):
        if encode.video == bad:
            raise CodecError("ffmpeg failed to encode")
        return real(frames, **kw)

    def result(self, error=""):
        encode.video = self.job.video
        return original(self, error)

    original, encode.video = stage.ClipCut.result, None
    monkeypatch.setattr(stage, "encode_clip_mp4", encode)
    monkeypatch.setattr(stage.ClipCut, "result", result)
    clips, status = clip_videos(tiny_prep["index"], tiny_prep["faces"], tmp_path / "c", window=3, stride=2,
                                per_track=1, size=32, workers=0, progress=False)
    row = status.set_index("video").loc[bad]
    assert not row["ok"] and row["error"] == "ffmpeg failed to encode" and bad not in set(clips["video"])
    assert status["ok"].sum() == len(status) - 1
