"""`predict`: how crop scores become video scores."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfdc.config.base import Section, rng


@dataclass
class PredictParams(Section):
    """Scoring of the holdout (and, by default, of `dfdc predict`)."""

    SECTION = "predict"

    strategy: Literal["mean", "confident", "weighted"] = "confident"
    tta: bool = False
    batch_size: int = rng(ge=1, default=32)
    device: str = "auto"
