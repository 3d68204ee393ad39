"""`folds`: leak-free fold assignment."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfdc.config.base import Section, rng


@dataclass
class FoldsParams(Section):
    """Leak-free folds, and the manipulation a generalisation run leaves out."""

    SECTION = "folds"

    k: int = rng(ge=2, default=4)
    holdout: int = rng(ge=0, default=0)
    group: Literal["auto", "part", "original"] = "auto"
    seed: int = 0
    # Leave one manipulation out: the fakes of this `method` (an index column; the sample's blend regions
    # are face, inner and mouth) stay out of training and model selection; the holdout still scores them.
    # Read by the train stages (the folds file does not change with it).
    leave_out: str | None = None

    def validate(self) -> None:
        if self.holdout >= self.k:
            raise ValueError(f"holdout: must be < k ({self.k}), got {self.holdout}")
