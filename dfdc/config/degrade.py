"""`degrade`: a degraded copy of the holdout videos (the 15th place's validation set)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dfdc.config.base import Section, rng

KINDS = ("jpeg", "downscale", "half_fps", "none")


@dataclass
class DegradeParams(Section):
    """One degradation per original, drawn with ``shares``; its fakes get the same one."""

    SECTION = "degrade"

    seed: int = 0
    shares: dict[str, float] = field(default_factory=lambda: {k: 0.25 for k in KINDS})
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 60])  # drawn per original, every frame
    scale: float = rng(gt=0, le=1, default=0.25)  # downscale: each side times this

    def validate(self) -> None:
        """Shares name known degradations and do not all vanish; the JPEG range is [low, high] in 1..100."""
        unknown = sorted(set(self.shares) - set(KINDS))
        if unknown:
            raise ValueError(f"shares: unknown degradation {unknown[0]!r} (valid: {', '.join(KINDS)})")
        if any(v < 0 for v in self.shares.values()) or sum(self.shares.values()) <= 0:
            raise ValueError(f"shares: shares must be >= 0 and sum to more than 0, got {self.shares}")
        lo, hi = (list(self.jpeg_quality) + [0, 0])[:2]
        if len(self.jpeg_quality) != 2 or not 1 <= lo <= hi <= 100:
            raise ValueError(f"jpeg_quality: expected [low, high] with 1 <= low <= high <= 100, "
                             f"got {self.jpeg_quality}")
