"""`dfdc export` bundles: one file that scores as the models folder does, and refuses any file it cannot trust."""
import csv
import dataclasses
import hashlib
import json
import pickle
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import dfdc
from dfdc.cli import main
from dfdc.inference.bundle import FORMAT, read_bundle, tensors_sha256
from dfdc.inference.ensemble import write_ensemble
from dfdc.models import checkpoint
from dfdc.store import file_sha256

SCORE = ["--frames", "6", "--device", "cpu", "--workers", "1"]


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {r["filename"]: float(r["label"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def shipped(tiny_checkpoint, tiny_sample, odd_inputs, tmp_path_factory):
    """A models folder (members a and b, weights 0.25 / 0.75, calibrated), its bundle and a few videos."""
    root = tmp_path_factory.mktemp("bundle")
    models = root / "models"
    for name in ("a", "b"):
        (models / name).mkdir(parents=True)
    shutil.copy(tiny_checkpoint, models / "a" / "best.pt")
    ck = checkpoint.load(tiny_checkpoint)
    head = next(k for k in ck.weights if k.endswith("fc.bias"))
    # b: the same net with its head shifted, so that the members disagree and the weights matter
    checkpoint.save(models / "b" / "best.pt",
                    dataclasses.replace(ck, weights={**ck.weights, head: ck.weights[head] + 1.0}))
    write_ensemble(models / "ensemble.json",
                   {n: {"checkpoint": models / n / "best.pt", "sha256": file_sha256(models / n / "best.pt"),
                        "weight": w} for n, w in (("a", 0.25), ("b", 0.75))},
                   method="optimized", strategy="confident", tta=True, metrics={"log_loss": 0.6}, temperature=1.5)
    videos = root / "videos"
    videos.mkdir()
    for name in ("portrait.mp4", "still.png", "noface.mp4"):
        shutil.copy(odd_inputs / name, videos / name)
    fake = sorted(tiny_sample.glob("*/*.mp4"))[-1]
    shutil.copy(fake, videos / "sample.mp4")
    bundle = root / "detector.dfdc"
    assert main(["export", "-o", str(bundle), "--models-dir", str(models)]) == 0
    return {"root": root, "models": models, "videos": videos, "bundle": bundle, "ckpt": ck}


def test_a_bundle_scores_as_its_models_folder_and_carries_what_they_were_trained_with(shipped, tmp_path, capsys):
    bundle, models, videos = shipped["bundle"], shipped["models"], shipped["videos"]
    assert main(["predict", str(videos), "-o", str(tmp_path / "bundle.csv"), "--bundle", str(bundle), *SCORE]) == 0
    out = capsys.readouterr().out
    assert f"the bundle {bundle}" in out and "strategy confident, tta True, temperature 1.500" in out
    assert main(["predict", str(videos), "-o", str(tmp_path / "folder.csv"), "--models-dir", str(models),
                 *SCORE]) == 0
    from_bundle, from_folder = _rows(tmp_path / "bundle.csv"), _rows(tmp_path / "folder.csv")
    assert set(from_bundle) == {"portrait.mp4", "still.png", "noface.mp4", "sample.mp4"}
    assert from_bundle == pytest.approx(from_folder, abs=1e-6)
    assert from_bundle["noface.mp4"] == 0.5
    assert all(0 < from_bundle[n] < 1 and from_bundle[n] != 0.5 for n in ("portrait.mp4", "still.png", "sample.mp4"))

    b = read_bundle(bundle)
    m = b.manifest
    ck = shipped["ckpt"]
    assert m["format"] == FORMAT and m["dfdc_version"] == dfdc.__version__
    assert m["ensemble"] == {"method": "optimized", "strategy": "confident", "tta": True, "temperature": 1.5,
                             "holdout": {"log_loss": 0.6}}
    assert [(e["name"], e["weight"], e["rules"]) for e in m["members"]] == [("a", 0.25, None), ("b", 0.75, None)]
    for i, e in enumerate(m["members"]):
        assert e["preprocess"] == ck.preprocess and e["preprocess"]["crops"] == {"margin": 0.3}
        assert e["preprocess"]["detect"]["every"] == 5
        assert e["data"] == ck.data and e["data"]["datasets"]
        assert e["params"]["arch"] == "resnet18" and e["spec"] == ck.spec and e["synthetic_only"]
        assert e["checkpoint_sha256"] == file_sha256(models / e["name"] / "best.pt") and e["onnx"] is None
        assert e["sha256"] == tensors_sha256({f"members/{i}/{k}": v for k, v in
                                              checkpoint.load(models / e["name"] / "best.pt").weights.items()})
    assert m["trained_on"] == ck.data["datasets"]
    assert [(x.name, x.weight) for x in b.ensemble.members] == [("a", 0.25), ("b", 0.75)]
    assert (b.ensemble.strategy, b.ensemble.tta, b.ensemble.temperature) == ("confident", True, 1.5)
    assert all(torch.equal(b.members[0].checkpoint.weights[k], v) for k, v in ck.weights.items())


class _Trap:
    """Unpickling this opens (creates) the file ``marker``: a stand-in for any code a pickle would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _tensors(path):
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _refused(capsys, args, *needles):
    """``main(args)`` exits 2 with one line on stderr holding every needle; returns that line."""
    capsys.readouterr()
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("error: "), err
    assert all(n in err for n in needles), err
    return err


def test_files_that_are_not_sound_bundles_are_refused_in_one_line_and_nothing_runs(shipped, tmp_path, capsys):
    good, videos = shipped["bundle"], shipped["videos"]
    tensors, meta = _tensors(good)
    manifest = json.loads(meta["manifest"])

    def predict(bundle, *needles):
        csv_out = tmp_path / f"{bundle.stem}.csv"
        line = _refused(capsys, ["predict", str(videos), "-o", str(csv_out), "--bundle", str(bundle), *SCORE],
                        str(bundle), *needles)
        assert not csv_out.exists()
        return line

    # a pickle named as a bundle: refused before any of it is unpickled
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.dfdc"
    evil.write_bytes(pickle.dumps(_Trap(marker)))
    predict(evil, "not a dfdc bundle")
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # the trap is live: unpickled, it does create the marker
    assert marker.exists()

    # a member's weights left out, the manifest untouched
    missing = tmp_path / "missing.dfdc"
    save_file({k: v for k, v in tensors.items() if not k.startswith("members/1/")}, str(missing), metadata=meta)
    predict(missing, "member 'b' has no weights in the file")

    # one weight changed, the manifest (and its checksum of the weights) kept
    key = next(k for k in tensors if k.startswith("members/0/") and k.endswith("fc.weight"))
    changed = dict(tensors)
    changed[key] = tensors[key].clone()
    changed[key].view(-1)[0] += 1e-3
    flipped = tmp_path / "flipped.dfdc"
    save_file(changed, str(flipped), metadata=meta)
    predict(flipped, "corrupted bundle", "weights of member 'a' do not match their checksum")

    # the manifest edited (a weight), its checksum not
    edited = tmp_path / "edited.dfdc"
    manifest["members"][0]["weight"] = 0.9
    save_file(tensors, str(edited), metadata={**meta, "manifest": json.dumps(manifest)})
    predict(edited, "corrupted bundle: its manifest does not match its checksum")

    # a bundle of an older format: export it again
    old = tmp_path / "old.dfdc"
    save_file(tensors, str(old), metadata={**meta, "format": "dfdc-bundle-0"})
    predict(old, "'dfdc-bundle-0'", FORMAT, "export it again with `dfdc export`")

    # two members of one name (the manifest's checksum recomputed): the names key their rules and graphs
    twins = tmp_path / "twins.dfdc"
    doc = json.loads(meta["manifest"])
    doc["members"][1]["name"] = "a"
    text = json.dumps(doc)
    save_file(tensors, str(twins),
              metadata={**meta, "manifest": text, "sha256": hashlib.sha256(text.encode()).hexdigest()})
    predict(twins, "two members are named 'a'")

    # a negative weight under a recomputed checksum
    negative = tmp_path / "negative.dfdc"
    doc = json.loads(meta["manifest"])
    doc["members"][0]["weight"] = -1.0
    text = json.dumps(doc)
    save_file(tensors, str(negative),
              metadata={**meta, "manifest": text, "sha256": hashlib.sha256(text.encode()).hexdigest()})
    predict(negative, "member 'a': weight must be finite and >= 0, got -1.0")

    # a safetensors file that is no bundle, a tensor no member claims, a cut file, a folder
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(3)}, str(plain))
    predict(plain, "not a dfdc bundle (a safetensors file without dfdc's header)")
    extra = tmp_path / "extra.dfdc"
    save_file({**tensors, "members/9/w": torch.zeros(2)}, str(extra), metadata=meta)
    predict(extra, "holds tensors no member claims (members/9/w)")
    cut = tmp_path / "cut.dfdc"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    predict(cut, "not a dfdc bundle")
    _refused(capsys, ["predict", str(videos), "--bundle", str(tmp_path / "nowhere.dfdc"), *SCORE],
             "nowhere.dfdc: bundle not found")

    # the intact bundle still reads
    assert [m.name for m in read_bundle(good).members] == ["a", "b"]


def test_export_refuses_a_member_whose_checkpoint_changed_since_it_was_evaluated(shipped, tmp_path, capsys):
    models = shipped["models"]
    stale = tmp_path / "stale.json"
    b = models / "b" / "best.pt"
    write_ensemble(stale, {"a": {"checkpoint": models / "a" / "best.pt", "sha256": "0" * 64, "weight": 1.0},
                           "b": {"checkpoint": b, "sha256": file_sha256(b), "weight": 1.0}},
                   method="equal", strategy="confident", tta=False, metrics={})
    out = tmp_path / "stale.dfdc"
    _refused(capsys, ["export", "-o", str(out), "--ensemble", str(stale)], "a changed since `evaluate` scored",
             "dvc repro")
    assert not out.exists() and not list(tmp_path.glob("*.dfdc*"))
    _refused(capsys, ["export", "-o", str(out), "--ensemble", str(stale), "--models", "a"],
             "--models and --ensemble both choose the models")
    # --models: equal weights, no evaluated strategy to carry
    assert main(["export", "-o", str(out), "--models", "a", "--models-dir", str(models)]) == 0
    m = read_bundle(out).manifest
    assert [(e["name"], e["weight"]) for e in m["members"]] == [("a", 1.0)]
    assert m["ensemble"]["method"] == "equal (--models)" and m["ensemble"]["strategy"] is None
    # two checkpoints of one name from two runs: told apart by their paths, in the bundle as in predict
    runs = [tmp_path / r / "a" / "best.pt" for r in ("run1", "run2")]
    for ck in runs:
        ck.parent.mkdir(parents=True)
        shutil.copy(models / "a" / "best.pt", ck)
    assert main(["export", "-o", str(out), "--models", *map(str, runs)]) == 0
    assert [x.name for x in read_bundle(out).members] == [str(ck) for ck in runs]
