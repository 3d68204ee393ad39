"""The DAG under DVC, for real: one scratch repository built once per test run, then one test per question.

``built`` runs ``dvc repro`` on the whole DAG once (a tiny sample, two models that between them take both
groups of the model table and both kinds of input: a frame model on the crops, and an LSTM on the clips
whose frozen backbone is the frame model's) and commits it. Each other test works
in its own ``git clone`` of it whose DVC cache is the built repository's (``dvc checkout`` brings the
outputs back), so it changes one thing and checks what reruns without paying for the rest.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import FFPP, REPO, in_terminal, make_dvc_repo, user_env, venv_env
from helpers import dvc as run_dvc
from dfdc.store import file_sha256

PARAMS = """
sample: {seed: 1, parts: 2, reals_per_part: 1, fakes_per_real: 1, seconds_min: 0.8, seconds_max: 1.0}
data: {root: data/sample, deps: data/sample}
index: {workers: 0}
detect: {every: 5, min_track: 2, workers: 1}
crops: {margin: 0.3, workers: 1}
landmarks: {workers: 0}
clips: {window: 4, stride: 1, per_track: 1, size: 32}
folds: {k: 2, holdout: 0, group: auto, seed: 0, leave_out: null}
degrade: {seed: 0}
train:
  device: cpu
  models:
    a: {arch: mobilenetv3_small_100, inputs: crops, input_size: 32, epochs: 1, batch_size: 8, lr: 0.001}
  stacked:
    l: {arch: lstm_mobilenetv3_small_100, inputs: clips, input_size: 32, epochs: 1, batch_size: 8, lr: 0.001,
        backbone_from: a, backbone_lr_scale: 0.0}
predict: {strategy: thresholds, thresholds: {levels: 1, splits: 2}, tta: false, device: cpu}
evaluate: {models: [], method: equal, weights: {}, splits: 2, calibrate: false, bootstrap: 50, external: {}}
"""
PREP = ["sample", "index", "detect", "cut", "folds"]
CROP_MODELS = ["train@a", "predict@a"]
CLIP_MODELS = ["train_stacked@l", "predict_stacked@l"]
MODELS = ["landmarks", "degrade", "cut_degraded", *CROP_MODELS, *CLIP_MODELS, "evaluate", "export"]
ALL = PREP + MODELS
CHUNKED = ["data/detect", "data/crops", "data/clips"]


def ran(out: subprocess.CompletedProcess) -> set[str]:
    """The stages a `dvc repro` ran (or, with --dry, would run)."""
    return set(re.findall(r"Running stage '([^']+)'", out.stdout))


def plan(repo: "Repo") -> set[str]:
    """The stages a change reruns: those it makes stale and every stage downstream of them (the DAG's
    edges; whether a rerun stage's outputs then change is up to its work, not to the DAG)."""
    return ran(repo.dvc("repro", "--dry", "--force-downstream"))


def _outputs(repo: Path, dirs=CHUNKED, tables=("faces", "crops", "clips")) -> dict[str, str]:
    """sha256 of every file of the chunked stages' outputs and tables (``dirs``, ``data/<tables>.parquet``)."""
    files = [f for d in dirs for f in sorted((repo / d).rglob("*")) if f.is_file()]
    files += [repo / "data" / f"{n}.parquet" for n in tables]
    return {f.relative_to(repo).as_posix(): file_sha256(f) for f in files}


def _line(out: subprocess.CompletedProcess, stage: str) -> str:
    """The summary line a stage printed (``<stage>: ...``)."""
    return next(li for li in out.stdout.splitlines() if li.startswith(f"{stage}: "))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=venv_env(), check=True, capture_output=True,
                          text=True).stdout


def _set(repo: Path, **changes) -> None:
    """Set dotted params keys in the repo's params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():
        *path, last = key.split("__")
        node = params
        for k in path:
            node = node[k]
        node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


class Repo:
    """A working copy and the `dvc` it runs (a user's environment: Python writes bytecode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = user_env(path)

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_dvc(self.path, *args, env=self.env, check=check)

    def stale(self, stages: list[str] = ALL) -> set[str]:
        """Which of ``stages`` `dvc status` says are changed."""
        out = self.dvc("status").stdout
        return {m for m in re.findall(r"^(\S+):$", out, re.M) if m in stages}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Repo, subprocess.CompletedProcess]:
    """The whole DAG built once and committed, and the output of that `dvc repro`."""
    repo = Repo(make_dvc_repo(tmp_path_factory.mktemp("dvc") / "repo", PARAMS))
    first = repo.dvc("repro")
    _git(repo.path, "add", "-A")
    _git(repo.path, "commit", "-qm", "run 1")
    return repo, first


def clone(built: Repo, dst: Path, cache: bool = True) -> Repo:
    """A fresh clone of the built repository: with its DVC cache (outputs checked out), or with none."""
    subprocess.run(["git", "clone", "-q", str(built.path), str(dst)], check=True, capture_output=True)
    repo = Repo(dst)
    if cache:
        repo.dvc("cache", "dir", "--local", str(built.path / ".dvc" / "cache"))
        repo.dvc("checkout", "-q")
    return repo


def test_the_dag_runs_every_stage_once_then_nothing_even_with_bytecode(built):
    repo, first = built
    assert ran(first) == set(ALL)
    assert ran(repo.dvc("repro")) == set() and "up to date" in repo.dvc("status").stdout
    # bytecode and numba's kernel cache landed inside the hashed code folders; DVC does not see them
    assert list((repo.path / "dfdc" / "faces").glob("__pycache__/*.pyc"))
    assert list(repo.path.glob("dfdc/__pycache__/*.nbi"))
    index = pd.read_parquet(repo.path / "data/index.parquet")
    assert len(index) == 4 and index["ok"].all() and sorted(index["label"]) == [0, 0, 1, 1]
    crops = pd.read_parquet(repo.path / "data/crops.parquet")
    assert set(crops["video"]) == set(index["video"])
    fakes = crops[crops["label"] == 1]
    assert len(fakes) and (fakes["mask"] != "").all()  # the crops stage wrote the fakes' diff masks
    clips = pd.read_parquet(repo.path / "data/clips.parquet")
    assert len(clips) and (clips["frames"] == 4).all() and (clips["codec"] == "mp4").all()


def test_the_evaluation_ships_every_model_and_its_fitted_rules(built):
    repo = built[0].path
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert list(summary) == ["ensemble", "a", "l"]  # ensemble first: what `dvc exp show` shows first
    assert list(summary["ensemble"])[:4] == ["log_loss", "auc", "degraded_log_loss", "degraded_auc"]
    details = json.loads((repo / "metrics/details/clean.json").read_text())
    assert set(details["models"]) == {"a", "l"} and details["ensemble"]["n"] >= 1
    assert summary["ensemble"]["log_loss"] == details["ensemble"]["log_loss"]
    degraded = json.loads((repo / "metrics/details/degraded.json").read_text())
    assert degraded["ensemble"]["n"] == details["ensemble"]["n"] and "calibration" in details
    assert summary["ensemble"]["degraded_log_loss"] == degraded["ensemble"]["log_loss"]
    shipped = json.loads((repo / "models/ensemble.json").read_text())
    assert sorted(shipped["members"]) == ["a", "l"] and shipped["strategy"] == "thresholds"
    assert shipped["members"]["a"]["checkpoint"] == "a/best.pt"
    fitted = json.loads((repo / "data/preds/a/thresholds.json").read_text())
    assert shipped["members"]["a"]["rules"] == fitted["rules"]
    assert fitted["cross_fitted"] is False  # one original in the holdout: nothing to cross-fit, the plain mean
    assert shipped["members"]["a"]["rules_from"] == "data/preds/a/thresholds.json"
    assert len(pd.read_parquet(repo / "data/degraded/index.parquet")) == details["ensemble"]["n"]
    for model in ("a", "l"):  # one predict stage scored both holdouts
        assert len(pd.read_parquet(repo / f"data/preds/{model}/degraded/videos.parquet")) == details["ensemble"]["n"]
    for plot in ("roc.csv", "calibration.csv", "roc.png"):
        assert (repo / "metrics/plots" / plot).exists()
    tracked = set(_git(repo, "ls-files", "metrics").split())  # small metrics and plot data live in git
    assert {"metrics/summary.json", "metrics/details/clean.json", "metrics/plots/roc.csv",
            "metrics/train/a.json"} <= tracked and "metrics/plots/roc.png" not in tracked


def test_a_new_part_is_processed_alone_and_gives_a_clean_runs_bytes(built, tmp_path):
    repo = clone(built[0], tmp_path / "r")
    two = _outputs(repo.path)
    _set(repo.path, sample__parts=3)
    grown = repo.dvc("repro", *PREP)
    assert ran(grown) == set(PREP)
    for stage in ("detect", "crops", "clips"):  # cut prints a line for each of its outputs
        line = _line(grown, stage)
        assert "; 1 chunks processed" in line and ", 2 kept" in line, line
    three = _outputs(repo.path)
    for out in CHUNKED:
        shutil.rmtree(repo.path / out)
    assert ran(repo.dvc("repro", *PREP)) == {"detect", "cut"}
    assert _outputs(repo.path) == three
    _set(repo.path, sample__parts=2)  # and the part removed again: its chunks go, nothing is redone
    shrunk = repo.dvc("repro", *PREP)
    assert shrunk.stdout.count("0 chunks processed") == 3 and _outputs(repo.path) == two


def test_dvc_repro_with_a_dask_scheduler_gives_the_local_runs_bytes(built, tmp_path):
    import logging

    from distributed import LocalCluster

    repo = clone(built[0], tmp_path / "r")
    local = _outputs(repo.path)
    for out in CHUNKED:
        shutil.rmtree(repo.path / out)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        repo.env = {**repo.env, "DFDC_SCHEDULER": cluster.scheduler_address}
        out = repo.dvc("repro", *PREP)
        assert "run_on_worker" in cluster.scheduler.task_prefixes  # the chunks did run on the cluster
    assert ran(out) == {"detect", "cut"}
    assert _outputs(repo.path) == local
    assert repo.stale() == set()  # the lock's hashes: the cluster's outputs are the local run's


def test_a_crops_setting_reruns_the_crops_and_the_crop_models_only_and_their_stacked_models(built, tmp_path):
    repo = clone(built[0], tmp_path / "r")
    before = pd.read_parquet(repo.path / "data/crops.parquet")
    _set(repo.path, crops__margin=0.2)
    # and the LSTM, whose frozen backbone is the frame model a's: through models/a, not through the crops
    assert plan(repo) == {"cut", "cut_degraded", "landmarks", *CROP_MODELS, *CLIP_MODELS, "evaluate", "export"}
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"]
    lstm = {d["path"] for d in lock["train_stacked@l"]["deps"]}
    assert "models/a" in lstm and "data/clips" in lstm and "data/crops" not in lstm
    clips = _outputs(repo.path, ("data/clips",), ("clips", "clips_status"))
    out = repo.dvc("repro", *PREP)
    assert ran(out) == {"cut"} and "; 0 chunks processed" in _line(out, "clips")
    assert _outputs(repo.path, ("data/clips",), ("clips", "clips_status")) == clips  # not a byte of the clips
    narrower = pd.read_parquet(repo.path / "data/crops.parquet")
    assert (narrower["x2"] - narrower["x1"]).mean() < (before["x2"] - before["x1"]).mean()
    assert (narrower.loc[narrower["label"] == 1, "mask"] != "").all()


def test_the_landmarks_stage_and_a_setting_that_changes_no_point(built, tmp_path):
    """The 68 points are their own stage after the crops: a landmarks setting reruns it alone, and when the
    points come out the same (workers), nothing downstream reruns."""
    repo, first = built
    line = _line(first, "landmarks")
    assert re.match(r"landmarks: 68 points for \d+ of \d+ crops; 5-point fallback for \d+", line), line
    table = pd.read_parquet(repo.path / "data/landmarks.parquet")
    crops = pd.read_parquet(repo.path / "data/crops.parquet")
    assert table["key"].tolist() == crops["key"].tolist() and table["dense_ok"].mean() > 0.5
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"]
    assert "data/landmarks.parquet" in {d["path"] for d in lock["train@a"]["deps"]}
    repo = clone(repo, tmp_path / "r")
    _set(repo.path, landmarks__workers=1)
    out = repo.dvc("repro")
    assert ran(out) == {"landmarks"}  # the same points: no model reruns
    assert repo.stale() == set()


def test_a_clips_setting_reruns_the_clips_and_the_clip_models_only(built, tmp_path):
    repo = clone(built[0], tmp_path / "r")
    before = pd.read_parquet(repo.path / "data/clips.parquet")
    _set(repo.path, clips__per_track=2)
    # DVC's plan cannot know that the cut stage will leave the crops as they are ...
    assert plan(repo) == {"cut", "cut_degraded", "landmarks", *CROP_MODELS, *CLIP_MODELS, "evaluate", "export"}
    crops = _outputs(repo.path, ("data/crops", "data/crops_degraded"), ("crops", "crops_status", "crops_degraded"))
    out = repo.dvc("repro", "cut", "cut_degraded")
    assert ran(out) == {"cut", "cut_degraded"}
    crop_lines = [li for li in out.stdout.splitlines() if li.startswith("crops: ")]
    assert len(crop_lines) == 2 and all("; 0 chunks processed" in li for li in crop_lines)  # kept, not decoded
    assert len(pd.read_parquet(repo.path / "data/clips.parquet")) > len(before)
    # ... it leaves them byte for byte, so the frame models are up to date and only the clip models rerun
    assert _outputs(repo.path, ("data/crops", "data/crops_degraded"),
                    ("crops", "crops_status", "crops_degraded")) == crops
    stale = ran(repo.dvc("repro", "--dry"))
    assert "train_stacked@l" in stale and not stale & set(CROP_MODELS), stale


def test_the_other_two_kinds_of_entry_get_their_stages_with_their_inputs(built, tmp_path):
    """The two combinations the built repository does not train, as DVC renders them: a frame model stacked on
    another (train.stacked, crops) and a clip model with a backbone of its own (train.models, clips)."""
    repo = clone(built[0], tmp_path / "r")
    small = {"input_size": 32, "epochs": 1, "batch_size": 8, "lr": 0.001}
    _set(repo.path, train__stacked__b={"arch": "mobilenetv3_small_100", "inputs": "crops", "backbone_from": "a",
                                        **small},
         train__models__c={"arch": "r3d_mini", "inputs": "clips", **small})
    new = {"train_stacked@b", "predict_stacked@b", "train@c", "predict@c"}
    assert repo.stale(ALL + sorted(new)) == new | {"evaluate"}
    from dvc.repo import Repo as DvcRepo

    with DvcRepo(str(repo.path)) as dvc_repo:  # the stages as DVC renders them from dvc.yaml and the table
        stages = {s.name: s for s in dvc_repo.index.stages}
    assert new <= set(stages), sorted(stages)
    deps = {name: {d.def_path for d in stages[name].deps} for name in ("train_stacked@b", "train@c")}
    assert {"data/crops", "models/a"} <= deps["train_stacked@b"] and "data/clips" not in deps["train_stacked@b"]
    assert "data/clips" in deps["train@c"] and not {"data/crops", "models/a"} & deps["train@c"]
    assert "--inputs data/crops.parquet" in stages["train_stacked@b"].cmd
    assert "--backbone models/a/best.pt" in stages["train_stacked@b"].cmd
    assert "--inputs data/clips.parquet" in stages["train@c"].cmd and "--backbone" not in stages["train@c"].cmd
    assert "--degraded data/clips_degraded.parquet" in stages["predict@c"].cmd
    assert "--degraded data/crops_degraded.parquet" in stages["predict_stacked@b"].cmd


def test_the_dag_ends_with_the_bundle_declared_as_a_dvc_artifact(built, tmp_path):
    import dvc.api

    from dfdc.api import Detector

    work = clone(built[0], tmp_path / "r")
    subprocess.run([str(REPO / ".venv" / "bin" / "gto"), "register", "detector"], cwd=work.path, check=True,
                   capture_output=True, env=work.env)  # a version of the model registry: a git tag
    shown = dvc.api.artifacts_show("detector", repo=str(work.path))
    assert shown["path"] == "models/detector.dfdc" and shown["rev"] == _git(work.path, "rev-parse", "HEAD").strip()
    got = tmp_path / "got.dfdc"
    run_dvc(tmp_path, "artifacts", "get", str(work.path), "detector", "-o", str(got), env=work.env)
    repo = built[0].path
    assert file_sha256(got) == file_sha256(repo / "models/detector.dfdc")
    detector = Detector.load(got, device="cpu")
    assert sorted(detector.models) == ["a", "l"] and detector.scoring.settings.strategy == "thresholds"
    shipped = json.loads((repo / "models/ensemble.json").read_text())
    assert all(m.rules == tuple(map(tuple, shipped["members"][m.name]["rules"]))
               for m in detector.scoring.models if shipped["members"][m.name].get("rules") is not None)
    assert "/detector.dfdc" in (repo / "models/.gitignore").read_text().split()  # in the DVC cache, not in git


def test_leaving_a_manipulation_out_retrains_and_evaluates_without_preprocessing(built, tmp_path):
    repo = clone(built[0], tmp_path / "r")
    methods = sorted(pd.read_parquet(repo.path / "data/folds.parquet")["method"].dropna().unique())
    assert methods and set(methods) <= {"face", "inner", "mouth"}
    trains = {"train@a", "train_stacked@l"}
    for method in (methods[0], methods[-1]):
        _set(repo.path, folds__leave_out=method)
        assert repo.stale() == trains | {"evaluate"}
    assert plan(repo) == trains | {"predict@a", "predict_stacked@l", "evaluate", "export"}


def test_an_experiment_on_one_model_reruns_its_stages_and_shows_in_the_metrics(built, tmp_path):
    repo = clone(built[0], tmp_path / "r")
    exp = repo.dvc("exp", "run", "-S", "train.stacked.l.lr=0.05")  # nothing reads l but its stages and evaluate
    assert ran(exp) == {"train_stacked@l", "predict_stacked@l", "evaluate", "export"}
    changed = json.loads(repo.dvc("metrics", "diff", "--json").stdout)["metrics/summary.json"]
    assert any(k.startswith("l.") for k in changed) and not any(k.startswith("a.") for k in changed)
    train = json.loads(repo.dvc("metrics", "diff", "--json", "--targets", "metrics/train/l.json",
                                "metrics/train/a.json").stdout)
    assert "metrics/train/l.json" in train and "metrics/train/a.json" not in train  # details on request
    show = repo.dvc("exp", "show", "--no-pager", "--csv")
    assert "train.stacked.l.lr" in show.stdout and "0.05" in show.stdout
    plots = json.loads(repo.dvc("plots", "diff", "--json").stdout)["data"]
    assert any("roc.csv" in name for name in plots) and any("live/l" in name for name in plots)


def test_a_stacked_model_follows_the_model_its_backbone_comes_from(built, tmp_path):
    repo = clone(built[0], tmp_path / "r")
    _set(repo.path, train__models__a__lr=0.05)
    assert ran(repo.dvc("repro", "train@a")) == {"train@a"}
    status = repo.dvc("status").stdout
    assert repo.stale() == {"train_stacked@l", "predict@a", "evaluate"}, status
    assert "models/a" in status.split("train_stacked@l:")[1].split("\n\n")[0]  # the LSTM's frozen backbone is a's


def test_a_labelled_set_the_models_never_saw_is_scored_by_its_own_stage(built, tmp_path):
    if not (FFPP / "original_sequences").is_dir():
        pytest.skip(f"FaceForensics++ pairs not present at {FFPP}")
    repo = clone(built[0], tmp_path / "r")
    _set(repo.path, evaluate__external={"ffpp": str(FFPP)})
    assert ran(repo.dvc("repro", "evaluate_external@ffpp")) == {"evaluate_external@ffpp"}
    ext = json.loads((repo.path / "metrics/external/ffpp/metrics.json").read_text())
    assert ext["ensemble"]["n"] == 4 and set(ext["by_method"]) == {"Deepfakes", "FaceSwap"}
    assert "metrics/external/ffpp/metrics.json" in repo.dvc("metrics", "show", "--json").stdout


def test_metrics_diff_and_exp_show_work_in_a_fresh_clone_without_a_dvc_cache(built, tmp_path):
    """Two committed runs; a clone with no DVC cache and no remote compares them (the metrics live in git),
    and `dvc exp show` with its default options shows the ensemble's headline in a 120-column terminal."""
    work = clone(built[0], tmp_path / "work")
    _set(work.path, evaluate__method="given", evaluate__weights={"a": 4.0, "l": 1.0})
    assert ran(work.dvc("repro")) == {"evaluate", "export"}
    _git(work.path, "commit", "-qam", "run 2: given weights")
    fresh = clone(work, tmp_path / "fresh", cache=False)
    assert not (fresh.path / ".dvc" / "cache").exists()
    runs = [json.loads(_git(fresh.path, "show", f"{rev}:metrics/summary.json")) for rev in ("HEAD~1", "HEAD")]
    assert runs[0]["ensemble"]["log_loss"] != runs[1]["ensemble"]["log_loss"]
    diff = fresh.dvc("metrics", "diff", "HEAD~1")
    assert "failed to load" not in diff.stdout + diff.stderr, diff.stderr
    line = next(li for li in diff.stdout.splitlines() if re.search(r"\bensemble\.log_loss\b", li))
    shown = [float(v) for v in re.findall(r"\d+\.\d+", line)]
    for r in runs:  # both revisions' values, to DVC's 5 digits
        assert any(abs(v - r["ensemble"]["log_loss"]) < 1e-4 for v in shown), line
    show = in_terminal(["dvc", "exp", "show"], fresh.path, fresh.env, columns=120)
    lines = [li for li in show.splitlines() if li.strip()]
    assert lines and max(len(li) for li in lines) <= 120, show
    header = next(li for li in lines if "Experiment" in li)
    assert re.search(r"ensemble\.log_loss\s+ensemble\.auc\s+ensemble\.degraded_log_loss", header), show
    row = next(li for li in lines if li.split()[0] in ("master", "main", "workspace"))
    assert f"{runs[1]['ensemble']['log_loss']:.5g}"[:6] in row, show  # the number itself, not an ellipsis


def test_a_new_model_family_is_one_file_and_one_row(built, tmp_path):
    """docs/models.md's worked example, as the page has it: a family module, its name among the families, a row
    in the table."""
    guide = (REPO / "docs/models.md").read_text().split("## Add a model family", 1)[1]
    family = re.search(r"```python\n(.*?)```", guide, re.S).group(1)
    repo = clone(built[0], tmp_path / "r")
    (repo.path / "dfdc/models/tinynet.py").write_text(family)
    registry = repo.path / "dfdc/models/registry.py"
    registry.write_text(registry.read_text().replace(
        "from dfdc.models import foundation, image, sequence, video3d, wsdan",
        "from dfdc.models import foundation, image, sequence, tinynet, video3d, wsdan").replace(
        "for family in (image, video3d, sequence, wsdan, foundation):",
        "for family in (image, video3d, sequence, wsdan, foundation, tinynet):"))
    assert registry.read_text().count("tinynet") == 2  # the two edits the page shows
    _set(repo.path, train__models__t={"arch": "tinynet", "inputs": "crops", "input_size": 32, "epochs": 1,
                                      "batch_size": 8, "lr": 0.001})
    assert ran(repo.dvc("repro", "predict@t")) == {"train@t", "predict@t"}
    assert (repo.path / "models/t/best.pt").is_file()
    scored = pd.read_parquet(repo.path / "data/preds/t/videos.parquet")
    assert len(scored) and scored["prob"].between(0, 1).all()
