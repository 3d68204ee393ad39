"""Training on two processes (gloo, CPU): DDP gradients, sharded epochs, rank-0 outputs, resume, SyncBN and
gradient accumulation.

Each test starts two ranks with torch.multiprocessing (spawn) in torchrun's environment (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR/PORT), so they join through :func:`dfdc.train.dist.setup` as the stage's do; one
test runs the stage itself, which relaunches under torchrun. SyncBN trains only on GPUs: here its
conversion is checked, and that the CPU refuses it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from helpers import REPO, venv_env

import dfdc.train.loop as loop
import dfdc.train.step as step
from dfdc.config.base import ParamsError
from dfdc.config.predict import PredictParams
from dfdc.config.train import AugmentParams, ModelParams, TrainParams
from dfdc.data.batch import Batch, collate
from dfdc.eval.metrics import binary_metrics
from dfdc.eval.holdout import holdout_videos, score_holdout
from dfdc.inference.scorer import from_checkpoint
from dfdc.models import create_model
from dfdc.models import checkpoint
from dfdc.train import dist
from dfdc.train.data import build_train_data, shard_indices
from dfdc.train.optim import make_optimizer, make_schedule

WORLD = 2
GRAD_ARCH = "clip_vit_tiny_ln"  # LayerNorms, no batch norm: a batch of 2B is two batches of B exactly
BN_ARCH = "resnet18"  # batch norm: each rank normalises over its own share of the batch
BATCH = 8
# Bounds measured with torch's CPU kernels switched between their instruction sets on one machine
# (ATEN_CPU_CAPABILITY avx512 as detected, avx2 and default, and default with oneDNN at SSE4.1 and MKL at
# SSE4.2 / CBWR compatible: docs/reproducibility.md); each is the largest difference seen there times 10.
GRAD_TOL = 3e-7  # one step's gradients and weights, two batches against one (seen: 2.98e-8 under every variant)
LOSS_TOL = 6e-7  # one step's loss, the same (seen: 5.96e-8)
SCORE_TOL = 1e-7  # a holdout's log loss scored in shares on two ranks and in one process (seen: up to 9.9e-9)
TRAJECTORY_TOL = 6e-4  # two epochs' validation log loss of the same global batch without batch norm (seen: 6.18e-5)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_params(**kw) -> ModelParams:
    base = {"arch": "resnet18", "input_size": 32, "epochs": 2, "batch_size": BATCH, "lr": 1e-3,
            "schedule": "onecycle", "augment": AugmentParams(False, False, False, False, False, False, False)}
    return ModelParams(**{**base, **kw})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, fn, port: int, args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = dist.setup("cpu")
    try:
        fn(ctx, *args)
    finally:
        dist.teardown()


def run_ranks(fn, *args) -> None:
    """``fn(ctx, *args)`` on each of two ranks of a gloo process group."""
    mp.spawn(_rank, args=(fn, _free_port(), args), nprocs=WORLD, join=True)


def take(batch: Batch, positions) -> Batch:
    positions = torch.as_tensor(np.asarray(positions), dtype=torch.int64)
    return Batch(batch.x[positions], batch.y[positions], batch.idx[positions])


def global_batch(prep, n: int) -> Batch:
    """``n`` training crops of the tiny sample, in an epoch's order (reals and fakes), unaugmented."""
    p = tiny_params(arch=GRAD_ARCH)
    data = build_train_data(p, create_model(GRAD_ARCH, input_size=32).spec, prep["crops"], prep["folds"],
                            prep["crops_dir"], 0)
    data.reseed(0)
    order = data.epoch_indices(np.random.default_rng(3))[:n]
    return collate([data.dataset[int(i)] for i in order])


def one_step(batches, ctx: dist.Ctx | None = None, arch: str = GRAD_ARCH,
             losses: dict[str, float] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """(gradients, weights after the update, loss) of one train_step from the seed-0 model (with the optional
    ``losses`` weighed), DDP-wrapped on ``ctx``'s ranks if given."""
    torch.manual_seed(0)
    raw = create_model(arch, input_size=32)
    raw.set_losses(losses or {})
    p = tiny_params(arch=arch, lr=1e-2, schedule="constant")
    opt = make_optimizer(raw, p)
    sched = make_schedule(opt, p, 1)
    wrapped = raw if ctx is None else dist.wrap(raw, ctx)
    out = step.train_step(wrapped, batches, opt, torch.amp.GradScaler("cuda", enabled=False), sched, [],
                          np.random.default_rng(0), torch.device("cpu"))
    trained = [(n, q) for n, q in raw.named_parameters() if q.requires_grad]
    return ({n: q.grad.clone() for n, q in trained}, {n: q.detach().clone() for n, q in trained}, out["loss"])


def _grad_worker(ctx: dist.Ctx, batch: Batch, out: Path) -> None:
    mine = shard_indices(np.arange(len(batch)), ctx.rank, ctx.world)
    grads, weights, loss = one_step(take(batch, mine), ctx)
    micro = np.array_split(mine, 2)  # two micro-batches of B/2 on each rank: accumulate 2 under DDP
    acc_grads, acc_weights, acc_loss = one_step([take(batch, m) for m in micro], ctx)
    torch.save({"labels": batch.y[mine].tolist(), "grads": grads, "weights": weights, "loss": loss,
                "acc_grads": acc_grads, "acc_weights": acc_weights, "acc_loss": acc_loss}, out / f"rank{ctx.rank}.pt")


GEND = {"uniformity": 0.5, "alignment": 0.1}  # GenD's weights


def _gend_worker(ctx: dist.Ctx, batch: Batch, out: Path) -> None:
    grads, weights, loss = one_step(take(batch, shard_indices(np.arange(len(batch)), ctx.rank, ctx.world)), ctx,
                                    losses=GEND)
    torch.save({"grads": grads, "weights": weights, "loss": loss}, out / f"gend{ctx.rank}.pt")


def _bn_worker(ctx: dist.Ctx, batch: Batch, out: Path) -> None:
    grads, weights, loss = one_step(take(batch, shard_indices(np.arange(len(batch)), ctx.rank, ctx.world)), ctx,
                                    arch=BN_ARCH)
    torch.save({"grads": grads, "weights": weights, "loss": loss}, out / f"bn{ctx.rank}.pt")


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_ranks_at_batch_b_step_as_one_process_at_2b(tiny_prep, tmp_path):
    batch = global_batch(tiny_prep, 2 * BATCH)
    run_ranks(_grad_worker, batch, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    grads, weights, loss = one_step(batch)
    # the ranks' halves hold different class mixes: the global split BCE is not the mean of the halves'
    assert ranks[0]["labels"] != ranks[1]["labels"]
    assert sorted(ranks[0]["labels"] + ranks[1]["labels"]) == sorted(batch.y.tolist())
    for r in ranks:
        assert max_diff(r["grads"], grads) < GRAD_TOL
        assert max_diff(r["weights"], weights) < GRAD_TOL
        assert r["loss"] == pytest.approx(loss, abs=LOSS_TOL)
        assert max_diff(r["acc_grads"], grads) < GRAD_TOL  # and two micro-batches of B/2 on each rank
        assert max_diff(r["acc_weights"], weights) < GRAD_TOL
        assert r["acc_loss"] == pytest.approx(loss, abs=LOSS_TOL)
    assert max(float(g.abs().max()) for g in grads.values()) > 1e-3  # the gradients compared are not ~0
    print(f"\nDDP 2 x {BATCH} vs 1 x {2 * BATCH}: max |grad diff| {max_diff(ranks[0]['grads'], grads):.3g}, "
          f"under accumulate 2: {max_diff(ranks[0]['acc_grads'], grads):.3g}; |loss diff| "
          f"{max(abs(r[k] - loss) for r in ranks for k in ('loss', 'acc_loss')):.3g}")


def test_gend_feature_losses_are_over_the_global_batch_under_ddp(tiny_prep, tmp_path):
    """Uniformity and alignment on two ranks at B are those of one process at 2B: every rank's features are
    gathered (with their gradients), not each rank's half on its own."""
    batch = global_batch(tiny_prep, 2 * BATCH)
    run_ranks(_gend_worker, batch, tmp_path)
    grads, weights, loss = one_step(batch, losses=GEND)
    plain = one_step(batch)[2]
    for r in (torch.load(tmp_path / f"gend{r}.pt", weights_only=True) for r in range(WORLD)):
        assert max_diff(r["grads"], grads) < GRAD_TOL and max_diff(r["weights"], weights) < GRAD_TOL
        assert r["loss"] == pytest.approx(loss, abs=LOSS_TOL)
    assert abs(loss - plain) > 1e-3  # the feature losses are in the compared loss


def test_accumulating_two_batches_of_b_steps_as_one_batch_of_2b(tiny_prep):
    batch = global_batch(tiny_prep, 2 * BATCH)
    first, second = take(batch, range(BATCH)), take(batch, range(BATCH, 2 * BATCH))
    assert first.y.sum() != second.y.sum()  # unequal class mixes
    grads, weights, loss = one_step(batch)
    acc_grads, acc_weights, acc_loss = one_step([first, second])
    assert max_diff(acc_grads, grads) < GRAD_TOL and max_diff(acc_weights, weights) < GRAD_TOL
    assert acc_loss == pytest.approx(loss, abs=LOSS_TOL)
    print(f"\naccumulate 2 x {BATCH} vs 1 x {2 * BATCH}: max |grad diff| {max_diff(acc_grads, grads):.3g}, "
          f"|loss diff| {abs(acc_loss - loss):.3g}")


class Stopped(Exception):
    """The run stopped on purpose."""


def _train_worker(ctx: dist.Ctx, prep: dict, p: ModelParams, out: Path, live: Path | None, stop_after: int | None,
                  record: Path) -> None:
    real_loss, real_save = step.split_bce, checkpoint.save
    calls, saves = {"n": 0}, []

    def counting_loss(logits, y, **kw):
        calls["n"] += 1
        if stop_after is not None and calls["n"] > stop_after:
            raise Stopped(f"rank {ctx.rank} stopped at loss call {calls['n']}")
        return real_loss(logits, y, **kw)

    def counting_save(path, ckpt):
        saves.append(Path(path).name)
        real_save(path, ckpt)

    step.split_bce, checkpoint.save = counting_loss, counting_save
    history = None
    try:
        job = loop.TrainJob("d", p, prep["crops"], prep["folds"], prep["crops_dir"], out, live_dir=live)
        result = loop.train_model(job, progress=False)
        history = result["history"]
    except Stopped:
        _record(record, ctx, calls["n"], saves, history)
        dist.barrier()  # every rank stops at the same step: each writes its record before any exits
        raise
    finally:
        step.split_bce, checkpoint.save = real_loss, real_save
    _record(record, ctx, calls["n"], saves, history)


def _record(record: Path, ctx: dist.Ctx, loss_calls: int, saves: list[str], history: list[dict] | None) -> None:
    record.mkdir(parents=True, exist_ok=True)
    (record / f"rank{ctx.rank}.json").write_text(json.dumps({"loss_calls": loss_calls, "saves": saves,
                                                             "history": history}))


def _prep(tiny_prep) -> dict:
    return {k: tiny_prep[k] for k in ("crops", "folds", "crops_dir")}


def records(path: Path) -> list[dict]:
    return [json.loads((path / f"rank{r}.json").read_text()) for r in range(WORLD)]


def epoch_batches(prep, p: ModelParams, world: int) -> int:
    data = build_train_data(p, create_model(p.arch, input_size=p.input_size).spec, prep["crops"], prep["folds"],
                            prep["crops_dir"], 0)
    return data.batches_per_epoch(world)


def _two_runs_worker(ctx: dist.Ctx, prep: dict, runs: list[tuple[ModelParams, Path]]) -> None:
    for p, root in runs:
        _train_worker(ctx, prep, p, root / "m", root / "live", None, root / "record")


BN_FREE = {"arch": GRAD_ARCH, "lr": 1e-2}


@pytest.fixture(scope="module")
def ddp_run(tiny_prep, tmp_path_factory) -> dict:
    """Two-epoch runs on two ranks at batch 8 (global batch 16), seed 0, no augmentation: resnet18 (batch norm)
    and the BN-free tiny CLIP tower, in one pair of processes."""
    root = tmp_path_factory.mktemp("ddp")
    p, bn_free = tiny_params(), tiny_params(**BN_FREE)
    run_ranks(_two_runs_worker, _prep(tiny_prep), [(p, root), (bn_free, root / "bn_free")])
    return {"root": root, "p": p, "records": records(root / "record"),
            "bn_free": records(root / "bn_free" / "record")}


def _val_losses(history: list[dict]) -> list[float]:
    return [h["val_log_loss"] for h in history]


def test_two_ranks_validate_like_one_process_at_the_same_global_batch(tiny_prep, ddp_run, tmp_path):
    """2 ranks x batch 8 against 1 process x batch 16 (the same global batch, sample order and steps), without
    batch norm: the same computation, so the validation log losses agree to float rounding (the augmentation
    draws of the resize interpolation are per rank). With batch norm each rank normalises over its own 8 crops,
    so two epochs drift from any one-process run: that is checked one step at a time below."""
    for ranks in (ddp_run["records"], ddp_run["bn_free"]):
        assert ranks[0]["history"] == ranks[1]["history"]  # every rank has the same metrics and best epoch

    def run(p: ModelParams, name: str) -> list[float]:
        job = loop.TrainJob("d", p, tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"], tmp_path / name)
        return _val_losses(loop.train_model(job, progress=False)["history"])

    free_two = _val_losses(ddp_run["bn_free"][0]["history"])
    free_one = run(tiny_params(**BN_FREE, batch_size=2 * BATCH), "free16")
    print(f"\nval log loss by epoch, {GRAD_ARCH}: 2 ranks x {BATCH} {free_two}, 1 x {2 * BATCH} {free_one}; "
          f"max |2 ranks - 1 process| {max(abs(a - b) for a, b in zip(free_two, free_one)):.3g}")
    assert free_two[0] != free_two[1] and all(np.isfinite(free_two + _val_losses(ddp_run["records"][0]["history"])))
    assert max(abs(a - b) for a, b in zip(free_two, free_one)) < TRAJECTORY_TOL


def test_batch_norm_under_ddp_steps_as_one_process_accumulating_each_ranks_share(tiny_prep, tmp_path):
    """With batch norm, 2 ranks x 8 are one process accumulating the two ranks' shares as micro-batches of 8
    (each normalised over its own 8 crops): the same gradients and weights after one step."""
    batch = global_batch(tiny_prep, 2 * BATCH)
    run_ranks(_bn_worker, batch, tmp_path)
    shares = [take(batch, shard_indices(np.arange(len(batch)), r, WORLD)) for r in range(WORLD)]
    grads, weights, loss = one_step(shares, arch=BN_ARCH)
    whole, _, _ = one_step(batch, arch=BN_ARCH)  # one batch of 16 normalises over 16: not the same step
    for r in range(WORLD):
        rank = torch.load(tmp_path / f"bn{r}.pt", weights_only=True)
        print(f"\nrank {r}: max |grad diff| {max_diff(rank['grads'], grads):.3g}, weights "
              f"{max_diff(rank['weights'], weights):.3g}; against one batch of 16: {max_diff(whole, grads):.3g}")
        # the same computation in two processes and in one: exactly equal (seen: 0 under every variant)
        assert max_diff(rank["grads"], grads) == 0 and max_diff(rank["weights"], weights) == 0
        assert rank["loss"] == loss
    assert max_diff(whole, grads) > 0.1  # the comparison tells batch-norm statistics apart (seen: 0.385)


def test_only_rank_zero_writes_and_its_checkpoint_scores_in_one_process(tiny_prep, ddp_run):
    root, (main, other) = ddp_run["root"], ddp_run["records"]
    history = main["history"]
    improved = [h["epoch"] for i, h in enumerate(history)
                if h["val_log_loss"] < min([g["val_log_loss"] for g in history[:i]], default=math.inf)]
    assert other["saves"] == []
    assert sorted(main["saves"]) == sorted(["last.pt"] * 2 + ["best.pt"] * len(improved))
    assert sorted(f.name for f in (root / "m").iterdir()) == ["best.pt", "last.pt"]
    for name in ("train_loss", "val_log_loss"):
        tsv = root / "live" / "plots" / "metrics" / f"{name}.tsv"
        assert len(tsv.read_text().strip().splitlines()) == 3  # header + one row per epoch, written by one rank
    assert json.loads((root / "live" / "metrics.json").read_text())["step"] == 1

    ckpt = checkpoint.load(root / "m" / "best.pt")  # weights_only
    assert not any(k.startswith("module.") for k in ckpt.weights)
    assert ckpt.history == history[:ckpt.epoch + 1]
    state = checkpoint.load(root / "m" / "last.pt").state
    assert state["run"]["world"] == WORLD
    per_rank = epoch_batches(tiny_prep, ddp_run["p"], WORLD)  # each rank's share: about half the batches
    assert per_rank == math.ceil(epoch_batches(tiny_prep, ddp_run["p"], 1) / 2)
    assert state["scheduler"]["total_steps"] == state["scheduler"]["last_epoch"] == 2 * per_rank
    model = from_checkpoint(root / "m" / "best.pt")
    videos = holdout_videos(tiny_prep["folds"], 0)
    scoring = PredictParams()  # what the run validated with
    scored, _, _ = score_holdout(model, tiny_prep["crops"], videos, tiny_prep["crops_dir"],
                                 scoring=dataclasses.replace(scoring, batch_size=7), device="cpu")
    best = next(h for h in history if h["epoch"] == improved[-1])
    # the holdout scored in shares on two ranks gave the metrics one process gets from the checkpoint
    gap = abs(binary_metrics(scored["label"], scored["prob"])["log_loss"] - best["val_log_loss"])
    print(f"\nval log loss, two ranks' shares against one process: |diff| {gap:.3g}")
    assert gap < SCORE_TOL


def _stop_and_resume_worker(ctx: dist.Ctx, prep: dict, p: ModelParams, root: Path, stop_after: int) -> None:
    """Stop in epoch 2's first step, then run the same command again in the same ranks."""
    with pytest.raises(Stopped):
        _train_worker(ctx, prep, p, root / "m", None, stop_after, root / "stopped")
    if ctx.is_main:
        last = checkpoint.load(root / "m" / "last.pt")
        (root / "last.json").write_text(json.dumps({"epoch": last.epoch, "history": last.history}))
    dist.barrier()
    _train_worker(ctx, prep, p, root / "m", root / "live", None, root / "resumed")


def test_a_stopped_ddp_run_resumes_from_last_pt(tiny_prep, ddp_run, tmp_path):
    p, full = ddp_run["p"], ddp_run["records"][0]["history"]
    batches = epoch_batches(tiny_prep, p, WORLD)
    run_ranks(_stop_and_resume_worker, _prep(tiny_prep), p, tmp_path, batches)
    stopped = records(tmp_path / "stopped")
    assert [r["loss_calls"] for r in stopped] == [batches + 1] * WORLD  # both ranks stopped in epoch 2's first step
    last = json.loads((tmp_path / "last.json").read_text())
    assert last["epoch"] == 0 and last["history"] == full[:1]

    resumed = records(tmp_path / "resumed")
    assert [r["loss_calls"] for r in resumed] == [batches] * WORLD  # epoch 2 alone was trained
    assert resumed[0]["history"] == resumed[1]["history"] == full  # the same epoch 2 as the unstopped run
    tsv = tmp_path / "live" / "plots" / "metrics" / "train_loss.tsv"
    assert len(tsv.read_text().strip().splitlines()) == 3  # both epochs' curves, the replayed one included


def test_a_resume_on_another_number_of_processes_starts_over(tiny_prep, ddp_run, tmp_path, monkeypatch):
    shutil.copytree(ddp_run["root"] / "m", tmp_path / "m")
    calls = {"n": 0}
    real = step.split_bce

    def counting(logits, y, **kw):
        calls["n"] += 1
        return real(logits, y, **kw)

    monkeypatch.setattr(step, "split_bce", counting)
    job = loop.TrainJob("d", ddp_run["p"], tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"],
                        tmp_path / "m")
    result = loop.train_model(job, progress=False)
    assert calls["n"] == 2 * epoch_batches(tiny_prep, ddp_run["p"], 1)  # trained both epochs anew
    assert [h["epoch"] for h in result["history"]] == [1, 2]


def _count_norms(model: torch.nn.Module) -> tuple[int, int]:
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    return len(norms), sum(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)


def _syncbn_worker(ctx: dist.Ctx, prep: dict, out: Path) -> None:
    found = {}
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for arch in ("resnet18", "mobilenetv3_small_100"):  # torch's BatchNorm2d; timm's BatchNormAct2d
        torch.manual_seed(0)
        plain = create_model(arch, input_size=32).eval()
        before = _count_norms(plain)
        with torch.no_grad():
            expected = plain(x).logits
        synced = dist.convert_sync_batchnorm(plain)
        with torch.no_grad():
            same = float((synced.eval()(x).logits - expected).abs().max())  # eval: the same function, unsynced
        error = ""
        try:
            synced.train()(x)
        except ValueError as e:
            error = str(e)
        found[arch] = {"before": before, "after": _count_norms(synced), "eval_diff": same, "error": error,
                       "keys": sorted(synced.state_dict()) == sorted(create_model(arch, input_size=32).state_dict())}
    try:
        loop.train_model(loop.TrainJob("s", tiny_params(sync_bn=True), prep["crops"], prep["folds"], prep["crops_dir"],
                         out / f"m{ctx.rank}"), progress=False)
        found["loop"] = ""
    except ValueError as e:
        found["loop"] = str(e)
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(found))


def test_sync_bn_converts_every_batch_norm_and_is_refused_on_the_cpu(tiny_prep, tmp_path):
    """SyncBN trains on several GPUs only; on CPU ranks it is converted and refused, which is what is checked."""
    run_ranks(_syncbn_worker, _prep(tiny_prep), tmp_path)
    for r in range(WORLD):
        found = json.loads((tmp_path / f"rank{r}.json").read_text())
        for arch in ("resnet18", "mobilenetv3_small_100"):
            (n, synced_before), (after, synced) = found[arch]["before"], found[arch]["after"]
            assert n > 10 and synced_before == 0 and after == synced == n  # every batch norm, no other layer
            assert found[arch]["eval_diff"] < 1e-5  # timm's norm + activation keep their activation
            assert found[arch]["keys"]  # a SyncBN checkpoint loads into the plain model
            assert "SyncBatchNorm expected input tensor to be on GPU" in found[arch]["error"]
        assert "sync_bn: SyncBatchNorm runs on GPUs only" in found["loop"]
        assert not (tmp_path / f"m{r}" / "last.pt").exists()


def test_shards_are_disjoint_balanced_and_cover_the_epoch():
    indices = np.random.default_rng(0).permutation(11)
    shards = [shard_indices(indices, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert sorted(np.concatenate(shards).tolist()) == sorted(indices.tolist() + indices[:1].tolist())  # one pad
    by_step = np.stack(shards, axis=1).reshape(-1)  # batch s of every rank together: a 1-process batch of 3x
    assert by_step[:11].tolist() == indices.tolist()
    assert np.array_equal(shard_indices(indices, 0, 1), indices)
    with pytest.raises(ValueError, match="rank 3 is not one of 3 ranks"):
        shard_indices(indices, 3, 3)


def test_accumulation_and_processes_shorten_the_schedule(tiny_prep, tmp_path):
    p = tiny_params(epochs=1, accumulate=2)
    loop.train_model(loop.TrainJob("a", p, tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"],
                                   tmp_path / "a"), progress=False)
    sched = checkpoint.load(tmp_path / "a" / "last.pt").state["scheduler"]
    batches = epoch_batches(tiny_prep, p, 1)
    assert sched["total_steps"] == sched["last_epoch"] == math.ceil(batches / 2) < batches


@pytest.mark.parametrize("key, value, message", [
    ("nproc", 0, "must be >= 1, got 0"), ("accumulate", 0, "must be >= 1, got 0"),
    ("sync_bn", "yes", "expected true or false"), ("nproc", 1.5, "expected an integer")])
def test_params_name_the_key_and_the_file(tmp_path, key, value, message):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"models": {"b0": {"arch": "resnet18", "inputs": "crops", key: value}}}}))
    with pytest.raises(ParamsError, match=f"{path}: train.models.b0.{key}: {message}"):
        TrainParams.load(path)
    path.write_text(yaml.safe_dump({"train": {"models": {"b0": {"arch": "resnet18", "inputs": "crops"}}}}))
    p = TrainParams.load(path).models["b0"]
    assert (p.nproc, p.sync_bn, p.accumulate) == (1, False, 1)


def test_the_stage_relaunches_itself_under_torchrun(tiny_prep, tmp_path):
    crops = tmp_path / "crops.parquet"
    tiny_prep["crops"].to_parquet(crops)
    folds = tmp_path / "folds.parquet"
    tiny_prep["folds"].to_parquet(folds)
    p = {"arch": "resnet18", "inputs": "crops", "input_size": 32, "epochs": 1, "batch_size": BATCH, "nproc": WORLD,
         "augment": {k: False for k in ("jpeg", "noise", "blur", "hflip", "color", "gray", "geometric")}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"device": "cpu", "models": {"tiny": p}}, "folds": {"holdout": 0}}))
    env = venv_env()
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "stages/train.py", "--params", str(params), "--model", "tiny",
                           "--inputs", str(crops), "--inputs-dir", str(tiny_prep["crops_dir"]), "--folds", str(folds),
                           "--out-dir", str(tmp_path / "m"), "--metrics", str(tmp_path / "metrics.json"),
                           "--live-dir", str(tmp_path / "live")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("train@tiny: best epoch 1") == 1  # printed by rank 0 alone
    assert proc.stdout.count("tiny epoch 1: train loss") == 1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1]
    assert sorted(f.name for f in (tmp_path / "m").iterdir()) == ["best.pt", "last.pt"]
    assert checkpoint.load(tmp_path / "m" / "last.pt").state["run"]["world"] == WORLD


def test_under_torchrun_and_the_launch_command():
    assert dist.under_torchrun({"LOCAL_RANK": "0"}) and dist.under_torchrun({"WORLD_SIZE": "4"})
    assert not dist.under_torchrun({"RANK_OF_SOMETHING": "1"})
    cmd = dist.launch_command(4, ["stages/train.py", "--model", "b7"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "stages/train.py",
                       "--model", "b7"]
    ctx = dist.current("cpu")
    assert (ctx.rank, ctx.world, ctx.is_main, ctx.device.type) == (0, 1, True, "cpu")


def test_stopping_the_relaunched_stage_stops_its_workers(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text("import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    pidfile = tmp_path / "pid"
    stage = f"import sys; from dfdc.train import dist; sys.exit(dist.relaunch(1, [{str(worker)!r}, {str(pidfile)!r}]))"
    parent = subprocess.Popen([sys.executable, "-c", stage], env=venv_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    for _ in range(600):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) != 0
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the worker outlived the stage")
