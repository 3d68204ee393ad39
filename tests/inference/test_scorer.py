"""The one scorer: the stage path and the CLI path give the same probabilities, and everything calls it."""
import numpy as np
import pandas as pd
import pytest

from dfdc.inference import scorer
from dfdc.inference.scorer import from_checkpoint, score, score_table
from dfdc.inference.video import classify_faces
from dfdc.video import read_frames


def test_stored_crops_and_crops_cut_from_frames_score_the_same(tiny_prep, tiny_checkpoint):
    """predict@MODEL reads PNG crops from the shards; dfdc predict cuts them from decoded frames."""
    model = from_checkpoint(tiny_checkpoint)
    crops, faces, index = tiny_prep["crops"], tiny_prep["faces"], tiny_prep["index"]
    real = crops[crops["label"] == 0]
    video = real["video"].iloc[0]
    rows = real[real["video"] == video].reset_index(drop=True)
    stage = score_table([model], rows, tiny_prep["crops_dir"], tta=True, batch_size=3)[model.name]
    frames, _ = read_frames(index.set_index("video").loc[video, "path"], sorted(rows["frame"]))
    mine = faces[faces["video"] == video].set_index(["frame", "track"])
    boxes = [{"frame": int(f), "face": mine.loc[(f, t), ["x1", "y1", "x2", "y2"]].to_numpy(float)}
             for f, t in zip(rows["frame"], rows["track"])]
    cli, _ = classify_faces(frames, boxes, [model], {model.name: 0.3}, tta=True, batch_size=5, device="cpu")
    assert len(stage) == len(rows) > 3
    np.testing.assert_array_equal(cli[model.name], stage)


def test_every_consumer_calls_the_one_scorer(tiny_prep, tiny_checkpoint, tiny_sample, tmp_path, monkeypatch):
    import sys

    from dfdc.bench import bench_predict
    from dfdc.cli import main
    from dfdc.config.predict import PredictParams
    from dfdc.config.train import ModelParams
    from dfdc.inference.load import Scoring
    from dfdc.train.loop import TrainJob, train_model

    calls = []
    real = scorer.score

    def spy(models, items, **kw):
        calls.append(kw)
        return real(models, items, **kw)

    monkeypatch.setattr(scorer, "score", spy)

    def used(what) -> int:
        n = len(calls)
        what()
        return len(calls) - n

    crops_pq = tmp_path / "crops.parquet"
    tiny_prep["crops"].to_parquet(crops_pq)
    tiny_prep["folds"].to_parquet(tmp_path / "folds.parquet")
    (tmp_path / "params.yaml").write_text("predict: {strategy: mean, tta: true, batch_size: 4, device: cpu}\n")
    import stages.predict as stage

    crops, crops_dir = str(crops_pq), str(tiny_prep["crops_dir"])
    monkeypatch.setattr(sys, "argv", ["predict", "--params", str(tmp_path / "params.yaml"), "--checkpoint",
                                      str(tiny_checkpoint), "--inputs", crops, "--inputs-dir", crops_dir,
                                      "--degraded", crops, "--degraded-dir", crops_dir,  # the clean holdout twice
                                      "--folds", str(tmp_path / "folds.parquet"), "--out-dir", str(tmp_path / "preds")])
    assert used(stage.main) > 0 and calls[-1]["tta"] is True
    clean, degraded = (pd.read_parquet(tmp_path / "preds" / f) for f in ("videos.parquet", "degraded/videos.parquet"))
    assert len(clean) and clean["prob"].tolist() == degraded["prob"].tolist()
    videos = tmp_path / "v"
    videos.mkdir()
    for p in sorted(tiny_sample.glob("*/*.mp4"))[:2]:
        (videos / p.name).write_bytes(p.read_bytes())
    assert used(lambda: main(["predict", str(videos), "-o", str(tmp_path / "s.csv"), "--models",
                              str(tiny_checkpoint), "--frames", "4", "--device", "cpu"])) > 0
    model = from_checkpoint(tiny_checkpoint)
    assert used(lambda: bench_predict(videos, Scoring.of([model], frames=4), workers=0)) > 0
    assert used(lambda: train_model(TrainJob("t", ModelParams(arch="resnet18", input_size=32, epochs=1, batch_size=8),
                                    tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"], tmp_path / "t",
                                    scoring=PredictParams(tta=True)), progress=False)) > 0


def test_flip_tta_in_one_batch_equals_two_passes(tiny_checkpoint):
    import torch

    model = from_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3), dtype=np.uint8)
             for _ in range(5)]
    got = score([model], crops, tta=True, batch_size=2)[model.name]
    x = torch.from_numpy(np.stack([model.resize(c) for c in crops]))
    with torch.inference_mode():
        a = model.model(model.spec.prepare(x)).logits
        b = model.model(model.spec.prepare(torch.flip(x, dims=[2]))).logits  # mirror the width of (B, H, W, 3)
    np.testing.assert_allclose(got, torch.sigmoid((a + b) / 2).numpy(), rtol=0, atol=1e-6)
    assert score([model], [], tta=True)[model.name].shape == (0,)


@pytest.mark.parametrize("arch", ["resnet18", "regnetx_002"])
def test_fold_batch_norms_keeps_the_function(arch):
    import torch

    from dfdc.inference.scorer import fold_batch_norms
    from dfdc.models import create_model

    torch.manual_seed(0)
    model = create_model(arch)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        want = model(x).logits
        folded = fold_batch_norms(model)
        got = folded(x).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert folded.spec == model.spec
    if arch == "resnet18":  # plain Conv2d -> BatchNorm2d pairs are folded away
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_fold_batch_norms_leaves_untraceable_models():
    import torch

    from dfdc.inference.scorer import fold_batch_norms

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent: fx cannot trace it

    model = Branchy().eval()
    assert fold_batch_norms(model) is model


def test_score_table_refuses_mixed_inputs(tiny_checkpoint):
    model = from_checkpoint(tiny_checkpoint)

    class Clip:
        name = "c"

        class spec:
            input = "clip"

    with pytest.raises(ValueError, match="one kind of input"):
        score_table([model, Clip()], pd.DataFrame({"shard": [], "key": []}), ".")
