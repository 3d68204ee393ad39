"""One training step: prepare the batch, mix it, forward, split BCE plus the model's own terms, update."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from dfdc.data.batch import Batch
from dfdc.models import DeepfakeModel
from dfdc.train.losses import split_bce

Mix = Callable[[Batch, np.random.Generator], Batch]


class NaNLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def forward_loss(model: DeepfakeModel, batch: Batch, mixes: Sequence[Mix], rng: np.random.Generator,
                 device: torch.device) -> tuple[Tensor, dict[str, float]]:
    """Loss of one batch: split BCE on the (mixed) targets plus the model's ``loss_terms``.

    Returns the total and each term's value (``bce`` and the model's names).
    """
    batch = batch.to(device).unit()
    for mix in mixes:
        batch = mix(batch, rng)
    x = model.spec.normalize(batch.x)
    with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        out = model(x)
    terms = {"bce": split_bce(out.logits.float(), batch.y)}
    terms.update(model.loss_terms(out, batch))
    total = torch.stack([t.float() for t in terms.values()]).sum()
    return total, {k: float(v.detach()) for k, v in terms.items()}


def train_step(model: DeepfakeModel, batch: Batch, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               sched: torch.optim.lr_scheduler.LRScheduler, mixes: Sequence[Mix], rng: np.random.Generator,
               device: torch.device, where: str = "") -> dict[str, float]:
    """Forward, backward and update on one batch; raises :class:`NaNLossError` on a non-finite loss."""
    loss, terms = forward_loss(model, batch, mixes, rng, device)
    if not torch.isfinite(loss):
        raise NaNLossError(f"loss is {loss.item()} {where}; try a lower lr or check the input crops")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()
    return {"loss": float(loss.detach()), **terms}
