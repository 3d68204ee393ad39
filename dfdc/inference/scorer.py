"""The one classification path: crops (or clips) in, P(fake) per model out.

`predict@MODEL`, validation during training, `dfdc predict` and `dfdc bench`
all call :func:`score`. Each model gets its input as its spec says: resized
isotropically to ``spec.size`` and zero-padded (AREA down, CUBIC up), moved to
the device as uint8, scaled and normalised there, optionally averaged with its
horizontal mirror (in the same batch), with AMP on CUDA.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from dfdc.data.augment import val_transforms
from dfdc.models import DeepfakeModel, ModelSpec


@dataclass
class ScoringModel:
    """A model ready to score, with what the ensemble and `dfdc predict` need to know of it."""

    name: str
    model: DeepfakeModel
    weight: float = 1.0
    preprocess: dict[str, Any] | None = None  # the detect/crops settings of its training crops
    data: dict[str, Any] | None = None
    synthetic_only: bool = False
    rules: tuple[tuple[float, float], ...] | None = None  # "thresholds": fitted (t, k) pairs (None: not fitted)
    transform: Callable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.transform = val_transforms(self.spec.size)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    def resize(self, item: np.ndarray) -> np.ndarray:
        """One crop (H, W, 3) or clip (T, H, W, 3) at the model's input size."""
        if self.spec.input == "clip":
            return np.asarray(self.transform(images=item)["images"])
        return self.transform(image=item)["image"]


def fold_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy with each Conv2d -> BatchNorm2d pair folded into one convolution (torch.fx).

    The same function up to float rounding, about 10% faster for a ResNet on a
    CPU. Norms that timm fuses with their activation are left as they are, and
    so is a model that torch.fx cannot trace.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        fused = fuse(model.eval())
    except Exception:  # noqa: BLE001 - an untraceable model still scores, unfolded
        return model
    fused.spec = model.spec
    return fused


def from_checkpoint(path: str | Path, device: torch.device | str = "cpu", name: str | None = None,
                    weight: float = 1.0) -> ScoringModel:
    """Load a trained checkpoint for scoring (:func:`scoring_model`)."""
    from dfdc.models.checkpoint import load

    return scoring_model(load(path, device), device, name, weight)


def scoring_model(ckpt: Any, device: torch.device | str = "cpu", name: str | None = None,
                  weight: float = 1.0) -> ScoringModel:
    """A :class:`dfdc.models.checkpoint.Checkpoint` (from a file or a bundle) ready to score: batch norms
    folded on the CPU, channels-last weights."""
    device = torch.device(device)
    model = ckpt.build_model(device)
    if device.type == "cpu":
        model = fold_batch_norms(model)
    if model.spec.input == "frame":
        model = model.to(memory_format=torch.channels_last)  # crops arrive channels-last: a little faster
    return ScoringModel(name or ckpt.name, model, weight, ckpt.preprocess, ckpt.data, ckpt.synthetic_only)


@torch.inference_mode()
def score(models: Sequence[ScoringModel], items: Sequence[np.ndarray], *, tta: bool = False, batch_size: int = 64,
          device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """P(fake) per item for each model: ``{name: (N,) float32}``.

    ``items`` are uint8 RGB crops (H, W, 3) for frame models or clips (T, H, W, 3) for
    clip models. ``tta`` averages each item's logit with its horizontal mirror's; the
    two go through the model in one batch.
    """
    device = torch.device(device)
    out: dict[str, np.ndarray] = {}
    for m in models:
        was_training = m.model.training
        m.model.eval()
        probs = []
        for start in range(0, len(items), batch_size):
            x = torch.from_numpy(np.stack([m.resize(it) for it in items[start:start + batch_size]]))
            x = m.spec.prepare(x.to(device))  # (B, 3, S, S) or (B, 3, T, S, S)
            n = len(x)
            if tta:
                x = torch.cat([x, torch.flip(x, dims=[-1])])
            with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
                logits = m.model(x).logits.float()
            if tta:
                logits = (logits[:n] + logits[n:]) / 2
            probs.append(torch.sigmoid(logits).cpu().numpy())
        m.model.train(was_training)
        out[m.name] = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    return out


def score_table(models: Sequence[ScoringModel], table: pd.DataFrame, directory: str | Path,
                **kw: Any) -> dict[str, np.ndarray]:
    """:func:`score` over the stored crops (or clips) of ``table``, read and scored a chunk at a time."""
    from dfdc.data.clips import read_clips
    from dfdc.data.frames import read_crops

    kinds = {m.spec.input for m in models}
    if len(kinds) > 1:
        raise ValueError(f"score_table reads one kind of input per call, got models eating {sorted(kinds)}")
    read = read_clips if kinds == {"clip"} else read_crops
    parts: dict[str, list[np.ndarray]] = {m.name: [] for m in models}
    for items in read(table, directory):
        for name, p in score(models, items, **kw).items():
            parts[name].append(p)
    return {name: np.concatenate(p) if p else np.zeros(0, np.float32) for name, p in parts.items()}
