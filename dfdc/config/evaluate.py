"""`evaluate`: the ensemble, its metrics and calibration, and scores of external labelled sets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dfdc.config.base import Section, rng


@dataclass
class EvaluateParams(Section):
    """Ensemble and metrics."""

    SECTION = "evaluate"

    models: list[str] = field(default_factory=list)
    method: Literal["equal", "given", "fitted"] = "equal"
    weights: dict[str, float] = field(default_factory=dict)
    splits: int = rng(ge=2, le=10, default=2)  # cross-fitting splits (fitted weights, temperatures)
    calibrate: bool = False  # ship the ensemble with its temperature (fitted on the holdout)
    bootstrap: int = rng(ge=0, default=1000)  # resamples for the 95% intervals (0: none)
    external: dict[str, str] = field(default_factory=dict)  # name -> labelled data root, scored by evaluate_external@
