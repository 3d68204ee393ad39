"""The benchmark functions on the tiny sample: every column filled, plausible values, readable tables."""
import math

import pytest

from dfdc.bench import bench_predict, bench_preprocess, format_predict_table, format_table
from dfdc.bench_scale import dfdc_file_counts


def test_bench_preprocess_on_the_tiny_sample(tiny_sample):
    row = bench_preprocess(tiny_sample, every=5, workers=1)
    assert row["videos"] == 12 and row["reals"] == 4
    for key in ("decode_floor_s", "baseline_s", "detect_s", "crops_s", "diff_ours_ms", "diff_skimage_ms"):
        assert row[key] > 0, key
    assert math.isclose(row["ours_s"], row["detect_s"] + row["crops_s"])
    assert 0 < row["iou_mean"] <= 1 and row["diff_max_abs"] <= 2
    table = format_table([row]).splitlines()
    assert len(table) == 3 and table[2].startswith("| sample | 12 (4 real) |")


def test_bench_predict_on_the_tiny_sample(tiny_sample, tiny_checkpoint):
    from dfdc.inference.load import Scoring
    from dfdc.inference.scorer import from_checkpoint

    row = bench_predict(tiny_sample, Scoring.of([from_checkpoint(tiny_checkpoint)], tta=False, frames=8), workers=1)
    assert row["videos"] == 12 and 0 < row["scored"] <= 12
    assert row["floor_s"] > 0 and row["total_s"] > 0 and row["classify_s"] > 0
    assert math.isclose(row["ratio_to_floor"], row["total_s"] / row["floor_s"])
    table = format_predict_table([row]).splitlines()
    assert len(table) == 3 and "| tiny x 8 | 10 | none |" in table[2]  # the model by name


def test_bench_predict_on_a_folder_without_videos_says_so(tmp_path):
    from dfdc.bench import bench_predict

    with pytest.raises(FileNotFoundError, match="no .mp4 video under"):
        bench_predict(tmp_path, None)


def test_bench_clips_on_the_tiny_sample(tiny_sample):
    from dfdc.bench import bench_clips, format_clips_table
    from dfdc.config.clips import ClipsParams
    from dfdc.config.detect import DetectParams

    row = bench_clips(tiny_sample, ClipsParams(window=3, stride=2, per_track=1, size=32),
                      DetectParams(every=5, min_track=2), workers=1)
    assert row["videos"] == 12 and row["clips"] >= 12
    assert row["floor_s"] > 0 and row["clips_s"] > 0 and row["kb_per_clip"] > 0
    assert math.isclose(row["ratio_to_floor"], row["clips_s"] / row["floor_s"])
    table = format_clips_table([row]).splitlines()
    assert len(table) == 3 and table[2].startswith(f"| sample | 12 | {row['clips']} (3 x 2, 32, mp4) |")


def test_bench_clip_models_reports_throughput():
    from dfdc.bench import bench_clip_models, format_clip_models_table

    rows = bench_clip_models(("r3d_mini", "lstm_regnetx_002"), clip_len=3, size=32, batch=2, steps=1)
    assert [r["model"] for r in rows] == ["r3d_mini", "lstm_regnetx_002"]
    assert [r["trained"] for r in rows] == ["all", "head"] and all(r["clips_per_s"] > 0 for r in rows)
    assert "| r3d_mini | 3 x 32 | all |" in format_clip_models_table(rows)


PARAMS = {"detect": {"chunk": 256}, "crops": {"chunk": 64}}


def test_dfdc_file_counts_stay_in_the_thousands():
    counts = dfdc_file_counts(PARAMS)
    # 128,154 x 19,154 / 119,154 = 20,601 reals in 50 parts: 413 a part, 2 detect chunks (2 files each) and
    # 7 crops / clips chunks (crops: 4 files each with the diff masks; clips: 3) a part, plus one done.json each
    assert counts == {"data/detect": 201, "data/crops": 1401, "data/clips": 1051}


def test_bench_landmarks_on_the_tiny_sample(tiny_prep, tmp_path):
    """Per-crop fit times as stored and at 1080p sizes, through `dfdc bench landmarks` on a crops table."""
    import shutil

    from dfdc.bench import bench_landmarks, format_landmarks_table
    from dfdc.cli import main
    from dfdc.store import write_parquet

    shutil.copytree(tiny_prep["crops_dir"], tmp_path / "crops")
    write_parquet(tiny_prep["crops"], tmp_path / "crops.parquet")
    write_parquet(tiny_prep["faces"], tmp_path / "faces.parquet")
    write_parquet(tiny_prep["index"], tmp_path / "index.parquet")
    rows = bench_landmarks(tmp_path / "crops.parquet", tmp_path / "faces.parquet", tmp_path / "index.parquet", n=12)
    assert [r["size"] for r in rows] == ["as stored", "1080p"] and all(r["crops"] == 12 for r in rows)
    assert rows[1]["crop_px_median"] > rows[0]["crop_px_median"] and all(r["ms_mean"] > 0 for r in rows)
    assert all(0.5 <= r["fits_ok"] <= 1 for r in rows)
    assert format_landmarks_table(rows).count("\n") == 3
    assert main(["bench", "landmarks", str(tmp_path / "crops.parquet")]) == 0
