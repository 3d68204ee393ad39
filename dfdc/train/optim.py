"""Optimizer and learning-rate schedule of a model entry."""
from __future__ import annotations

import torch

from dfdc.config.train import ModelParams
from dfdc.models import DeepfakeModel


def make_optimizer(model: DeepfakeModel, p: ModelParams) -> torch.optim.Optimizer:
    """AdamW, Adam (weight decay added to the gradient, as Effort's release trains), or SGD with Nesterov momentum
    (the 1st-place recipe), over the model's param groups.

    The backbone runs at ``lr * backbone_lr_scale`` (0: frozen, left out of the optimizer).
    """
    groups = model.param_groups(p.lr, p.weight_decay, p.backbone_lr_scale)
    if not groups:
        raise ValueError("the model has no parameter to train")
    if p.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, nesterov=True, weight_decay=p.weight_decay)
    if p.optimizer == "adam":
        return torch.optim.Adam(groups, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.AdamW(groups, lr=p.lr, weight_decay=p.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, p: ModelParams, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: one-cycle, poly (power 0.9), cosine with warm restarts every ``cycle_epochs`` (down to
    ``min_lr``; GenD's "cyclic") or constant; each group keeps its own peak lr."""
    import math

    total_steps = max(1, total_steps)
    if p.schedule == "onecycle" and total_steps >= 4:  # shorter runs cannot hold a warm-up phase
        pct = max(0.2, 2 / total_steps)  # at least two warm-up steps
        peaks = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=total_steps, pct_start=pct)
    if p.schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total_steps) ** 0.9)
    if p.schedule == "cosine":
        cycle = max(1, round(total_steps * p.cycle_epochs / p.epochs)) if p.cycle_epochs else total_steps
        floor = min(1.0, p.min_lr / p.lr)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s % cycle) / cycle)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
