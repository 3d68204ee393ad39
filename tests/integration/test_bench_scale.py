"""`dfdc bench scale` at a tiny N: a generated dataset through the preprocessing stages and DVC."""
import pytest

from dfdc.bench_scale import dfdc_file_counts, run_scale

PARAMS = {"detect": {"chunk": 256}, "crops": {"chunk": 64}}


def test_bench_scale_at_a_tiny_n(tmp_path):
    from dfdc.bench_scale import STAGES, extrapolate, format_scale

    row = run_scale(12, tmp_path, workers=1, per_part=2, seconds=(0.6, 0.6), dask=True)
    assert (row["videos"], row["reals"], row["fakes"], row["parts"]) == (12, 4, 8, 2)
    assert set(row["stages"]) == set(STAGES)
    for s in STAGES:
        assert row["stages"][s]["wall_s"] > 0 and 50 < row["stages"][s]["peak_mib"] < 8000
    assert row["status_clean"] and row["noop_ran"] == 0 and row["noop_repro_s"] > 0
    assert row["dask"]["same_bytes"] and row["dask"]["wall_s"] > 0  # `cut` on a Dask cluster: the same files
    assert row["commit_mb_s"] > 0 and row["commit_hardlink_mb_s"] > 0
    outs = row["outputs"]
    # one chunk per part (2 parts) in each chunked output, with its done.json
    assert outs["data/detect"]["files"] == 2 * 2 + 1 and outs["data/crops"]["files"] == 4 * 2 + 1
    assert outs["data/clips"]["files"] == 3 * 2 + 1
    est = extrapolate(row, cores=16, videos=128_154)
    assert est["reals"] == round(128_154 * 19_154 / 119_154)
    assert abs(est["total_h"] - sum(est["hours"].values())) < 1e-9 and est["total_h"] > 0
    assert est["hours"]["detect"] == pytest.approx(
        row["stages"]["detect"]["wall_s"] / 4 * est["reals"] / 16 / 3600)
    text = format_scale({"rows": {12: row}, "hd": row, "dfdc": est, "dfdc_files": dfdc_file_counts(PARAMS)})
    assert "no-op `dvc repro`" in text and "| total |" in text and "Dask workers" in text
