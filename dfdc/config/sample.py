"""`sample`: the built-in sample dataset."""
from __future__ import annotations

from dataclasses import dataclass

from dfdc.config.base import Section, rng


@dataclass
class SampleParams(Section):
    """Built-in sample dataset (DFDC layout)."""

    SECTION = "sample"

    seed: int = 0
    parts: int = rng(ge=1, default=4)
    reals_per_part: int = rng(ge=1, default=3)
    fakes_per_real: int = rng(ge=0, default=2)
    seconds_min: float = rng(gt=0, default=2.0)
    seconds_max: float = rng(gt=0, default=3.0)
    workers: int = rng(ge=0, default=2)

    def validate(self) -> None:
        if self.seconds_max < self.seconds_min:
            raise ValueError(f"seconds_max: must be >= seconds_min ({self.seconds_min}), got {self.seconds_max}")
