"""The ONNX runtime: graphs exported from frame and clip models score as the torch models do, from a bundle too."""
import csv
import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from dfdc.cli import main
from dfdc.config.clips import ClipsParams
from dfdc.config.train import ModelParams
from dfdc.inference.bundle import read_bundle
from dfdc.inference.ensemble import write_ensemble
from dfdc.inference.load import load_scoring, to_onnx
from dfdc.inference.onnx import OPSET, OnnxNet, export_onnx
from dfdc.inference.scorer import ScoringModel, from_checkpoint, score
from dfdc.models import checkpoint, create_model
from dfdc.store import file_sha256

CLIPS = ClipsParams(window=4, stride=2, per_track=2, size=32, codec="mp4")
SCORE = ["--frames", "12", "--clip-windows", "2", "--device", "cpu", "--workers", "1"]


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {r["filename"]: float(r["label"]) for r in csv.DictReader(f)}


def _crops(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(20, 90)), int(rng.integers(20, 90)), 3), dtype=np.uint8)
            for _ in range(n)]


def _as_onnx(m: ScoringModel) -> ScoringModel:
    return dataclasses.replace(m, model=OnnxNet(export_onnx(m.model), m.spec))


@pytest.fixture(scope="module")
def clip_ckpt(tiny_prep, tmp_path_factory):
    """best.pt of an untrained r3d_mini (4 frames, stride 2, 32 px) with a head wide enough to spread its scores."""
    torch.manual_seed(0)
    model = create_model("r3d_mini", input_size=32, clip_len=CLIPS.window, frame_stride=CLIPS.stride)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    head = next(k for k in weights if k.endswith("fc.weight"))
    weights[head] = torch.randn_like(weights[head])
    out = tmp_path_factory.mktemp("models") / "clip" / "best.pt"
    out.parent.mkdir()
    checkpoint.save(out, checkpoint.Checkpoint(
        name="clip", params=dataclasses.asdict(ModelParams(arch="r3d_mini", inputs="clips", input_size=32)),
        spec=model.spec.to_dict(), weights=weights,
        preprocess={"detect": tiny_prep["preprocess"]["detect"], "clips": CLIPS.provenance()},
        data=tiny_prep["data"], epoch=0))
    return out


@pytest.mark.parametrize("tta", [False, True])
def test_a_frame_model_scores_the_same_as_its_onnx_graph(tiny_checkpoint, tta):
    torch_model = from_checkpoint(tiny_checkpoint)  # batch norms folded, channels-last: what predict runs
    onnx_model = _as_onnx(torch_model)
    crops = _crops(16)
    # 16 crops of many sizes in batches of 5: the graph takes any batch, a last one of 1 too
    a = score([torch_model], crops, tta=tta, batch_size=5)[torch_model.name]
    b = score([onnx_model], crops, tta=tta, batch_size=5)[onnx_model.name]
    assert a.shape == b.shape == (16,) and a.std() > 1e-4
    assert np.abs(a - b).max() < 1e-4
    x = torch_model.spec.prepare(torch.from_numpy(np.stack([torch_model.resize(c) for c in crops[:3]])))
    with torch.no_grad():
        logits = torch_model.model(x).logits
    assert torch.allclose(onnx_model.model(x).logits, logits, atol=1e-4)


def test_a_clip_model_scores_the_same_as_its_onnx_graph(clip_ckpt):
    torch_model = from_checkpoint(clip_ckpt)
    assert (torch_model.spec.input, torch_model.spec.clip_len) == ("clip", 4)
    onnx_model = _as_onnx(torch_model)
    rng = np.random.default_rng(1)
    clips = [rng.integers(0, 256, (4, s, s, 3), dtype=np.uint8) for s in (24, 32, 40, 32, 64, 32, 28)]
    for tta in (False, True):
        a = score([torch_model], clips, tta=tta, batch_size=3)["clip"]
        b = score([onnx_model], clips, tta=tta, batch_size=3)["clip"]
        assert a.shape == b.shape == (7,) and a.std() > 1e-3
        assert np.abs(a - b).max() < 1e-4


def test_an_exported_bundle_runs_on_onnx_as_on_torch(tiny_checkpoint, clip_ckpt, tiny_sample, odd_inputs, tmp_path,
                                                     capsys):
    models = tmp_path / "models"
    for name, ck in (("tiny", tiny_checkpoint), ("clip", clip_ckpt)):
        (models / name).mkdir(parents=True)
        shutil.copy(ck, models / name / "best.pt")
    write_ensemble(models / "ensemble.json",
                   {n: {"checkpoint": models / n / "best.pt", "sha256": file_sha256(models / n / "best.pt"),
                        "weight": w} for n, w in (("tiny", 0.6), ("clip", 0.4))},
                   method="optimized", strategy="mean", tta=True, metrics={})
    bundle = tmp_path / "onnx.dfdc"
    assert main(["export", "-o", str(bundle), "--models-dir", str(models), "--onnx"]) == 0
    assert "ONNX graphs for 2 of 2" in capsys.readouterr().out
    b = read_bundle(bundle)
    for e, m in zip(b.manifest["members"], b.members):
        assert len(e["onnx"]["sha256"]) == 64
        graph = onnx.load_from_string(m.onnx)
        assert [i.name for i in graph.graph.input] == ["x"] and graph.opset_import[0].version == OPSET
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(sorted(tiny_sample.glob("dfdc_train_part_0/*.mp4"))[0], videos / "sample.mp4")
    shutil.copy(odd_inputs / "portrait.mp4", videos / "portrait.mp4")
    shutil.copy(odd_inputs / "still.png", videos / "still.png")
    rep = tmp_path / "report"
    assert main(["predict", str(videos), "-o", str(tmp_path / "torch.csv"), "--bundle", str(bundle), *SCORE]) == 0
    assert main(["predict", str(videos), "-o", str(tmp_path / "onnx.csv"), "--bundle", str(bundle),
                 "--runtime", "onnx", "--report", str(rep), *SCORE]) == 0
    out, err = capsys.readouterr()
    assert "ONNX runtime" in out and "runs on torch" not in err
    on_torch, on_onnx = _rows(tmp_path / "torch.csv"), _rows(tmp_path / "onnx.csv")
    assert set(on_onnx) == {"sample.mp4", "portrait.mp4", "still.png"}
    assert all(p != 0.5 for p in on_onnx.values())
    assert on_onnx == pytest.approx(on_torch, abs=1e-4)
    doc = json.loads((rep / "sample.mp4.json").read_text())
    assert set(doc["model_probs"]) == {"tiny", "clip"} and doc["windows"]  # the clip model scored it too
    # Grad-CAM needs torch: the report says so, the scores stand
    assert "needs the torch runtime" in doc["gradcam"][0]["error"]
    # without a bundle the graphs are exported on load, to the same scores
    assert main(["predict", str(videos), "-o", str(tmp_path / "folder.csv"), "--models-dir", str(models),
                 "--runtime", "onnx", *SCORE]) == 0
    assert _rows(tmp_path / "folder.csv") == pytest.approx(on_onnx, abs=1e-6)


class _Unexportable(torch.nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec

    def forward(self, x):
        raise RuntimeError("this net cannot be traced")


def test_onnx_runs_on_the_cpu_only_and_a_failed_export_stays_on_torch(tiny_checkpoint, tmp_path, capsys):
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=f"the ONNX runtime scores on the CPU, not {device}: pass --device cpu"):
            load_scoring(models=[str(tiny_checkpoint)], device=device, runtime="onnx", params=None)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "x.mp4").write_bytes(b"")
    assert main(["predict", str(videos), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint),
                 "--runtime", "onnx", "--device", "cuda"]) == 2
    assert "the ONNX runtime scores on the CPU" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; valid: torch, onnx"):
        load_scoring(models=[str(tiny_checkpoint)], device="cpu", runtime="tensorrt", params=None)
    scoring = load_scoring(models=[str(tiny_checkpoint)], runtime="onnx", params=None)  # auto: the CPU
    assert scoring.device.type == "cpu" and isinstance(scoring.models[0].model, OnnxNet)
    with pytest.raises(ValueError, match="scores on the CPU"):
        scoring.models[0].model(torch.zeros(1, 3, 32, 32, device="meta"))
    m = scoring.models[0]
    broken = ScoringModel("broken", _Unexportable(m.spec))
    notes = to_onnx([broken], {})
    assert notes == ["note: broken runs on torch: its ONNX export failed (RuntimeError: this net cannot be traced)"]
    assert isinstance(broken.model, _Unexportable)
