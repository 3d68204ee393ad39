"""`folds`: leak-free fold assignment."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfdc.config.base import Section, rng


@dataclass
class FoldsParams(Section):
    """Leak-free folds."""

    SECTION = "folds"

    k: int = rng(ge=2, default=4)
    holdout: int = rng(ge=0, default=0)
    group: Literal["auto", "part", "original"] = "auto"
    seed: int = 0

    def validate(self) -> None:
        if self.holdout >= self.k:
            raise ValueError(f"holdout: must be < k ({self.k}), got {self.holdout}")
