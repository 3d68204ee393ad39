"""What a model eats and what it returns: the contract every model family keeps.

Datasets, transforms, the scorer and `dfdc predict` read a model's
:class:`ModelSpec` to decide how to feed it; nothing branches on an
architecture's name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

INPUTS = ("frame", "clip")


@dataclass(frozen=True)
class ModelSpec:
    """Input contract of a model.

    ``input`` is ``frame`` (a face crop, ``(B, 3, H, W)``) or ``clip`` (``clip_len``
    crops of one face track, ``frame_stride`` video frames apart, ``(B, 3, T, H, W)``).
    Crops are resized isotropically to ``size`` and zero-padded to a square, scaled to
    [0, 1] and normalised as ``(x - mean) / std``. Parameters whose names start with a
    ``head`` prefix are the classifier; every other parameter is the backbone (a frozen
    or slower backbone, or one taken from another model's checkpoint).
    """

    input: Literal["frame", "clip"]
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    clip_len: int = 1
    frame_stride: int = 1
    head: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"spec input must be one of {INPUTS}, got {self.input!r}")
        if self.size < 1 or self.clip_len < 1 or self.frame_stride < 1:
            raise ValueError(f"spec size, clip_len and frame_stride must be >= 1, got {self}")
        if self.input == "frame" and self.clip_len != 1:
            raise ValueError(f"a frame model eats one crop: clip_len must be 1, got {self.clip_len}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"spec mean and std need 3 values each (std > 0), got {self.mean}, {self.std}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (for checkpoints and JSON)."""
        d = asdict(self)
        d["mean"], d["std"], d["head"] = list(self.mean), list(self.std), list(self.head)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(input=d["input"], size=int(d["size"]), mean=tuple(map(float, d["mean"])),
                   std=tuple(map(float, d["std"])), clip_len=int(d["clip_len"]),
                   frame_stride=int(d["frame_stride"]), head=tuple(d["head"]))

    def is_head(self, name: str) -> bool:
        """Whether parameter ``name`` belongs to the classifier head."""
        return any(name == h or name.startswith(h + ".") for h in self.head)

    def prepare(self, x: Tensor) -> Tensor:
        """uint8 crops ``(B, H, W, 3)`` or clips ``(B, T, H, W, 3)`` -> normalised float model input."""
        return self.normalize(to_unit(x))

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` over the channel axis 1 of a [0, 1] input."""
        shape = (1, 3) + (1,) * (x.dim() - 2)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std


def to_unit(x: Tensor) -> Tensor:
    """uint8 channels-last crops or clips -> float in [0, 1], channels first.

    ``(B, H, W, 3)`` -> ``(B, 3, H, W)``; ``(B, T, H, W, 3)`` -> ``(B, 3, T, H, W)``.
    """
    if x.dim() == 4:
        return x.permute(0, 3, 1, 2).float() / 255
    if x.dim() == 5:
        return x.permute(0, 4, 1, 2, 3).float() / 255
    raise ValueError(f"expected (B, H, W, 3) crops or (B, T, H, W, 3) clips, got shape {tuple(x.shape)}")


class ModelOutput(NamedTuple):
    """What ``forward`` returns: logits ``(B,)`` and optional auxiliary terms (attention maps, features).

    The default ``aux`` is one shared empty dict: read it, never write to it; a model with
    auxiliary terms returns its own dict.
    """

    logits: Tensor
    aux: dict[str, Tensor] = {}


class DeepfakeModel(nn.Module):
    """Base of every registered model: one fake logit per input, a spec, optional loss terms."""

    spec: ModelSpec
    LOSSES: tuple[str, ...] = ()  # optional loss terms a model entry's `losses` may weigh (off by default)
    loss_weights: dict[str, float] = {}  # shared empty default: set_losses gives a model its own

    def set_losses(self, weights: dict[str, float]) -> None:
        """Weigh the optional loss terms named in :attr:`LOSSES`; ValueError naming any other name."""
        unknown = sorted(set(weights) - set(self.LOSSES))
        if unknown:
            raise ValueError(f"no loss term {', '.join(map(repr, unknown))} in this model (its optional terms: "
                             f"{', '.join(self.LOSSES) or 'none'})")
        self.loss_weights = {k: float(v) for k, v in weights.items()}

    def loss_terms(self, out: ModelOutput, batch: Any) -> dict[str, Tensor]:
        """Extra loss terms the training step adds to the split BCE (none by default)."""
        return {}

    def end_epoch(self, epoch: int) -> None:
        """Called by the training loop after each epoch's steps, before validation (nothing by default)."""

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0) -> list[dict]:
        """Optimizer groups: the backbone at ``lr * backbone_lr_scale`` (0: frozen), the head at ``lr``."""
        backbone, head = [], []
        for name, p in self.named_parameters():
            (head if self.spec.is_head(name) else backbone).append(p)
        if backbone_lr_scale == 0:
            for p in backbone:
                p.requires_grad_(False)
            self._frozen_backbone = True
        groups = [{"params": head, "lr": lr, "weight_decay": weight_decay, "name": "head"}]
        if backbone and backbone_lr_scale > 0:
            groups.insert(0, {"params": backbone, "lr": lr * backbone_lr_scale, "weight_decay": weight_decay,
                              "name": "backbone"})
        return [g for g in groups if g["params"]]

    def train(self, mode: bool = True) -> "DeepfakeModel":
        """As nn.Module.train; a frozen backbone's norms and leaf layers stay in eval mode.

        Batch-norm statistics then do not move and the backbone's dropout is off. The flag is
        set module by module (timm's norm+activation layers have children of their own).
        """
        super().train(mode)
        if mode and getattr(self, "_frozen_backbone", False):
            for name, module in self.named_modules():
                if not name or self.spec.is_head(name):
                    continue
                if isinstance(module, nn.modules.batchnorm._NormBase) or not any(True for _ in module.children()):
                    module.training = False
        return self

    def load_backbone(self, state: dict[str, Tensor], source: str) -> int:
        """Copy every backbone tensor of ``state`` (another model's weights) into this model.

        Every backbone parameter and buffer of this model must be in ``state`` with the same
        shape; raises ValueError naming ``source`` otherwise. Returns the number of tensors copied.
        """
        own = self.state_dict()
        wanted = [k for k in own if not self.spec.is_head(k)]
        missing = [k for k in wanted if k not in state]
        wrong = [k for k in wanted if k in state and state[k].shape != own[k].shape]
        if missing or wrong:
            raise ValueError(f"{source}: its weights do not fit this model's backbone: {len(missing)} missing "
                             f"{missing[:3]}, {len(wrong)} of another shape {wrong[:3]}")
        self.load_state_dict({k: state[k] for k in wanted}, strict=False)
        return len(wanted)
