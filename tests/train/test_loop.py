"""A tiny end-to-end train -> predict -> evaluate run, resume and NaN handling."""
import dataclasses
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import dfdc.train.loop as loop
import dfdc.train.step as step
from dfdc.config.evaluate import EvaluateParams
from dfdc.config.predict import PredictParams
from dfdc.config.train import AugmentParams, ModelParams
from dfdc.eval.holdout import holdout_videos, score_holdout
from dfdc.eval.metrics import binary_metrics
from dfdc.eval.report import evaluate
from dfdc.inference.aggregate import video_scores
from dfdc.inference.scorer import from_checkpoint, score_table
from dfdc.models import checkpoint
from dfdc.train.data import split_by_fold
from dfdc.train.optim import make_optimizer, make_schedule


def tiny_params(**kw) -> ModelParams:
    base = dict(arch="resnet18", input_size=32, epochs=2, batch_size=8, lr=1e-3, schedule="onecycle",
                augment=AugmentParams(jpeg=False, noise=False, blur=False))
    return ModelParams(**{**base, **kw})


def test_train_predict_evaluate_end_to_end(tiny_prep, tmp_path):
    p = tiny_params()
    result = loop.train_model(loop.TrainJob("tiny", p, tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"],
                              tmp_path / "m", holdout=0, live_dir=tmp_path / "live"), progress=False)
    assert len(result["history"]) == 2
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_log_loss"]) for h in result["history"])
    assert result["best"]["val_log_loss"] == min(h["val_log_loss"] for h in result["history"])
    assert (tmp_path / "m" / "best.pt").exists() and (tmp_path / "m" / "last.pt").exists()
    assert (tmp_path / "live" / "metrics.json").exists()  # dvclive
    tsv = tmp_path / "live" / "plots" / "metrics" / "val_log_loss.tsv"
    assert len(tsv.read_text().strip().splitlines()) == 3  # header + one row per epoch

    ckpt = checkpoint.load(tmp_path / "m" / "best.pt")
    assert ckpt.params["arch"] == "resnet18" and ckpt.params["input_size"] == 32 and ckpt.spec["size"] == 32
    assert ckpt.state is None and checkpoint.load(tmp_path / "m" / "last.pt").state is not None
    model = from_checkpoint(tmp_path / "m" / "best.pt")
    folds = tiny_prep["folds"]
    videos = folds[folds["fold"] == 0][["video", "label", "fold"]]
    videos = pd.concat([videos, pd.DataFrame([{"video": "noface.mp4", "label": 1, "fold": 0}])])
    frames = tiny_prep["crops"][tiny_prep["crops"]["video"].isin(videos["video"])].reset_index(drop=True)
    frames["prob"] = score_table([model], frames, tiny_prep["crops_dir"], batch_size=4, tta=True)[model.name]
    assert ((frames["prob"] > 0) & (frames["prob"] < 1)).all()
    again = score_table([model], frames, tiny_prep["crops_dir"], batch_size=16, tta=True)[model.name]
    assert np.allclose(frames["prob"], again, atol=1e-5)  # deterministic, batch-size independent
    scored = video_scores(videos, frames, "confident")
    row = scored.set_index("video").loc["noface.mp4"]
    assert row["prob"] == 0.5 and row["reason"] == "no face" and row["n_frames"] == 0
    metrics, _ = evaluate({"tiny": scored, "copy": scored.assign(prob=1 - scored["prob"])},
                          params=EvaluateParams(bootstrap=50))
    assert {"models", "ensemble", "calibration"} <= set(metrics) and metrics["ensemble"]["n"] == len(videos)


def test_killed_run_resumes_from_last_checkpoint(tiny_prep, tmp_path, monkeypatch):
    # the flip and the resize draws are augmentation: a resumed run must repeat them
    p = tiny_params(epochs=2, augment=AugmentParams(False, False, False, True, False, False, False))
    args = (tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"])
    full = loop.train_model(loop.TrainJob("r", p, *args, tmp_path / "ref"), progress=False)
    steps = _steps(tiny_prep, p)
    real_loss = step.split_bce
    calls = {"n": 0}

    def dying_loss(logits, y):
        calls["n"] += 1
        if calls["n"] > steps:
            raise KeyboardInterrupt  # killed in the first step of epoch 2
        return real_loss(logits, y)

    monkeypatch.setattr(step, "split_bce", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        loop.train_model(loop.TrainJob("r", p, *args, tmp_path / "run"), progress=False)
    ck = checkpoint.load(tmp_path / "run" / "last.pt")
    assert ck.epoch == 0 and ck.history == full["history"][:1]

    monkeypatch.setattr(step, "split_bce", real_loss)
    resumed = loop.train_model(loop.TrainJob("r", p, *args, tmp_path / "run", live_dir=tmp_path / "live"),
                               progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    tsv = tmp_path / "live" / "plots" / "metrics" / "train_loss.tsv"
    assert len(tsv.read_text().strip().splitlines()) == 3  # both epochs' curves, the replayed one included
    assert resumed["history"][0] == full["history"][0]
    # same weights, optimiser, schedule, sampling order and augmentation draws: the same epoch
    assert resumed["history"][1] == full["history"][1]

    other = loop.train_model(loop.TrainJob("r", tiny_params(epochs=1), *args, tmp_path / "run"), progress=False)
    assert [h["epoch"] for h in other["history"]] == [1]  # other params: starts over

    counted = {"n": 0}

    def counting_loss(logits, y):
        counted["n"] += 1
        return real_loss(logits, y)

    monkeypatch.setattr(step, "split_bce", counting_loss)
    loop.train_model(loop.TrainJob("d", tiny_params(epochs=1), *args, tmp_path / "data"), progress=False)
    counted["n"] = 0
    loop.train_model(loop.TrainJob("d", tiny_params(epochs=1, workers=1), *args, tmp_path / "data"), progress=False)
    assert counted["n"] == 0  # finished run, same data (and only a speed setting changed): nothing to redo
    shard = sorted(tiny_prep["crops_dir"].glob("*.npz"))[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # checked out anew
    loop.train_model(loop.TrainJob("d", tiny_params(epochs=1), *args, tmp_path / "data"), progress=False)
    assert counted["n"] == 0  # the same bytes: still nothing to redo
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(tiny_prep["crops_dir"], rebuilt)
    with np.load(rebuilt / shard.name) as z:
        np.savez_compressed(rebuilt / shard.name, **{k: z[k] for k in z.files})  # other bytes, same crops
    rebuilt_args = (tiny_prep["crops"], tiny_prep["folds"], rebuilt, tmp_path / "data")
    loop.train_model(loop.TrainJob("d", tiny_params(epochs=1), *rebuilt_args), progress=False)
    assert counted["n"] == steps  # other shard files: trained again from scratch
    counted["n"] = 0
    loop.train_model(loop.TrainJob("d", tiny_params(epochs=1), *rebuilt_args, scoring=PredictParams(strategy="mean")),
                     progress=False)
    assert counted["n"] == steps  # the best epoch is chosen by another strategy: trained again


def _steps(prep, p) -> int:
    from dfdc.data.sampling import balanced_indices

    train, _ = split_by_fold(prep["crops"], prep["folds"], 0)
    return -(-len(balanced_indices(train["label"].to_numpy(), np.random.default_rng(0))) // p.batch_size)


def test_nan_loss_stops_with_a_clear_error(tiny_prep, tmp_path, monkeypatch):
    monkeypatch.setattr(step, "split_bce", lambda logits, y: (logits * float("nan")).mean())
    with pytest.raises(loop.NaNLossError, match=r"n: loss is nan at epoch 1, step 1 \(lr 0.001\).*lower lr"):
        loop.train_model(loop.TrainJob("n", tiny_params(), tiny_prep["crops"], tiny_prep["folds"],
                                       tiny_prep["crops_dir"], tmp_path / "n"), progress=False)


def test_sgd_poly_recipe_steps(tiny_prep, tmp_path):
    p = tiny_params(optimizer="sgd", lr=0.01, schedule="poly", epochs=1)
    from dfdc.models import create_model

    opt = make_optimizer(create_model("resnet18"), p)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"]
    sched = make_schedule(opt, p, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.01 * 0.5**0.9)


def test_adam_and_cosine_with_restarts():
    """Effort's Adam (weight decay as an L2 term) and GenD's cosine restarts: lr to min_lr, back up each cycle."""
    from dfdc.models import create_model

    p = tiny_params(optimizer="adam", lr=0.01, weight_decay=5e-4, schedule="cosine", epochs=4, cycle_epochs=2,
                    min_lr=0.001)
    opt = make_optimizer(create_model("resnet18"), p)
    assert type(opt) is torch.optim.Adam and opt.param_groups[-1]["weight_decay"] == 5e-4
    sched = make_schedule(opt, p, total_steps=8)  # two steps an epoch: a cycle of four
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[-1]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[4] == pytest.approx(0.01)  # restarted
    assert lrs[2] == pytest.approx(0.001 + 0.009 * 0.5) and min(lrs) > 0.001 and lrs[3] < lrs[2] < lrs[1]
    single = tiny_params(lr=0.01, schedule="cosine", epochs=4)  # cycle_epochs 0: one cycle, down to 0
    opt = make_optimizer(create_model("resnet18"), single)
    sched = make_schedule(opt, single, total_steps=8)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[-1]["lr"] == pytest.approx(0.005)


def test_aligned_mixup_training_runs(tiny_prep, tmp_path):
    p = tiny_params(epochs=1, aligned_mixup=True)
    result = loop.train_model(loop.TrainJob("mix", p, tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"],
                              tmp_path / "mix"), progress=False)
    train, _ = split_by_fold(tiny_prep["crops"], tiny_prep["folds"], 0)
    assert np.isfinite(result["history"][0]["train_loss"])
    assert result["train_items"] == len(train)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 6, 10])
def test_onecycle_works_for_any_number_of_steps(steps):
    from dfdc.models import create_model

    p = tiny_params(schedule="onecycle", lr=0.01, backbone_lr_scale=0.1)
    opt = make_optimizer(create_model("resnet18"), p)
    sched = make_schedule(opt, p, total_steps=steps)
    for _ in range(steps):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] <= 0.001 and opt.param_groups[1]["lr"] <= 0.01  # each group its own peak


def test_validation_scores_the_holdout_exactly_as_predict_does(tiny_prep, tmp_path):
    """One scoring path: the best epoch's validation metrics are what predict@MODEL then reports."""
    scoring = PredictParams(strategy="confident", tta=True, batch_size=5)
    result = loop.train_model(loop.TrainJob("v", tiny_params(epochs=2), tiny_prep["crops"], tiny_prep["folds"],
                              tiny_prep["crops_dir"], tmp_path / "v", scoring=scoring), progress=False)
    model = from_checkpoint(tmp_path / "v" / "best.pt")  # as the predict stage loads it (batch norms folded)
    videos = holdout_videos(tiny_prep["folds"], 0)
    scored, _, _ = score_holdout(model, tiny_prep["crops"], videos, tiny_prep["crops_dir"],
                                 scoring=PredictParams(strategy="confident", tta=True, batch_size=7), device="cpu")
    stage = binary_metrics(scored["label"], scored["prob"])
    assert stage["n"] == len(videos)
    assert result["best"]["val_log_loss"] == pytest.approx(stage["log_loss"], abs=1e-5)
    assert result["best"]["val_auc"] == pytest.approx(stage["auc"], abs=1e-9)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv3_small_100"])  # plain BatchNorm2d; timm's BatchNormAct2d
def test_backbone_from_another_model_and_a_frozen_backbone(tiny_prep, tmp_path, arch):
    args = (tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"])
    loop.train_model(loop.TrainJob("a", tiny_params(arch=arch, epochs=1), *args, tmp_path / "a"), progress=False)
    source = checkpoint.load(tmp_path / "a" / "best.pt")
    p = tiny_params(arch=arch, epochs=1, backbone_lr_scale=0.0, backbone_from="a")
    start = loop.build_model(p, source)
    body = [k for k in start.state_dict() if not start.spec.is_head(k)]
    head = [k for k in start.state_dict() if start.spec.is_head(k) and k.endswith("weight")]
    assert all(torch.equal(start.state_dict()[k], source.weights[k]) for k in body)
    loop.train_model(loop.TrainJob("b", p, *args, tmp_path / "b", backbone=source), progress=False)
    trained = checkpoint.load(tmp_path / "b" / "best.pt").weights
    moved = [k for k in body if not torch.equal(trained[k], source.weights[k])]
    assert moved == []  # frozen: weights and batch-norm statistics
    assert any(not torch.equal(trained[k], start.state_dict()[k]) for k in head)  # the head learnt
    with pytest.raises(ValueError, match="backbone_from a .* do not fit this model's backbone"):
        loop.build_model(tiny_params(arch="regnetx_002" if arch == "resnet18" else "resnet18"), source)


def test_a_finished_stacked_run_starts_over_when_its_backbone_changes(tiny_prep, tmp_path, monkeypatch):
    args = (tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"])
    small = "mobilenetv3_small_100"
    loop.train_model(loop.TrainJob("a", tiny_params(arch=small, epochs=1), *args, tmp_path / "a"), progress=False)
    p = tiny_params(arch=small, epochs=1, backbone_from="a")
    loop.train_model(loop.TrainJob("c", p, *args, tmp_path / "c", backbone=checkpoint.load(tmp_path / "a" / "best.pt")),
                     progress=False)
    steps = {"n": 0}
    real_loss = step.split_bce

    def counting(logits, y):
        steps["n"] += 1
        return real_loss(logits, y)

    monkeypatch.setattr(step, "split_bce", counting)
    same = checkpoint.load(tmp_path / "a" / "best.pt")
    loop.train_model(loop.TrainJob("c", p, *args, tmp_path / "c", backbone=same), progress=False)
    assert steps["n"] == 0  # same backbone: the finished run stands
    loop.train_model(loop.TrainJob("a", tiny_params(arch=small, epochs=1, lr=0.01), *args, tmp_path / "a"),
                     progress=False)
    loop.train_model(loop.TrainJob("c", p, *args, tmp_path / "c", backbone=checkpoint.load(tmp_path / "a" / "best.pt")),
                     progress=False)
    assert steps["n"] > 0  # a was retrained: c starts over on its new backbone


def test_a_finished_run_trains_anew_only_under_other_code(tiny_prep, tmp_path, monkeypatch):
    p = tiny_params(epochs=1)
    args = (tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"])
    loop.train_model(loop.TrainJob("c", p, *args, tmp_path / "m"), progress=False)
    real_loss, calls = step.split_bce, {"n": 0}

    def counting_loss(logits, y):
        calls["n"] += 1
        return real_loss(logits, y)

    monkeypatch.setattr(step, "split_bce", counting_loss)
    loop.train_model(loop.TrainJob("c", p, *args, tmp_path / "m"), progress=False)
    assert calls["n"] == 0  # the same code: the finished run stands
    monkeypatch.setattr(loop, "code_fingerprint", lambda: "edited")
    loop.train_model(loop.TrainJob("c", p, *args, tmp_path / "m"), progress=False)
    assert calls["n"] > 0  # DVC reran the stage after a code change: it trains, it does not replay the old run


def test_generalisation_switches_train_together(tiny_prep, tmp_path):
    """The 1st place's cutouts (with the real SSIM diff masks), self-blended pseudo-fakes beside the dataset's
    fakes and a left-out manipulation: one epoch trains, and the left-out fakes reach neither side."""
    from dfdc.config.train import CutoutParams
    from dfdc.folds import unseen_videos, with_methods
    from dfdc.preprocess.landmarks import landmarks_chunked
    from dfdc.train.data import build_train_data

    folds = with_methods(tiny_prep["folds"], tiny_prep["index"])
    method = sorted(folds["method"].dropna().unique())[0]
    assert (tiny_prep["crops"]["mask"] != "").any()  # the crops carry the fakes' diff masks
    p = tiny_params(epochs=1, fakes="both", cutout=CutoutParams(landmarks=0.7, half_face=0.2, diff=0.8))
    spec = loop.build_model(p).spec
    dense, _ = landmarks_chunked(tiny_prep["crops"], tiny_prep["faces"], tiny_prep["crops_dir"], tmp_path / "lm",
                                 workers=0, progress=False)
    data = build_train_data(p, spec, tiny_prep["crops"], folds, tiny_prep["crops_dir"], 0, leave_out=method,
                            landmarks=dense)
    pts = data.dataset.dense  # the 68 points reach the dataset, NaN where the fit failed
    assert pts is not None and len(pts) == len(data.table) and 0.5 < np.isfinite(pts).all((1, 2)).mean()
    ellipse = build_train_data(dataclasses.replace(p, face_region="ellipse"), spec, tiny_prep["crops"], folds,
                               tiny_prep["crops_dir"], 0, leave_out=method, landmarks=dense)
    assert ellipse.dataset.dense is None
    unseen = unseen_videos(folds, method)
    assert unseen and not (set(data.table["video"]) | set(data.val["video"])) & unseen
    assert data.table["self_blend"].sum() == (data.table["label"] == 0).sum()  # one pseudo-fake per real crop
    data.reseed(0)
    items = [data.dataset[i] for i in range(len(data.table))]
    blacked = [float((it["x"] == 0).all(-1).mean()) for it in items]
    assert max(blacked) > 0.05  # some crop really lost a part
    job = loop.TrainJob("gen", p, tiny_prep["crops"], folds, tiny_prep["crops_dir"], tmp_path / "gen",
                        preprocess=tiny_prep["preprocess"], leave_out=method, landmarks=dense)
    result = loop.train_model(job, progress=False)
    assert np.isfinite(result["history"][0]["train_loss"]) and np.isfinite(result["best"]["val_log_loss"])
    clip_spec = dataclasses.replace(spec, input="clip", clip_len=2)
    with pytest.raises(ValueError, match="frame models only"):
        build_train_data(tiny_params(fakes="self_blended"), clip_spec, tiny_prep["crops"].assign(frames=2), folds,
                         tiny_prep["crops_dir"], 0)
    with pytest.raises(ValueError, match="use one of the two"):
        build_train_data(tiny_params(fakes="both", aligned_mixup=True), spec, tiny_prep["crops"], folds,
                         tiny_prep["crops_dir"], 0)
