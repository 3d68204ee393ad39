"""Shared fixtures (a tiny sample dataset, the FaceForensics++ pairs in ../shared) and the test tiers.

Unit tests mirror dfdc/ and run on tiny in-memory inputs. A test is an integration test (marker
``integration``, left out by ``make test-fast``) when it lives in tests/integration/ (DVC, subprocesses,
several processes) or uses a fixture below that builds real data: the tiny sample and what is built
from it (detection, crops, a trained checkpoint), or the FaceForensics++ videos.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import FFPP

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # tests import albumentations: no PyPI check

TESTS = Path(__file__).resolve().parent
INTEGRATION_FIXTURES = {"tiny_sample", "ffpp_root"}  # and every fixture built on them


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        if folder == "integration" or INTEGRATION_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture()
def no_download(monkeypatch):
    """Fail loudly if anything asks timm or torchvision for published weights."""
    import timm
    import torchvision.models._api as tv_api

    def refuse(*args, **kwargs):
        raise AssertionError("a download of published weights was attempted")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)


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


@pytest.fixture(scope="session")
def tiny_prep(tiny_sample, detector, tmp_path_factory) -> dict:
    """index, faces, crops (with their shard folder) and 2 folds of the tiny sample."""
    from dfdc.config.detect import DetectParams
    from dfdc.datasets.index import build_index, index_meta
    from dfdc.folds import assign_folds
    from dfdc.preprocess.cut import crop_videos
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
    from dfdc.train.loop import TrainJob, train_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    p = ModelParams(arch="resnet18", input_size=32, epochs=1, batch_size=8)
    train_model(TrainJob("tiny", p, tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"], out,
                preprocess=tiny_prep["preprocess"], data_info=tiny_prep["data"]), progress=False)
    return out / "best.pt"


@pytest.fixture(scope="session")
def odd_inputs(tiny_sample, tmp_path_factory) -> Path:
    """A folder holding every kind of input `dfdc predict` meets (tests/odd_inputs.py says what each must get)."""
    from odd_inputs import make_odd_inputs

    return make_odd_inputs(tiny_sample, tmp_path_factory.mktemp("odd") / "inputs")
