"""`detect`: face detection on real videos."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dfdc.config.base import Section, rng

# The keys that decide which faces become training crops; a checkpoint records them
# and `dfdc predict` detects with them. The rest only say how fast the stage runs.
DETECTOR_KEYS = ("thresholds", "min_score", "min_face_size", "min_face_input", "max_faces")
TRACK_KEYS = ("min_iou", "max_gap")


@dataclass
class DetectParams(Section):
    """Face detection on real videos (MTCNN)."""

    SECTION = "detect"

    every: int = rng(ge=1, default=10)
    thresholds: list[float] = field(default_factory=lambda: [0.85, 0.95, 0.95])
    min_score: float = rng(ge=0, le=1, default=0.9)
    min_face_size: int = rng(ge=1, default=40)
    min_face_input: int = rng(ge=12, default=20)  # px at the detector's input: 60 full-res px at 1080p (x0.33)
    max_faces: int = rng(ge=1, default=4)
    min_track: int = rng(ge=1, default=3)
    max_gap: int = rng(ge=0, default=2)
    min_iou: float = rng(ge=0, le=1, default=0.3)
    batch_size: int = rng(ge=1, default=32)
    device: str = "auto"
    workers: int = rng(ge=0, default=2)  # processes, one MTCNN each (0: in the stage's own process)
    chunk: int = rng(ge=1, default=256)  # real videos per resumable chunk (within one dataset part)

    def validate(self) -> None:
        if len(self.thresholds) != 3 or not all(0 <= t <= 1 for t in self.thresholds):
            raise ValueError(f"thresholds: expected three numbers in [0, 1], got {self.thresholds}")

    def provenance(self) -> dict[str, Any]:
        """The settings that shape the crops (recorded with them), without the run-time ones."""
        keep = ("every", "min_track", *DETECTOR_KEYS, *TRACK_KEYS)
        return {k: getattr(self, k) for k in keep}
