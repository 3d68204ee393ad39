"""DVC integration in a temporary git repo: what reruns after which change."""
import pandas as pd
import pytest

from conftest import dvc, make_dvc_repo

PARAMS = """
sample: {seed: 1, parts: 2, reals_per_part: 1, fakes_per_real: 1, seconds_min: 0.8, seconds_max: 1.0}
data: {root: data/sample, deps: data/sample}
index: {workers: 0}
detect: {every: 5, min_track: 2, workers: 1}
crops: {margin: 0.3, workers: 1}
diffs: {workers: 1}
folds: {k: 2, holdout: 0}
"""
PREP = ["sample", "index", "detect", "crops", "diffs", "folds"]


def ran(out) -> set[str]:
    return {s for s in PREP if f"Running stage '{s}'" in out.stdout}


@pytest.mark.slow
def test_preprocessing_dag_reruns_only_what_changed(tmp_path):
    repo = make_dvc_repo(tmp_path / "repo", PARAMS)
    first = dvc(repo, "repro", *PREP)
    assert ran(first) == set(PREP)
    index = pd.read_parquet(repo / "data/index.parquet")
    assert len(index) == 4 and index["ok"].all() and sorted(index["label"]) == [0, 0, 1, 1]
    crops = pd.read_parquet(repo / "data/crops.parquet")
    assert set(crops["video"]) == set(index["video"])
    assert len(pd.read_parquet(repo / "data/diffs.parquet")) == (crops["label"] == 1).sum()

    assert ran(dvc(repo, "repro", *PREP)) == set()
    assert "up to date" in dvc(repo, "status").stdout

    (repo / "params.yaml").write_text(PARAMS.replace("margin: 0.3", "margin: 0.2"))
    assert ran(dvc(repo, "repro", *PREP)) == {"crops", "diffs"}
    narrower = pd.read_parquet(repo / "data/crops.parquet")
    assert ((narrower["x2"] - narrower["x1"]).mean() < (crops["x2"] - crops["x1"]).mean())
