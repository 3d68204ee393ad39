"""`index`: the dataset index stage."""
from __future__ import annotations

from dataclasses import dataclass

from dfdc.config.base import Section, rng


@dataclass
class IndexParams(Section):
    """Index stage."""

    SECTION = "index"

    workers: int = rng(ge=0, default=2)
