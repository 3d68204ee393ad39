"""`evaluate`: the ensemble and its metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dfdc.config.base import Section


@dataclass
class EvaluateParams(Section):
    """Ensemble and metrics."""

    SECTION = "evaluate"

    models: list[str] = field(default_factory=list)
    method: Literal["equal", "given", "fitted"] = "equal"
    weights: dict[str, float] = field(default_factory=dict)
