"""The landmarks stage's work on real crops: 68 points per crop in the crops' order, resumable, failures recorded."""
from __future__ import annotations

import numpy as np
import pandas as pd

from dfdc.faces.landmarks import DENSE_COLUMNS, MAX_ERROR, table_dense
from dfdc.preprocess.landmarks import landmarks_chunked


def test_landmarks_of_real_crops(tiny_prep, tmp_path):
    crops, faces = tiny_prep["crops"], tiny_prep["faces"]
    table, run = landmarks_chunked(crops, faces, tiny_prep["crops_dir"], tmp_path / "lm", workers=0, progress=False)
    assert table["key"].tolist() == crops["key"].tolist()
    assert run.processed == crops["shard"].nunique() and run.kept == 0
    ok = table["dense_ok"].to_numpy()
    assert ok.mean() > 0.7  # the sample's frontal faces fit; profiles fall back
    pts = table_dense(table)
    assert np.isfinite(pts[ok]).all() and (table.loc[ok, "five_error"] <= MAX_ERROR).all()
    assert (table.loc[~ok, "dense_error"] != "").all() and (table.loc[ok, "dense_error"] == "").all()
    # the points lie on the face: the nose tip near MTCNN's nose, inside the crop
    nose5 = crops[["lx2", "ly2"]].to_numpy()[ok]
    assert np.median(np.hypot(*(pts[ok, 30] - nose5).T)) < 10

    again, run2 = landmarks_chunked(crops, faces, tiny_prep["crops_dir"], tmp_path / "lm", workers=0, progress=False)
    assert run2.processed == 0 and run2.kept == run.processed
    pd.testing.assert_frame_equal(again, table)


def test_a_crop_without_a_box_or_pixels_is_recorded(tiny_prep, tmp_path):
    crops = tiny_prep["crops"].head(4).copy()
    crops.loc[crops.index[1], "track"] = 99  # no such track in the faces table
    crops.loc[crops.index[2], "key"] = "not/in/the/shard|000000|0"
    table, _ = landmarks_chunked(crops, tiny_prep["faces"], tiny_prep["crops_dir"], tmp_path / "lm", workers=0,
                                 progress=False)
    assert table["dense_ok"].tolist()[1:3] == [False, False]
    assert table["dense_error"].iloc[1] == "no detector box for this crop in the faces table"
    assert table["dense_error"].iloc[2].startswith("crop unreadable: ")
    assert table.loc[1:2, DENSE_COLUMNS].isna().all().all()


def test_a_lost_chunk_is_redone_alone(tiny_prep, tmp_path):
    crops, faces, work = tiny_prep["crops"], tiny_prep["faces"], tmp_path / "lm"
    table, run = landmarks_chunked(crops, faces, tiny_prep["crops_dir"], work, workers=0, progress=False)
    victim = sorted(work.glob("*.parquet"))[0]
    victim.unlink()
    again, rerun = landmarks_chunked(crops, faces, tiny_prep["crops_dir"], work, workers=0, progress=False)
    assert (rerun.processed, rerun.kept) == (1, run.processed - 1) and victim.exists()
    pd.testing.assert_frame_equal(again, table)


def test_shard_digests_come_from_the_crops_record(tmp_path):
    from dfdc.preprocess.chunks import DONE
    from dfdc.preprocess.landmarks import shard_digests
    from dfdc.store import file_sha256, write_json

    (tmp_path / "a.npz").write_bytes(b"aaaa")
    (tmp_path / "b.npz").write_bytes(b"bbbbbb")
    write_json({"identity": {}, "chunks": {"p.0000": {"files": {"a.npz": {"bytes": 4, "sha256": "recorded"},
                                                                "b.npz": {"bytes": 99, "sha256": "stale"}}}}},
               tmp_path / DONE)
    got = shard_digests(tmp_path, ["a.npz", "b.npz"])
    assert got == {"a.npz": "recorded", "b.npz": file_sha256(tmp_path / "b.npz")}  # a size off its record: read
    (tmp_path / DONE).write_text("{not json")
    assert shard_digests(tmp_path, ["a.npz"]) == {"a.npz": file_sha256(tmp_path / "a.npz")}
