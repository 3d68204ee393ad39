"""The checkpoint module: plain contents, safe loading, one-line errors for bad files."""
import os
import pickle
import zipfile

import pytest
import torch

from dfdc.config.train import ModelParams
from dfdc.models import checkpoint
from dfdc.models.checkpoint import Checkpoint, CheckpointError


class _Payload:
    """Unpickling this runs code: it creates the file named in ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _tiny(tmp_path):
    from dfdc.models import create_model

    model = create_model("resnet18", input_size=32)
    p = ModelParams(arch="resnet18", input_size=32)
    import dataclasses

    ck = Checkpoint(name="r", params=dataclasses.asdict(p), spec=model.spec.to_dict(), weights=model.state_dict(),
                    preprocess={"detect": {"min_face_size": 40}, "crops": {"margin": 0.3}},
                    data={"root": "data/sample", "videos": 12, "datasets": {"sample": 12}})
    checkpoint.save(tmp_path / "ok.pt", ck)
    return model, ck


def test_round_trip_with_weights_only(tmp_path):
    model, ck = _tiny(tmp_path)
    back = checkpoint.load(tmp_path / "ok.pt")
    assert back.name == "r" and back.preprocess == ck.preprocess and back.synthetic_only
    rebuilt = back.build_model()
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())
    raw = torch.load(tmp_path / "ok.pt", weights_only=True)  # nothing but tensors and plain types
    assert raw["format"] == checkpoint.FORMAT and "state" in raw


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "name": _Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="refused: it holds Python objects other than tensors"):
        checkpoint.load(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"  # a plain pickle, not even a torch zip
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError):
        checkpoint.load(raw)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(os.urandom(256)), "not a torch checkpoint"),
    (lambda p: p.write_bytes(b""), "not a torch checkpoint"),
    (lambda p: torch.save({"weights": {}}, p), "not a dfdc checkpoint"),
    (lambda p: torch.save(torch.zeros(3), p), "not a dfdc checkpoint"),
    (lambda p: torch.save({"format": checkpoint.FORMAT, "name": "x", "params": {}, "spec": {}, "weights": {},
                           "epoch": 0, "history": []}, p), "malformed dfdc checkpoint"),
    (lambda p: torch.save({"format": checkpoint.FORMAT, "name": 3}, p), "malformed dfdc checkpoint: 'name'"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("x", "y"), "not a torch checkpoint"),
    (lambda p: torch.save({"format": checkpoint.FORMAT, "name": "x", "params": {"arch": "resnet18"}, "spec": {},
                           "weights": {}, "epoch": 0, "history": [], "preprocess": {"detect": [1]}}, p),
     "malformed dfdc checkpoint: preprocess.detect is list"),
])
def test_bad_files_get_one_line(tmp_path, make, message):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    _, ck = _tiny(tmp_path)
    ck.weights = {k: v for k, v in ck.weights.items() if not k.startswith("backbone.fc")}
    checkpoint.save(tmp_path / "cut.pt", ck)
    with pytest.raises(CheckpointError, match="weights do not fit resnet18"):
        checkpoint.load(tmp_path / "cut.pt").build_model()
    assert checkpoint.load(tmp_path / "ok.pt").build_model() is not None
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")
