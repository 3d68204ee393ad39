"""How `dfdc predict` detects, crops and aggregates: the checkpoints' training settings unless told otherwise.

Precedence, per setting: an explicit flag, then what the checkpoints were
trained with (the detect/crops settings that cut their training crops), then
the params file's sections, then the defaults. Each model gets crops at its own
margin; the detector is shared, so models trained with different detector
settings need a flag to settle them. The strategy and TTA come from a flag, the
ensemble file (what `evaluate` scored), the params file's `predict` section, or
the defaults, in that order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dfdc.config.crops import CropsParams
from dfdc.config.detect import DETECTOR_KEYS, TRACK_KEYS, DetectParams
from dfdc.config.predict import PredictParams
from dfdc.inference.scorer import ScoringModel

FLAGS = {"thresholds": "--thresholds", "min_score": "--min-score", "min_face_size": "--min-face-size",
         "max_faces": "--max-faces", "min_iou": "--min-iou", "max_gap": "--max-gap", "margin": "--margin",
         "strategy": "--strategy", "tta": "--tta/--no-tta"}


class SettingsConflict(ValueError):
    """The models of one ensemble were trained with different detector settings and no flag settles it."""


@dataclass
class Settings:
    """Resolved scoring settings and, for the summary line, where each came from."""

    detector: dict[str, Any]  # FaceDetector keyword arguments (thresholds, min_score, min_face_size, max_faces)
    link: dict[str, Any]  # link_tracks keyword arguments (min_iou, max_gap)
    margins: dict[str, float]  # per model
    strategy: str
    tta: bool
    sources: dict[str, str] = field(default_factory=dict)  # setting -> "flag" | "checkpoints" | "params" | ...
    temperature: float | None = None  # the calibrated ensemble's, from its file
    frames: int = 32  # frames sampled evenly from a video
    detect_every: int = 10  # the detector sees about one sampled frame every this many video frames
    clip_windows: int = 10  # windows per face track for a clip model
    batch_size: int = 64
    bounds: tuple[float, float] = (0.01, 0.99)  # a submission's probability bounds

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.clip_windows < 1:
            raise ValueError(f"clip_windows must be >= 1, got {self.clip_windows}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")

    def describe(self) -> str:
        """One phrase for the summary line, naming what did not come from the checkpoints."""
        by_source: dict[str, list[str]] = {}
        for key, source in self.sources.items():
            by_source.setdefault(source, []).append(key)
        parts = []
        if "flag" in by_source:
            parts.append("from flags (overriding the checkpoints): " +
                         ", ".join(f"{k} {self._value(k)}" for k in by_source["flag"]))
        for source in ("params", "defaults"):
            keys = [k for k in by_source.get(source, []) if k not in ("strategy", "tta")]
            if keys:
                parts.append(f"from the {source} (not in the checkpoints): " + ", ".join(keys))
        return "; ".join(parts) if parts else "detector and crops as the models were trained"

    def _value(self, key: str) -> Any:
        if key == "margin":
            return sorted(set(self.margins.values()))[0]
        return {**self.detector, **self.link, "strategy": self.strategy, "tta": self.tta}.get(key)


def _trained(m: ScoringModel, section: str) -> dict[str, Any]:
    """A section of the settings that cut the model's training crops (empty when not recorded)."""
    return (m.preprocess or {}).get(section) or {}


def _cut_by(m: ScoringModel) -> str:
    """The stage whose settings cut the model's inputs: ``crops``, or ``clips`` for a clip model."""
    return "clips" if m.spec.input == "clip" else "crops"


def clip_size(m: ScoringModel) -> int:
    """The side of the square clips a clip model was trained on (its spec's size when not recorded)."""
    return int(_trained(m, "clips").get("size", m.spec.size))


def _params_sections(params: str | Path | None) -> tuple[DetectParams, CropsParams, PredictParams, str]:
    if params is not None and Path(params).is_file():
        return DetectParams.load(params), CropsParams.load(params), PredictParams.load(params), "params"
    return DetectParams(), CropsParams(), PredictParams(), "defaults"


def resolve(models: Sequence[ScoringModel], flags: dict[str, Any], params: str | Path | None = None,
            ensemble: Any = None) -> Settings:
    """Settings for scoring with ``models``; ``flags`` maps setting names to values or None (not given).

    ``frames``, ``detect_every``, ``clip_windows`` and ``batch_size`` come from the flags or the defaults.

    Raises :class:`SettingsConflict` when the models' detector settings differ on a key no flag sets.
    """
    detect_p, crops_p, predict_p, fallback = _params_sections(params)
    sources: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key in (*DETECTOR_KEYS, *TRACK_KEYS):
        if flags.get(key) is not None:
            values[key], sources[key] = flags[key], "flag"
            continue
        trained = {m.name: _trained(m, "detect")[key] for m in models if key in _trained(m, "detect")}
        per_model = {m.name: trained.get(m.name, getattr(detect_p, key)) for m in models}
        seen: dict[str, list[str]] = {}
        for name, value in per_model.items():
            seen.setdefault(repr(value), []).append(name)
        if len(seen) > 1:
            told = "; ".join(f"{', '.join(names)}: {key} {v}" for v, names in seen.items())
            raise SettingsConflict(f"the models were trained on crops from different detector settings ({told}); "
                                   f"pass {FLAGS[key]} to choose one")
        values[key] = next(iter(per_model.values())) if per_model else getattr(detect_p, key)
        sources[key] = "checkpoints" if models and len(trained) == len(models) else fallback
    margins = {}
    if flags.get("margin") is not None:
        margins = {m.name: float(flags["margin"]) for m in models}
        sources["margin"] = "flag"
    else:
        for m in models:
            margins[m.name] = float(_trained(m, _cut_by(m)).get("margin", crops_p.margin))
        sources["margin"] = "checkpoints" if all("margin" in _trained(m, _cut_by(m)) for m in models) else fallback
    for key, from_ensemble, from_params in (("strategy", getattr(ensemble, "strategy", None), predict_p.strategy),
                                            ("tta", getattr(ensemble, "tta", None), predict_p.tta)):
        if flags.get(key) is not None:
            values[key], sources[key] = flags[key], "flag"
        elif from_ensemble is not None:
            values[key], sources[key] = from_ensemble, "ensemble"
        else:
            values[key], sources[key] = from_params, fallback
    sampling = {k: flags[k] for k in ("frames", "detect_every", "clip_windows", "batch_size")
                if flags.get(k) is not None}
    return Settings(detector={k: values[k] for k in DETECTOR_KEYS}, link={k: values[k] for k in TRACK_KEYS},
                    margins=margins, strategy=values["strategy"], tta=bool(values["tta"]), sources=sources,
                    **sampling)
