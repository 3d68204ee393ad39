"""DVC integration in a temporary git repo: what reruns after which change."""
import json
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import FFPP, make_dvc_repo, user_env, venv_env
from conftest import dvc as run_dvc
from dfdc.store import file_sha256

PARAMS = """
sample: {seed: 1, parts: 2, reals_per_part: 1, fakes_per_real: 1, seconds_min: 0.8, seconds_max: 1.0}
data: {root: data/sample, deps: data/sample}
index: {workers: 0}
detect: {every: 5, min_track: 2, workers: 1}
crops: {margin: 0.3, workers: 1}
diffs: {workers: 1}
clips: {window: 4, stride: 1, per_track: 1, size: 32, workers: 1}
folds: {k: 2, holdout: 0, group: auto, seed: 0, leave_out: null}
train:
  device: cpu
  models:
    a: {arch: mobilenetv3_small_100, input_size: 32, epochs: 1, batch_size: 8, lr: 0.001}
  stacked:
    b: {arch: mobilenetv3_small_100, input_size: 32, epochs: 1, batch_size: 8, lr: 0.001, backbone_from: a,
        backbone_lr_scale: 0.0}
  clips:
    c: {arch: r3d_mini, input_size: 32, epochs: 1, batch_size: 8, lr: 0.001}
  clips_stacked:
    l: {arch: lstm_mobilenetv3_small_100, input_size: 32, epochs: 1, batch_size: 8, lr: 0.001, backbone_from: a,
        backbone_lr_scale: 0.0}
predict: {strategy: thresholds, thresholds: {levels: 1, splits: 2}, tta: false, device: cpu}
degrade: {workers: 1}
evaluate: {method: equal, bootstrap: 50, splits: 2, external: {}}
"""
PREP = ["sample", "index", "detect", "crops", "diffs", "clips", "folds"]
CLIP_MODELS = ["train_clips@c", "train_clips_stacked@l", "predict_clips@c", "predict_clips_stacked@l",
               "predict_degraded_clips@c", "predict_degraded_clips_stacked@l"]
MODELS = ["train@a", "train_stacked@b", "predict@a", "predict_stacked@b", "degrade", "crops_degraded",
          "clips_degraded", "predict_degraded@a", "predict_degraded_stacked@b", *CLIP_MODELS, "evaluate"]
ALL = PREP + MODELS


CHUNKED = ["data/detect", "data/crops", "data/diffs", "data/clips"]


def _outputs(repo) -> dict[str, str]:
    """sha256 of every file of the chunked stages' outputs and tables."""
    files = [f for d in CHUNKED for f in sorted((repo / d).rglob("*")) if f.is_file()]
    files += [repo / "data" / f"{n}.parquet" for n in ("faces", "crops", "diffs", "clips")]
    return {f.relative_to(repo).as_posix(): file_sha256(f) for f in files}


def ran(out) -> set[str]:
    return {s for s in ALL if f"Running stage '{s}'" in out.stdout}


@pytest.mark.slow
def test_preprocessing_dag_reruns_only_what_changed(tmp_path):
    repo = make_dvc_repo(tmp_path / "repo", PARAMS)
    env = user_env(repo)
    dvc = lambda *args: run_dvc(repo, *args, env=env)  # noqa: E731
    first = dvc("repro", *PREP)
    assert ran(first) == set(PREP)
    index = pd.read_parquet(repo / "data/index.parquet")
    assert len(index) == 4 and index["ok"].all() and sorted(index["label"]) == [0, 0, 1, 1]
    crops = pd.read_parquet(repo / "data/crops.parquet")
    assert set(crops["video"]) == set(index["video"])
    assert len(pd.read_parquet(repo / "data/diffs.parquet")) == (crops["label"] == 1).sum()

    assert ran(dvc("repro", *PREP)) == set()
    # bytecode and numba's kernel cache landed inside the hashed code folders; DVC must not see them
    assert list((repo / "dfdc" / "faces").glob("__pycache__/*.pyc")) and list(repo.glob("dfdc/__pycache__/*.nbi"))
    assert "up to date" in dvc("status", *PREP).stdout

    # a new dataset part: each chunked stage processes that part's videos only, and the outputs equal a clean run
    two = _outputs(repo)
    (repo / "params.yaml").write_text(PARAMS.replace("parts: 2", "parts: 3"))
    grown = dvc("repro", *PREP)
    assert ran(grown) == set(PREP)
    for stage in ("detect", "crops", "diffs", "clips"):
        line = next(li for li in grown.stdout.splitlines() if li.startswith(f"{stage}: "))
        assert "; 1 chunks processed" in line and ", 2 kept" in line, line
    three = _outputs(repo)
    for out in CHUNKED:
        shutil.rmtree(repo / out)
    assert ran(dvc("repro", *PREP)) == {"detect", "crops", "diffs", "clips"}
    assert _outputs(repo) == three
    (repo / "params.yaml").write_text(PARAMS)  # and the part removed again: its chunks go, nothing is redone
    shrunk = dvc("repro", *PREP)
    assert shrunk.stdout.count("0 chunks processed") == 4 and _outputs(repo) == two

    (repo / "params.yaml").write_text(PARAMS.replace("margin: 0.3", "margin: 0.2"))
    assert ran(dvc("repro", *PREP)) == {"crops", "diffs"}
    narrower = pd.read_parquet(repo / "data/crops.parquet")
    assert ((narrower["x2"] - narrower["x1"]).mean() < (crops["x2"] - crops["x1"]).mean())

    # the whole DAG, then an experiment on one model's key
    assert ran(dvc("repro")) == set(MODELS)
    assert ran(dvc("repro")) == set() and "up to date" in dvc("status").stdout
    metrics = json.loads((repo / "metrics/ensemble.json").read_text())
    assert set(metrics["models"]) == {"a", "b", "c", "l"} and metrics["ensemble"]["n"] >= 1
    shipped = json.loads((repo / "models/ensemble.json").read_text())
    assert sorted(shipped["members"]) == ["a", "b", "c", "l"] and shipped["strategy"] == "thresholds"
    clips = pd.read_parquet(repo / "data/clips.parquet")
    assert len(clips) and (clips["frames"] == 4).all() and (clips["codec"] == "mp4").all()
    assert shipped["members"]["a"]["checkpoint"] == "a/best.pt"
    fitted = json.loads((repo / "data/preds/a/thresholds.json").read_text())
    assert shipped["members"]["a"]["rules"] == fitted["rules"]
    assert fitted["cross_fitted"] is False  # one original in the holdout: nothing to cross-fit, the plain mean
    assert shipped["members"]["a"]["rules_from"] == "data/preds/a/thresholds.json"
    degraded = json.loads((repo / "metrics/degraded.json").read_text())
    assert degraded["ensemble"]["n"] == metrics["ensemble"]["n"] and "calibration" in metrics
    assert len(pd.read_parquet(repo / "data/degraded/index.parquet")) == metrics["ensemble"]["n"]
    for plot in ("roc.csv", "calibration.csv", "roc.png"):
        assert (repo / "metrics/plots" / plot).exists()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, env=venv_env(), check=True, capture_output=True)  # noqa: E731
    git("add", "-A")
    git("commit", "-qm", "baseline")

    # leaving a manipulation out (and switching which) makes training and evaluation stale, no preprocessing
    methods = sorted(pd.read_parquet(repo / "data/folds.parquet")["method"].dropna().unique())
    assert methods and set(methods) <= {"face", "inner", "mouth"}
    trains = {"train@a", "train_stacked@b", "train_clips@c", "train_clips_stacked@l"}
    for method in (methods[0], methods[-1]):
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["folds"]["leave_out"] = method
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        status = dvc("status").stdout
        assert {s.rstrip(":") for s in status.split() if s.rstrip(":") in ALL} == trains | {"evaluate"}, status
    dry = ran(dvc("repro", "--dry"))
    assert trains | {"evaluate"} <= dry and not dry & {*PREP, "degrade", "crops_degraded", "clips_degraded"}
    git("checkout", "params.yaml")

    exp = dvc("exp", "run", "-S", "train.stacked.b.lr=0.05")  # nothing reads b but its stages and evaluate
    assert ran(exp) == {"train_stacked@b", "predict_stacked@b", "predict_degraded_stacked@b", "evaluate"}
    diff = dvc("metrics", "diff", "--json")
    changed = json.loads(diff.stdout)
    assert "metrics/train/b.json" in changed and "metrics/train/a.json" not in changed
    show = dvc("exp", "show", "--no-pager", "--csv")
    assert "train.stacked.b.lr" in show.stdout and "0.05" in show.stdout
    plots = json.loads(dvc("plots", "diff", "--json").stdout)["data"]
    assert any("roc.csv" in name for name in plots) and any("live/b" in name for name in plots)
    if (FFPP / "original_sequences").is_dir():  # a labelled set the models never saw, scored by its own stage
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["evaluate"]["external"] = {"ffpp": str(FFPP)}
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        assert "Running stage 'evaluate_external@ffpp'" in dvc("repro", "evaluate_external@ffpp").stdout
        ext = json.loads((repo / "metrics/external/ffpp/metrics.json").read_text())
        assert ext["ensemble"]["n"] == 4 and set(ext["by_method"]) == {"Deepfakes", "FaceSwap"}
        assert "metrics/external/ffpp/metrics.json" in dvc("metrics", "show", "--json").stdout
    # a clips setting reruns the clips and the clip models only (and evaluate, which reads them all)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["clips"]["per_track"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc("repro")) == {"clips", "clips_degraded", *CLIP_MODELS, "evaluate"}
    assert len(pd.read_parquet(repo / "data/clips.parquet")) > len(clips)
    # b's backbone comes from a: retraining a makes DVC rerun b too
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["models"]["a"]["lr"] = 0.05
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc("repro", "train@a")) == {"train@a"}
    status = dvc("status").stdout
    stale = {s.rstrip(":") for s in status.split() if s.rstrip(":") in MODELS}
    assert stale == {"train_stacked@b", "train_clips_stacked@l", "predict@a", "predict_degraded@a", "evaluate"}, status
    assert "models/a" in status.split("train_stacked@b:")[1].split("predict@a:")[0]
    assert "models/a" in status.split("train_clips_stacked@l:")[1]  # the LSTM's frozen backbone is a's
