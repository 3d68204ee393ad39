"""Shared fixtures: a tiny sample dataset and the FaceForensics++ pairs in ../shared."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FFPP = REPO.parent / "shared" / "data" / "ffpp"


@pytest.fixture(scope="session")
def ffpp_root() -> Path:
    if not (FFPP / "original_sequences").is_dir():
        pytest.skip(f"FaceForensics++ pairs not present at {FFPP}")
    return FFPP


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module's tests: on a shared 2-core box two spinning OpenMP threads run
    ~20x slower (and two DDP ranks share the cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def detector():
    from dfdc.faces.detector import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    """2 parts x 2 real videos (one with two faces) x 2 fakes, about 1 s each."""
    from dfdc.datasets.sample import make_sample

    out = tmp_path_factory.mktemp("sample") / "sample"
    make_sample(out, seed=7, parts=2, reals_per_part=2, fakes_per_real=2, seconds=(1.0, 1.2),
                two_face_every=4, progress=False)
    return out


def venv_env() -> dict[str, str]:
    """Environment whose PATH starts with this interpreter's bin (python, dvc, dfdc)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def make_dvc_repo(dst: Path, params: str) -> Path:
    """Copy the pipeline (dvc.yaml, stages, dfdc) into a fresh git+DVC repo with ``params``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", "stages", "dfdc"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst / name)
    (dst / "params.yaml").write_text(params)
    env = venv_env()
    run = lambda *cmd: subprocess.run(cmd, cwd=dst, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "test@example.com")
    run("git", "config", "user.name", "test")
    run("dvc", "init", "-q")
    run("dvc", "config", "core.analytics", "false")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "init")
    return dst


def user_env(repo: Path) -> dict[str, str]:
    """As on a user's machine: Python writes bytecode, and the repo's own dfdc is the one imported."""
    env = venv_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(repo)
    return env


def dvc(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``dvc ARGS`` in ``repo``; raise with its output when it fails and ``check``."""
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env or venv_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_prep(tiny_sample, detector, tmp_path_factory) -> dict:
    """index, faces, crops (with their shard folder) and 2 folds of the tiny sample."""
    from dfdc.config.detect import DetectParams
    from dfdc.datasets.index import build_index, index_meta
    from dfdc.folds import assign_folds
    from dfdc.preprocess.crops import crop_videos
    from dfdc.preprocess.detect import detect_videos

    out = tmp_path_factory.mktemp("prep")
    index = build_index(tiny_sample, progress=False)
    faces, _ = detect_videos(index, detector, every=5, min_track=2, workers=1, progress=False)
    crops, _ = crop_videos(index, faces, out / "crops", workers=1, progress=False)
    folds = assign_folds(index, k=2, seed=0)
    # what the detect and crops stages record with the crops
    preprocess = {"detect": DetectParams(every=5, min_track=2).provenance(), "crops": {"margin": 0.3}}
    return {"index": index, "faces": faces, "crops": crops, "crops_dir": out / "crops", "folds": folds,
            "preprocess": preprocess, "data": index_meta(index, str(tiny_sample))["data"]}


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_prep, tmp_path_factory) -> Path:
    """best.pt of a resnet18 trained one epoch at 32 px on the tiny sample."""
    from dfdc.config.train import ModelParams
    from dfdc.train.loop import train_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    p = ModelParams(arch="resnet18", input_size=32, epochs=1, batch_size=8)
    train_model("tiny", p, tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"], out,
                preprocess=tiny_prep["preprocess"], data_info=tiny_prep["data"], progress=False)
    return out / "best.pt"


@pytest.fixture(scope="session")
def odd_inputs(tiny_sample, tmp_path_factory) -> Path:
    """A folder holding every kind of input `dfdc predict` meets (tests/odd_inputs.py says what each must get)."""
    from odd_inputs import make_odd_inputs

    return make_odd_inputs(tiny_sample, tmp_path_factory.mktemp("odd") / "inputs")


def copy_real_and_fake(sample: Path, part: Path) -> tuple[str, str]:
    """Copy one real video of ``sample``'s first part and one of its fakes into folder ``part``: (real, fake)."""
    import json

    part.mkdir(parents=True)
    meta = json.loads((sample / "dfdc_train_part_0" / "metadata.json").read_text())
    real = next(k for k, v in meta.items() if v["label"] == "REAL")
    fake = next(k for k, v in meta.items() if v.get("original") == real)
    for name in (real, fake):
        shutil.copy(sample / "dfdc_train_part_0" / name, part / name)
    return real, fake
