"""`crops`: face crops of every video."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfdc.config.base import Section, rng


@dataclass
class CropsParams(Section):
    """Face crops for every video at its original's boxes."""

    SECTION = "crops"

    margin: float = rng(ge=0, default=0.3)
    workers: int = rng(ge=0, default=2)  # processes of the cut stage, crops and clips (0: in its own process)
    chunk: int = rng(ge=1, default=64)  # originals (each with its fakes) per resumable chunk: a shard of each

    def provenance(self) -> dict[str, Any]:
        """The settings that shape the crops (recorded with them)."""
        return {"margin": self.margin}
