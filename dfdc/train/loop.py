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
import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dfdc.config.predict import PredictParams
from dfdc.config.train import ModelParams
from dfdc.data.mix import AlignedMixup, CutMix
from dfdc.eval.metrics import binary_metrics
from dfdc.inference.holdout import holdout_rows, holdout_videos, score_holdout
from dfdc.inference.scorer import ScoringModel, score_table
from dfdc.models import DeepfakeModel, create_model
from dfdc.train import checkpoint, dist
from dfdc.train.data import TrainData, build_train_data, data_fingerprint, shard_indices
from dfdc.train.optim import make_optimizer, make_schedule
from dfdc.train.step import NaNLossError, train_step

log = logging.getLogger("dfdc.train")

__all__ = ["NaNLossError", "build_model", "train_model", "validate"]


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
    kw = {"strategy": scoring.strategy, "tta": scoring.tta, "batch_size": scoring.batch_size, "device": device,
          "levels": scoring.thresholds.levels, "splits": scoring.thresholds.splits}
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
        scored, _, _ = score_holdout(scorer, data.val, videos, directory, probs=probs, **kw)
        metrics = binary_metrics(scored["label"].to_numpy(), scored["prob"].to_numpy())
    return dist.broadcast_object(metrics)


def code_fingerprint() -> str:
    """SHA-1 of every source file of the dfdc package: a run resumes only under the code that started it
    (DVC reruns `train@` after a code change, which must train anew, not finish the old run)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha1()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


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


def train_model(
    name: str,
    p: ModelParams,
    inputs: pd.DataFrame,
    folds: pd.DataFrame,
    inputs_dir: str | Path,
    out_dir: str | Path,
    *,
    holdout: int = 0,
    device: str = "auto",
    scoring: PredictParams | None = None,
    preprocess: dict[str, Any] | None = None,
    data_info: dict[str, Any] | None = None,
    backbone: checkpoint.Checkpoint | None = None,
    live_dir: str | Path | None = None,
    progress: bool = True,
    leave_out: str | None = None,
    diffs: pd.DataFrame | None = None,
    diffs_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train model ``name`` with params ``p``; returns the best epoch's validation metrics and the history.

    ``inputs`` is the crops table (or a clips table for a clip model) over the shards in
    ``inputs_dir``. ``scoring`` is how the holdout is scored (the `predict` section).
    ``preprocess`` (the detect/crops settings of the crops) and ``data_info`` (what the
    data is) are recorded in the checkpoints. ``backbone`` is another model's checkpoint
    whose backbone this one starts from. ``leave_out`` is a manipulation that neither training
    nor model selection sees (`folds.leave_out`); ``diffs``/``diffs_dir`` (the diffs table and
    shards) serve the diff-guided cutout.

    Run on every rank of an initialised process group (:func:`dfdc.train.dist.setup`), it trains
    one DDP model: ``device`` ``auto`` or ``cuda`` is then ``cuda:LOCAL_RANK``, and rank 0 alone
    writes the checkpoints and the dvclive logs. Every rank returns the same result.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scoring = scoring or PredictParams()
    ctx = dist.current(device)
    dev = ctx.device
    if p.sync_bn and ctx.world > 1 and dev.type != "cuda":
        raise ValueError(f"{name}: sync_bn: SyncBatchNorm runs on GPUs only (torch refuses {dev.type} tensors); "
                         "set sync_bn: false for processes on the CPU")
    torch.manual_seed(p.seed)
    resolved = dataclasses.asdict(p)

    raw = build_model(p, backbone, clip_shape(inputs))
    if p.sync_bn and ctx.world > 1:
        raw = dist.convert_sync_batchnorm(raw)
    raw = raw.to(dev)
    margin = float(((preprocess or {}).get("crops") or {}).get("margin", 0.3))
    data = build_train_data(p, raw.spec, inputs, folds, inputs_dir, holdout, leave_out=leave_out, diffs=diffs,
                            diffs_dir=diffs_dir, margin=margin)
    mixes: list = [AlignedMixup()] if p.aligned_mixup else []
    if p.cutmix > 0:
        mixes.append(CutMix(alpha=p.cutmix_alpha, p=p.cutmix))
    opt = make_optimizer(raw, p)
    steps = math.ceil(data.batches_per_epoch(ctx.world) / p.accumulate)  # optimizer steps per epoch
    sched = make_schedule(opt, p, steps * p.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    # a resume must not cross data, nor weights that the run started from
    starts = [backbone.path if backbone is not None else None,
              p.pretrained if p.pretrained and Path(p.pretrained).is_file() else None]
    fingerprint = data_fingerprint(data.table, data.val, inputs_dir, [f for f in starts if f is not None])
    last = out_dir / "last.pt"
    identity = dist.broadcast_object(_run_identity(resolved, holdout, fingerprint, scoring, dev, ctx.world))
    start, best, history = _resume(last, raw, opt, sched, scaler, identity, name, dev)
    starts_by_rank = dist.all_gather_object(start)
    if len(set(starts_by_rank)) > 1:
        raise RuntimeError(f"{name}: the ranks disagree about resuming from {last} (first epoch by rank: "
                           f"{starts_by_rank}); on several machines the output folder must be one shared folder")
    model = dist.wrap(raw, ctx)

    live = _live(live_dir)
    for row in history:  # a resumed run replays its curves: DVC clears the dvclive dir before a stage runs
        _log(live, row)
    for epoch in range(start, p.epochs):
        model.train()
        seed = epoch_seed(p.seed, epoch, ctx.rank)
        torch.manual_seed(seed)
        data.reseed(seed)
        rng = np.random.default_rng(seed)
        order = data.epoch_indices(np.random.default_rng(epoch_seed(p.seed, epoch)))
        losses = []
        bar = tqdm(data.loader(shard_indices(order, ctx.rank, ctx.world)),
                   desc=f"{name} epoch {epoch + 1}/{p.epochs}", unit="batch", disable=not (progress and ctx.is_main))
        for step, group in enumerate(_groups(bar, p.accumulate)):
            where = f"at epoch {epoch + 1}, step {step + 1} (lr {p.lr})"
            try:
                losses.append(train_step(model, group, opt, scaler, sched, mixes, rng, dev, where)["loss"])
            except NaNLossError as e:
                raise NaNLossError(f"{name}: {e}") from None
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        raw.end_epoch(epoch)
        dist.broadcast_buffers(raw)
        val = validate(raw, name, data, folds, holdout, inputs_dir, scoring, dev, leave_out)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "lr": float(opt.param_groups[-1]["lr"]),
               **{f"val_{k}": float(v) for k, v in val.items() if isinstance(v, float)}}
        history.append(row)
        improved = best is None or val["log_loss"] < best["val_log_loss"]
        if improved:
            best = row
        if ctx.is_main:
            ckpt = checkpoint.Checkpoint(
                name=name, params=resolved, spec=raw.spec.to_dict(), weights=raw.state_dict(),
                preprocess=preprocess, data=data_info, epoch=epoch, best=best, history=list(history),
                state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                       "scaler": scaler.state_dict(), "run": identity})
            if improved:
                checkpoint.save(out_dir / "best.pt", dataclasses.replace(ckpt, state=None))
            checkpoint.save(last, ckpt)
            _log(live, row)
            print(f"{name} epoch {epoch + 1}: train loss {row['train_loss']:.4f}, "
                  f"val log loss {val['log_loss']:.4f}, val auc {val['auc']:.3f}", flush=True)
        dist.barrier()
    if live is not None:
        live.end()
    return {"best": best, "history": history, "train_crops": data.train_rows, "val_crops": len(data.val)}


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
