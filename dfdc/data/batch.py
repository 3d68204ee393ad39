"""The training batch: what a dataset collates and a batch-level transform (mix) returns."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class Batch:
    """One batch. ``x`` is uint8 channels-last as collated (``(B, H, W, 3)`` crops or
    ``(B, T, H, W, 3)`` clips) and float in [0, 1] channels-first after :meth:`unit`.
    ``aligned`` holds, per fake, its original's crop at the same place (aligned mixup).
    """

    x: Tensor
    y: Tensor  # (B,) targets in [0, 1]
    idx: Tensor  # (B,) rows of the dataset's table
    aligned: Tensor | None = None  # like x

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        """The batch on ``device``."""
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, x=move(self.x), y=move(self.y), idx=move(self.idx), aligned=move(self.aligned))

    def unit(self) -> "Batch":
        """uint8 channels-last -> float [0, 1] channels-first (mixes work on this form)."""
        from dfdc.models.spec import to_unit

        return replace(self, x=to_unit(self.x), aligned=None if self.aligned is None else to_unit(self.aligned))

    def pin_memory(self) -> "Batch":
        """Pinned host copies, for DataLoader(pin_memory=True)."""
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return replace(self, x=pin(self.x), y=pin(self.y), idx=pin(self.idx), aligned=pin(self.aligned))

    def __len__(self) -> int:
        return len(self.y)


def collate(items: list[dict[str, Any]]) -> Batch:
    """Stack dataset items (dicts with ``x``, ``y``, ``idx`` and optionally ``aligned``) into a :class:`Batch`."""
    x = torch.stack([torch.from_numpy(it["x"]) for it in items])
    y = torch.tensor([it["y"] for it in items], dtype=torch.float32)
    idx = torch.tensor([it["idx"] for it in items], dtype=torch.int64)
    aligned = torch.stack([torch.from_numpy(it["aligned"]) for it in items]) if "aligned" in items[0] else None
    return Batch(x, y, idx, aligned)
