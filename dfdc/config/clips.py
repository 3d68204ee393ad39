"""`clips`: windows of consecutive face crops along each face track, for the clip models."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dfdc.config.base import Section, rng


@dataclass
class ClipsParams(Section):
    """Face-track clips of every video, real and fake, at its original's tracks.

    A clip is ``window`` frames, ``stride`` video frames apart (NTech: 7 at 1/15 s,
    i.e. stride 2 at 30 fps; the 15th place: 5-frame windows; the Medics: 64 frames), cut at one
    square box per window (the union of the track's boxes over the window plus ``margin``)
    and resized to ``size`` px. ``per_track`` windows are spread evenly over each track. The `cut` stage
    makes them with the crops, in the processes and chunks of :class:`~dfdc.config.crops.CropsParams`.
    """

    SECTION = "clips"

    window: int = rng(ge=1, default=8)
    stride: int = rng(ge=1, default=1)
    per_track: int = rng(ge=1, default=2)
    size: int = rng(ge=16, default=64)
    margin: float = rng(ge=0, default=0.3)
    codec: Literal["mp4", "png"] = "mp4"  # the Medics: lossy MP4 clips generalised better than PNG
    crf: int = rng(ge=0, le=51, default=18)  # x264 CRF of the stored MP4 clips

    def validate(self) -> None:
        if self.codec == "mp4" and self.size % 2:
            raise ValueError(f"size: MP4 clips (yuv420p) need an even size, got {self.size}")

    def provenance(self) -> dict[str, Any]:
        """The settings that shape the clips (recorded with them)."""
        return {"window": self.window, "stride": self.stride, "size": self.size, "margin": self.margin,
                "codec": self.codec, "crf": self.crf}
