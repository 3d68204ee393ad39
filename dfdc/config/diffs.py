"""`diffs`: SSIM difference masks."""
from __future__ import annotations

from dataclasses import dataclass

from dfdc.config.base import Section, rng


@dataclass
class DiffsParams(Section):
    """SSIM difference masks."""

    SECTION = "diffs"

    workers: int = rng(ge=0, default=2)
