"""One readable training loop: plain functions, a checkpoint is a plain dict.

CUDA with AMP when present, else CPU. Real and fake crops are balanced each
epoch; the loss is the 1st-place split BCE. Validation scores the holdout
fold at video level (frame probabilities averaged per video). A checkpoint
is written every epoch (`last.pt`) plus the best by validation log loss
(`best.pt`); a killed run resumes from `last.pt` when its params match.
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
from torch.utils.data import DataLoader
from tqdm import tqdm

from dfdc.config import ModelParams
from dfdc.data.augment import train_transforms, val_transforms
from dfdc.data.dataset import AlignedMixupDataset, CropDataset, aligned_pairs, balanced_indices
from dfdc.evaluate import binary_metrics
from dfdc.device import pick_device
from dfdc.inference.predict import predict_frames
from dfdc.models import create_model
from dfdc.store import atomic_path
from dfdc.train.losses import split_bce

log = logging.getLogger("dfdc.train")


class NaNLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def split_by_fold(crops: pd.DataFrame, folds: pd.DataFrame, holdout: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train crops, holdout crops) by the video's fold."""
    table = crops.merge(folds[["video", "fold"]], on="video", how="inner")
    return table[table["fold"] != holdout].reset_index(drop=True), table[table["fold"] == holdout].reset_index(drop=True)


def make_optimizer(model: torch.nn.Module, p: ModelParams) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum (the 1st-place recipe)."""
    if p.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, nesterov=True,
                               weight_decay=p.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, p: ModelParams, total_steps: int):
    """Per-step schedule: one-cycle, poly (power 0.9) or constant."""
    total_steps = max(1, total_steps)
    if p.schedule == "onecycle" and total_steps >= 4:  # shorter runs cannot hold a warm-up phase
        pct = max(0.2, 2 / total_steps)  # at least two warm-up steps
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=total_steps, pct_start=pct)
    if p.schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total_steps) ** 0.9)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def _loader(ds, batch_size: int, workers: int, indices=None) -> DataLoader:
    sampler = list(indices) if indices is not None else None
    return DataLoader(ds, batch_size=batch_size, sampler=sampler,
                      num_workers=workers, drop_last=False, persistent_workers=False)


def video_metrics(table: pd.DataFrame, probs: np.ndarray) -> dict:
    """Video-level metrics from frame probabilities (mean per video)."""
    per_video = table.assign(prob=probs).groupby("video").agg(label=("label", "first"), prob=("prob", "mean"))
    return binary_metrics(per_video["label"].to_numpy(), per_video["prob"].to_numpy())


def _save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train_model(
    name: str,
    p: ModelParams,
    crops: pd.DataFrame,
    folds: pd.DataFrame,
    crops_dir: str | Path,
    out_dir: str | Path,
    holdout: int = 0,
    device: str = "auto",
    live_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train model ``name`` with params ``p``; returns the best epoch's validation metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    torch.manual_seed(p.seed)
    rng = np.random.default_rng(p.seed)
    resolved = dataclasses.asdict(p)

    train_table, val_table = split_by_fold(crops, folds, holdout)
    for part, table in (("training", train_table), ("holdout", val_table)):
        if len(table) == 0:
            raise ValueError(f"no {part} crops: the crops table and the folds (holdout fold {holdout}) "
                             "share no video of that part")
    model = create_model(p.arch, drop_rate=p.drop_rate, drop_path_rate=p.drop_path_rate, pretrained=p.pretrained)
    model.to(dev)
    mean, std = model.spec.mean, model.spec.std
    augment = train_transforms(p.input_size, seed=p.seed, paired=p.aligned_mixup, **dataclasses.asdict(p.augment))
    if p.aligned_mixup:
        pairs = aligned_pairs(train_table)
        if len(pairs) == 0:
            raise ValueError("aligned_mixup: no fake crop has its original's crop in the training folds")
        train_ds = AlignedMixupDataset(pairs, crops_dir, augment, mean, std)
    else:
        train_ds = CropDataset(train_table, crops_dir, augment, mean, std)
    val_ds = CropDataset(val_table, crops_dir, val_transforms(p.input_size), mean, std)
    val_loader = _loader(val_ds, p.batch_size * 2, p.workers)
    labels = train_table["label"].to_numpy()

    def epoch_indices() -> np.ndarray:
        """Aligned pairs in a new order, or real and fake crops balanced."""
        return rng.permutation(len(train_ds)) if p.aligned_mixup else balanced_indices(labels, rng)

    steps_per_epoch = math.ceil((len(train_ds) if p.aligned_mixup else
                                 len(balanced_indices(labels, np.random.default_rng(0)))) / p.batch_size)

    opt = make_optimizer(model, p)
    sched = make_schedule(opt, p, steps_per_epoch * p.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    start, best, history = 0, None, []

    last = out_dir / "last.pt"
    data = data_fingerprint(train_table, val_table, crops_dir)
    if last.exists():
        ckpt = torch.load(last, map_location=dev, weights_only=False)
        if ckpt.get("params") == resolved and ckpt.get("holdout") == holdout and ckpt.get("data") == data:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            start, best, history = ckpt["epoch"] + 1, ckpt["best"], ckpt["history"]
            rng.bit_generator.state = ckpt["rng"]
            torch.set_rng_state(ckpt["torch_rng"])
            log.info("%s: resuming after epoch %d", name, ckpt["epoch"])
        else:
            log.info("%s: %s holds another run's params or data; starting over", name, last)

    live = _live(live_dir)
    for row in history:  # a resumed run replays its curves: DVC clears the dvclive dir before a stage runs
        _log(live, row)
    for epoch in range(start, p.epochs):
        model.train()
        loader = _loader(train_ds, p.batch_size, p.workers, indices=epoch_indices())
        losses = []
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{p.epochs}", unit="batch", disable=not progress)
        for step, (x, y, _) in enumerate(bar):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)  # (B, 3, H, W), (B,)
            with torch.autocast("cuda", dtype=torch.float16, enabled=dev.type == "cuda"):
                loss = split_bce(model(x).float(), y)
            if not torch.isfinite(loss):
                raise NaNLossError(f"{name}: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                   f"try a lower lr (now {p.lr}) or check the input crops")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        val = video_metrics(val_table, predict_frames(model, val_loader, dev))
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
               **{f"val_{k}": v for k, v in val.items() if isinstance(v, float)}}
        history.append(row)
        improved = best is None or val["log_loss"] < best["val_log_loss"]
        if improved:
            best = row
        ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "best": best, "history": history,
                "params": resolved, "holdout": holdout, "data": data, "name": name, "arch": p.arch,
                "spec": dataclasses.asdict(model.spec), "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state()}
        if improved:
            _save(ckpt, out_dir / "best.pt")
        _save(ckpt, last)
        _log(live, row)
        print(f"{name} epoch {epoch + 1}: train loss {row['train_loss']:.4f}, "
              f"val log loss {val['log_loss']:.4f}, val auc {val['auc']:.3f}", flush=True)
    if live is not None:
        live.end()
    return {"best": best, "history": history, "train_crops": len(train_table), "val_crops": len(val_table)}


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


def data_fingerprint(train: pd.DataFrame, val: pd.DataFrame, crops_dir: str | Path) -> str:
    """Changes when the crops, their split or the shard files change (a resume must not cross data)."""
    h = hashlib.sha1()
    for table in (train, val):
        h.update(pd.util.hash_pandas_object(table[["key", "shard", "label"]], index=False).to_numpy().tobytes())
    for f in sorted(Path(crops_dir).iterdir()):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()
