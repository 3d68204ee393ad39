"""`landmarks`: 68 dense landmarks of every face crop (dlib's shape predictor)."""
from __future__ import annotations

from dataclasses import dataclass

from dfdc.config.base import Section, rng


@dataclass
class LandmarksParams(Section):
    """The landmarks stage."""

    SECTION = "landmarks"

    workers: int = rng(ge=0, default=2)  # processes, one predictor each (the landmarks do not depend on how many)
    model: str | None = None  # a local 68-point dlib model file; default: the one face-recognition-models ships
