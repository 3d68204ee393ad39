"""The training loop: plain functions over the data, step, validation and checkpoint modules.

CUDA with AMP when present, else CPU. Each epoch balances real and fake crops
(or walks the aligned pairs); a step sums the 1st-place split BCE and the
model's own loss terms after the batch-level mixes. Validation scores the
holdout fold with the scorer and aggregates per video exactly as
`predict@MODEL` does, so the best epoch is chosen by the metric the pipeline
reports. `last.pt` is written every epoch and `best.pt` at the best validation
log loss; a killed run resumes from `last.pt` when its params and data match.

Under torchrun (:mod:`dfdc.train.dist`) the same loop runs on every rank: each
takes a disjoint share of every epoch, DDP averages the gradients, the ranks
score shares of the holdout and rank 0 alone logs and writes. Every random draw
of an epoch is seeded by (seed, epoch, rank), so a resumed run repeats it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dfdc.codehash import code_digest
from dfdc.config.predict import PredictParams
from dfdc.config.train import ModelParams
from dfdc.data.mix import AlignedMixup, CutMix
from dfdc.eval.holdout import holdout_rows, holdout_videos, score_holdout
from dfdc.eval.metrics import binary_metrics
from dfdc.inference.scorer import ScoringModel, score_table
from dfdc.models import DeepfakeModel, checkpoint, create_model
from dfdc.train import dist
from dfdc.train.data import TrainData, build_train_data, data_fingerprint, shard_indices
from dfdc.train.optim import make_optimizer, make_schedule
from dfdc.train.step import NaNLossError, train_step

log = logging.getLogger("dfdc.train")

__all__ = ["NaNLossError", "TrainJob", "build_model", "train_model", "validate"]


def clip_shape(inputs: pd.DataFrame) -> dict[str, int]:
    """``clip_len`` and ``frame_stride`` of a clips table (empty for a crops table); one of each or an error."""
    if "frames" not in inputs.columns:
        return {}
    shape = {}
    for column, name in (("frames", "clip_len"), ("stride", "frame_stride")):
        if column not in inputs.columns:
            continue
        values = sorted(set(inputs[column].astype(int)))
        if len(values) != 1:
            raise ValueError(f"the clips table mixes clips of {values} {column}; a clip model eats one {name}")
        shape[name] = values[0]
    return shape


def build_model(p: ModelParams, backbone: checkpoint.Checkpoint | None = None,
                clip: dict[str, int] | None = None) -> DeepfakeModel:
    """The model of an entry: its architecture (at the ``clip`` shape of its clips, if given), pretrained
    weights, and another model's backbone if given."""
    model = create_model(p.arch, input_size=p.input_size, drop_rate=p.drop_rate, drop_path_rate=p.drop_path_rate,
                         pretrained=p.pretrained, **(clip or {}))
    model.set_losses(p.losses)
    if backbone is not None:
        n = model.load_backbone(backbone.weights, f"backbone_from {backbone.name} ({backbone.path})")
        log.info("backbone: %d tensors from %s", n, backbone.path)
    return model


def validate(model: DeepfakeModel, name: str, data: TrainData, folds: pd.DataFrame, holdout: int,
             directory: str | Path, scoring: PredictParams, device: torch.device,
             leave_out: str | None = None) -> dict[str, Any]:
    """Video-level holdout metrics, scored and aggregated as `predict@MODEL` scores them (without the fakes
    of a left-out manipulation).

    Under DDP each rank scores a contiguous share of the holdout crops with the same weights (rank 0's
    buffers, :func:`dist.broadcast_buffers`); the shares are gathered, rank 0 aggregates them (the
    "thresholds" strategy is fitted over every video) and its metrics reach every rank, so all agree on
    the best epoch.
    """
    videos = holdout_videos(folds, holdout, leave_out)
    scorer = ScoringModel(name, model)
    ctx = dist.current(str(device))
    probs = None
    if ctx.world > 1:
        rows = holdout_rows(data.val, videos)
        mine = np.array_split(np.arange(len(rows)), ctx.world)[ctx.rank]
        part = score_table([scorer], rows.iloc[mine], directory, tta=scoring.tta, batch_size=scoring.batch_size,
                           device=device)[name]
        probs = np.zeros(len(rows), np.float32)
        for idx, p in dist.all_gather_object((mine, part)):
            probs[idx] = p
    metrics = None
    if ctx.is_main:
        scored, _, _ = score_holdout(scorer, data.val, videos, directory, scoring=scoring, device=device,
                                     probs=probs)
        metrics = binary_metrics(scored["label"].to_numpy(), scored["prob"].to_numpy())
    return dist.broadcast_object(metrics)


def code_fingerprint() -> str:
    """Digest of the code a training run runs (:func:`dfdc.codehash.code_digest` of this module's imports): a
    run resumes only under the code that started it (DVC reruns `train@` after a code change, which must
    train anew, not finish the old run). The same fingerprint the preprocessing stages keep."""
    return code_digest("dfdc.train.loop")


def _run_identity(resolved: dict, holdout: int, fingerprint: str, scoring: PredictParams,
                  device: torch.device, world: int) -> dict[str, Any]:
    """What must match for a resume: the params (not the speed-only ``workers``), data, scoring, device kind,
    the number of processes and the code.

    The number of processes is the world size that trains (``nproc``, or torchrun's own when the stage is
    run under it): it changes the global batch, each rank's share of an epoch and the schedule's length, so
    a run resumed with another one starts over.
    """
    return {"params": {k: v for k, v in resolved.items() if k not in ("workers", "nproc")}, "holdout": holdout,
            "code": code_fingerprint(),
            "data": fingerprint, "scoring": {"strategy": scoring.strategy, "tta": scoring.tta,
                        **({"thresholds": dataclasses.asdict(scoring.thresholds)}
                           if scoring.strategy == "thresholds" else {})},
            "device": device.type, "world": world}


def _resume(last: Path, model, opt, sched, scaler, identity: dict, name: str,
            device: torch.device) -> tuple[int, dict | None, list[dict]]:
    """(first epoch to run, best row, history) from ``last`` when it is this run's; (0, None, []) otherwise."""
    if not last.exists():
        return 0, None, []
    try:
        ckpt = checkpoint.load(last, device)
    except checkpoint.CheckpointError as e:
        log.info("%s: %s; starting over", name, e)
        return 0, None, []
    state = ckpt.state or {}
    if state.get("run") != identity:
        log.info("%s: %s holds another run (params, data, scoring, device, processes or code); starting over",
                 name, last)
        return 0, None, []
    model.load_state_dict(ckpt.weights)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    log.info("%s: resuming after epoch %d", name, ckpt.epoch + 1)
    return ckpt.epoch + 1, ckpt.best, ckpt.history


def epoch_seed(seed: int, epoch: int, rank: int | None = None) -> int:
    """The seed of epoch ``epoch``'s draws on ``rank`` (mixes, augmentation, dropout); ``rank`` None: the one
    seed every rank shares (the epoch's order)."""
    words = [seed % 2**63, epoch] if rank is None else [seed % 2**63, epoch, rank + 1]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


def _groups(batches, size: int):
    """Consecutive groups of ``size`` batches (the last one may be shorter)."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


@dataclass
class TrainJob:
    """One training run: the model entry, what it reads and where it writes.

    ``inputs`` is the crops table (or a clips table for a clip model) over the shards in
    ``inputs_dir``. ``scoring`` is how the holdout is scored (the `predict` section).
    ``preprocess`` (the detect/crops settings of the crops) and ``data_info`` (what the
    data is) are recorded in the checkpoints. ``backbone`` is another model's checkpoint
    whose backbone this one starts from. ``landmarks``: the `landmarks` stage's 68 points of the crops.
    ``leave_out`` is a manipulation that neither
    training nor model selection sees (`folds.leave_out`). ``live_dir``: dvclive's folder.
    """

    name: str
    params: ModelParams
    inputs: pd.DataFrame
    folds: pd.DataFrame
    inputs_dir: str | Path
    out_dir: str | Path
    holdout: int = 0
    leave_out: str | None = None
    scoring: PredictParams = field(default_factory=PredictParams)
    preprocess: dict[str, Any] | None = None
    data_info: dict[str, Any] | None = None
    backbone: checkpoint.Checkpoint | None = None
    live_dir: str | Path | None = None
    device: str = "auto"
    landmarks: pd.DataFrame | None = None


@dataclass
class _Run:
    """A training run set up on this rank: the model (raw and as trained), its data and optimizer state."""

    raw: DeepfakeModel
    model: torch.nn.Module
    data: TrainData
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    mixes: list
    identity: dict[str, Any]
    start: int
    best: dict | None
    history: list[dict]


def _setup(job: TrainJob, ctx: dist.Ctx) -> _Run:
    """Model, data, optimizer and schedule of ``job``, resumed from ``last.pt`` when it holds this run."""
    p, dev = job.params, ctx.device
    if p.sync_bn and ctx.world > 1 and dev.type != "cuda":
        raise ValueError(f"{job.name}: sync_bn: SyncBatchNorm runs on GPUs only (torch refuses {dev.type} tensors); "
                         "set sync_bn: false for processes on the CPU")
    torch.manual_seed(p.seed)
    raw = build_model(p, job.backbone, clip_shape(job.inputs))
    if p.sync_bn and ctx.world > 1:
        raw = dist.convert_sync_batchnorm(raw)
    raw = raw.to(dev)
    margin = float(((job.preprocess or {}).get("crops") or {}).get("margin", 0.3))
    data = build_train_data(p, raw.spec, job.inputs, job.folds, job.inputs_dir, job.holdout, leave_out=job.leave_out,
                            margin=margin, landmarks=job.landmarks)
    mixes: list = [AlignedMixup()] if p.aligned_mixup else []
    if p.cutmix > 0:
        mixes.append(CutMix(alpha=p.cutmix_alpha, p=p.cutmix))
    opt = make_optimizer(raw, p)
    steps = math.ceil(data.batches_per_epoch(ctx.world) / p.accumulate)  # optimizer steps per epoch
    sched = make_schedule(opt, p, steps * p.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    # a resume must not cross data, nor weights that the run started from
    starts = [job.backbone.path if job.backbone is not None else None,
              p.pretrained if p.pretrained and Path(p.pretrained).is_file() else None]
    fingerprint = data_fingerprint(data.table, data.val, job.inputs_dir, [f for f in starts if f is not None])
    identity = dist.broadcast_object(_run_identity(dataclasses.asdict(p), job.holdout, fingerprint, job.scoring,
                                                   dev, ctx.world))
    last = Path(job.out_dir) / "last.pt"
    start, best, history = _resume(last, raw, opt, sched, scaler, identity, job.name, dev)
    starts_by_rank = dist.all_gather_object(start)
    if len(set(starts_by_rank)) > 1:
        raise RuntimeError(f"{job.name}: the ranks disagree about resuming from {last} (first epoch by rank: "
                           f"{starts_by_rank}); on several machines the output folder must be one shared folder")
    return _Run(raw, dist.wrap(raw, ctx), data, opt, sched, scaler, mixes, identity, start, best, history)


def _train_epoch(job: TrainJob, run: _Run, epoch: int, ctx: dist.Ctx, progress: bool) -> float:
    """One epoch of this rank's share; the mean training loss."""
    p = job.params
    run.model.train()
    seed = epoch_seed(p.seed, epoch, ctx.rank)
    torch.manual_seed(seed)
    run.data.reseed(seed)
    rng = np.random.default_rng(seed)
    order = run.data.epoch_indices(np.random.default_rng(epoch_seed(p.seed, epoch)))
    losses = []
    bar = tqdm(run.data.loader(shard_indices(order, ctx.rank, ctx.world)),
               desc=f"{job.name} epoch {epoch + 1}/{p.epochs}", unit="batch", disable=not (progress and ctx.is_main))
    for step, group in enumerate(_groups(bar, p.accumulate)):
        where = f"at epoch {epoch + 1}, step {step + 1} (lr {p.lr})"
        try:
            losses.append(train_step(run.model, group, run.opt, run.scaler, run.sched, run.mixes, rng, ctx.device,
                                     where)["loss"])
        except NaNLossError as e:
            raise NaNLossError(f"{job.name}: {e}") from None
        bar.set_postfix(loss=f"{np.mean(losses):.4f}")
    run.raw.end_epoch(epoch)
    dist.broadcast_buffers(run.raw)
    return float(np.mean(losses))


def _save(job: TrainJob, run: _Run, epoch: int, improved: bool) -> None:
    """``last.pt`` (with the state a resume needs) and, when the epoch improved, ``best.pt``."""
    ckpt = checkpoint.Checkpoint(
        name=job.name, params=dataclasses.asdict(job.params), spec=run.raw.spec.to_dict(),
        weights=run.raw.state_dict(), preprocess=job.preprocess, data=job.data_info, epoch=epoch, best=run.best,
        history=list(run.history),
        state={"optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
               "scaler": run.scaler.state_dict(), "run": run.identity})
    out = Path(job.out_dir)
    if improved:
        checkpoint.save(out / "best.pt", dataclasses.replace(ckpt, state=None))
    checkpoint.save(out / "last.pt", ckpt)


def train_model(job: TrainJob, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job``; returns the best epoch's validation metrics, the history and the row counts.

    Run on every rank of an initialised process group (:func:`dfdc.train.dist.setup`), it trains
    one DDP model: ``device`` ``auto`` or ``cuda`` is then ``cuda:LOCAL_RANK``, and rank 0 alone
    writes the checkpoints and the dvclive logs. Every rank returns the same result.
    """
    Path(job.out_dir).mkdir(parents=True, exist_ok=True)
    ctx = dist.current(job.device)
    run = _setup(job, ctx)
    live = _live(job.live_dir)
    for row in run.history:  # a resumed run replays its curves: DVC clears the dvclive dir before a stage runs
        _log(live, row)
    for epoch in range(run.start, job.params.epochs):
        train_loss = _train_epoch(job, run, epoch, ctx, progress)
        val = validate(run.raw, job.name, run.data, job.folds, job.holdout, job.inputs_dir, job.scoring, ctx.device,
                       job.leave_out)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": float(run.opt.param_groups[-1]["lr"]),
               **{f"val_{k}": float(v) for k, v in val.items() if isinstance(v, float)}}
        run.history.append(row)
        improved = run.best is None or val["log_loss"] < run.best["val_log_loss"]
        if improved:
            run.best = row
        if ctx.is_main:
            _save(job, run, epoch, improved)
            _log(live, row)
            print(f"{job.name} epoch {epoch + 1}: train loss {row['train_loss']:.4f}, "
                  f"val log loss {val['log_loss']:.4f}, val auc {val['auc']:.3f}", flush=True)
        dist.barrier()
    if live is not None:
        live.end()
    return {"best": run.best, "history": run.history, "train_items": run.data.train_rows,
            "val_items": len(run.data.val)}


def _live(live_dir):
    """dvclive logger on rank 0 only; None elsewhere or when no dir is given."""
    if live_dir is None:
        return None
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None
    from dvclive import Live

    return Live(str(live_dir), save_dvc_exp=False, dvcyaml=False)


def _log(live, row: dict) -> None:
    if live is None:
        return
    for k, v in row.items():
        if k != "epoch" and isinstance(v, float) and math.isfinite(v):
            live.log_metric(k, v)
    live.next_step()
