"""One training step: prepare the batches, mix them, forward, split BCE plus the model's own terms, update.

A step is one optimizer update over the global batch: ``accumulate`` micro-batches on each of the
DDP ranks. Its loss is the loss of that whole batch: the split BCE's class means are taken over the
global batch's class counts (summed over micro-batches and ranks before the first forward), and a
model's own terms, batch means, are averaged over the micro-batches and ranks. Gradients then equal
those of the whole batch in one process, up to float rounding (batch norms excepted: their
statistics are per micro-batch and rank unless ``sync_bn``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as tdist
from torch import Tensor, nn

from dfdc.data.batch import Batch
from dfdc.models import DeepfakeModel
from dfdc.models.losses import split_bce
from dfdc.train.dist import group_size, unwrap

Mix = Callable[[Batch, np.random.Generator], Batch]


class NaNLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def prepare(batch: Batch, mixes: Sequence[Mix], rng: np.random.Generator, device: torch.device) -> Batch:
    """A collated batch on ``device`` as [0, 1] floats, through the batch-level ``mixes``."""
    batch = batch.to(device).unit()
    for mix in mixes:
        batch = mix(batch, rng)
    return batch


def _terms(model: nn.Module, batch: Batch, device: torch.device,
           totals: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """The loss terms of a prepared batch: ``bce`` (its share of the global split BCE when ``totals``
    are given) and the model's ``loss_terms``. ``model`` may be DDP-wrapped: the forward goes through
    the wrapper, the spec and the terms come from the model inside."""
    raw = unwrap(model)
    x = raw.spec.normalize(batch.x)
    with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        out = model(x)
    logits = out.logits.float()
    terms = {"bce": split_bce(logits, batch.y) if totals is None else split_bce(logits, batch.y, totals=totals)}
    terms.update(raw.loss_terms(out, batch))
    return terms


def forward_loss(model: DeepfakeModel, batch: Batch, mixes: Sequence[Mix], rng: np.random.Generator,
                 device: torch.device) -> tuple[Tensor, dict[str, float]]:
    """Loss of one batch: split BCE on the (mixed) targets plus the model's ``loss_terms``.

    Returns the total and each term's value (``bce`` and the model's names).
    """
    terms = _terms(model, prepare(batch, mixes, rng, device), device)
    total = torch.stack([t.float() for t in terms.values()]).sum()
    return total, {k: float(v.detach()) for k, v in terms.items()}


def class_totals(batches: Sequence[Batch], model: nn.Module) -> tuple[int, int]:
    """(reals, fakes) over ``batches`` (prepared: targets after the mixes) on every rank of ``model``."""
    counts = torch.zeros(2, dtype=torch.int64, device=batches[0].y.device)
    for b in batches:
        fake = b.y >= 0.5
        counts += torch.stack([(~fake).sum(), fake.sum()])
    if group_size(model) > 1:
        tdist.all_reduce(counts, group=model.process_group)
    return int(counts[0]), int(counts[1])


def train_step(model: nn.Module, batches: Batch | Sequence[Batch], opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, sched: torch.optim.lr_scheduler.LRScheduler, mixes: Sequence[Mix],
               rng: np.random.Generator, device: torch.device, where: str = "") -> dict[str, float]:
    """Forward, backward and one update over ``batches`` (one batch, or the micro-batches of an
    accumulated step), on every rank when ``model`` is DDP-wrapped.

    Returns the global batch's loss and terms (the same on every rank). Raises
    :class:`NaNLossError` on a non-finite loss, before the update and on every rank together.
    """
    batches = [batches] if isinstance(batches, Batch) else list(batches)
    world = group_size(model)
    prepared = [prepare(b, mixes, rng, device) for b in batches]
    totals = None if world == 1 and len(prepared) == 1 else class_totals(prepared, model)
    share = 1.0 / (len(prepared) * world)  # of a batch mean in the global one
    opt.zero_grad(set_to_none=True)
    parts: dict[str, Tensor] = {}
    finite = True
    for i, batch in enumerate(prepared):
        last = i == len(prepared) - 1
        with nullcontext() if world == 1 or last else model.no_sync():
            terms = _terms(model, batch, device, totals)
            own = {k: v.float() * (1.0 if k == "bce" and totals is not None else share) for k, v in terms.items()}
            loss = torch.stack(list(own.values())).sum()
            if world == 1 and not torch.isfinite(loss):
                raise NaNLossError(f"loss is {loss.item()} {where}; try a lower lr or check the input crops")
            finite = finite and bool(torch.isfinite(loss))
            scaler.scale(loss * world).backward()  # DDP averages the ranks' gradients; the shares add up
        for k, v in own.items():
            parts[k] = parts.get(k, 0.0) + v.detach()
    names = list(parts)
    values = torch.stack([parts[k] for k in names] + [torch.tensor(0.0 if finite else 1.0, device=device)])
    if world > 1:
        tdist.all_reduce(values, group=model.process_group)
    total = float(values[:-1].sum())
    if values[-1] > 0:
        raise NaNLossError(f"loss is {total} {where}; try a lower lr or check the input crops")
    scaler.step(opt)
    scaler.update()
    sched.step()
    return {"loss": total, **{k: float(v) for k, v in zip(names, values[:-1])}}
