"""`predict`: how crop scores become video scores."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dfdc.config.base import Section, rng


@dataclass
class ThresholdParams:
    """The grid search of the "thresholds" strategy (the 15th place), cross-fitted on the holdout."""

    levels: int = rng(ge=1, le=4, default=3)  # rules tried in turn: (t1, k1), (t2, k2), ...
    splits: int = rng(ge=2, le=10, default=2)  # cross-fitting splits of the holdout's originals


@dataclass
class PredictParams(Section):
    """Scoring of the holdout (and, by default, of `dfdc predict`)."""

    SECTION = "predict"

    strategy: Literal["mean", "confident", "weighted", "thresholds"] = "confident"
    thresholds: ThresholdParams = field(default_factory=ThresholdParams)
    tta: bool = False
    batch_size: int = rng(ge=1, default=32)
    device: str = "auto"
