"""DVC integration: sample and index through `dvc repro` in a temporary git repo."""
import pandas as pd
import pytest

from conftest import dvc, make_dvc_repo

PARAMS = """
sample: {seed: 1, parts: 2, reals_per_part: 1, fakes_per_real: 1, seconds_min: 0.6, seconds_max: 0.8}
data: {root: data/sample, deps: data/sample}
index: {workers: 0}
"""


@pytest.mark.slow
def test_repro_sample_and_index_then_nothing(tmp_path):
    repo = make_dvc_repo(tmp_path / "repo", PARAMS)
    out = dvc(repo, "repro", "index")
    assert "Running stage 'sample'" in out.stdout and "Running stage 'index'" in out.stdout
    index = pd.read_parquet(repo / "data/index.parquet")
    assert len(index) == 4 and index["ok"].all()
    assert sorted(index["label"].tolist()) == [0, 0, 1, 1]
    assert (repo / "dvc.lock").exists()

    again = dvc(repo, "repro", "index")
    assert "Running stage" not in again.stdout
    status = dvc(repo, "status")
    assert "up to date" in status.stdout

    # a params change of one stage reruns it and what follows
    (repo / "params.yaml").write_text(PARAMS.replace("workers: 0", "workers: 1"))
    third = dvc(repo, "repro", "index")
    assert "Running stage 'index'" in third.stdout and "Running stage 'sample'" not in third.stdout
