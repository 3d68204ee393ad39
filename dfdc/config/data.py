"""`data`: where the dataset lives."""
from __future__ import annotations

from dataclasses import dataclass

from dfdc.config.base import Section


@dataclass
class DataParams(Section):
    """Dataset root (DFDC or FaceForensics++ layout) and what DVC tracks for it."""

    SECTION = "data"

    root: str = "data/sample"
    deps: str = "data/sample"
