"""The Python API: load a trained detector once, score videos and images with it.

>>> from dfdc import Detector
>>> detector = Detector.load("models/detector.dfdc")          # a bundle from `dfdc export`
>>> result = detector.score("clip.mp4")                        # or an RGB uint8 array
>>> result.prob, result.label, result.reason
>>> for r in detector.score_many(["a.mp4", "b.png"]): print(r.to_json())

`dfdc predict`, `dfdc evaluate` and `dfdc serve` all score through :class:`Detector`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from dfdc.inference.video import Result

__all__ = ["Detector", "Result"]


class Detector:
    """A trained ensemble with its settings, ready to score (see :meth:`load`)."""

    def __init__(self, scoring: Any, threshold: float = 0.5) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.scoring = scoring  # dfdc.inference.load.Scoring: models, resolved settings, device
        self.threshold = float(threshold)
        self._face_detector = None

    @classmethod
    def load(cls, path: str | Path = "models", device: str = "auto", *, runtime: str = "torch",
             threshold: float = 0.5, params: str | Path | None = None, **settings: Any) -> "Detector":
        """Load a bundle file (`dfdc export`), an ensemble file (``ensemble.json``), a models folder or one
        checkpoint (``best.pt``).

        ``device``: "auto" (CUDA when present), "cpu" or "cuda[:N]"; ``runtime``: "torch" or "onnx"
        (onnxruntime on the CPU); ``threshold``: the probability from which a result is labelled FAKE.
        ``settings`` override what the models were trained with: ``frames``, ``detect_every``,
        ``clip_windows``, ``strategy``, ``tta``, ``margin``, ``min_face_size`` ... (as `dfdc predict`'s flags).
        ``params``: a params file for what neither the settings nor the checkpoints say (folders only).
        """
        from dfdc.inference.bundle import is_bundle
        from dfdc.inference.load import load_scoring

        path = Path(path)
        if path.is_dir():
            where = {"models_dir": path}
        elif path.suffix.lower() == ".json":
            where = {"ensemble_file": path}
        elif path.suffix.lower() in (".pt", ".pth") and path.is_file():
            where = {"models": [str(path)]}  # one checkpoint, scored alone
        elif is_bundle(path):
            where = {"bundle": path}
        else:
            raise FileNotFoundError(f"no detector at {path}: pass a bundle file, an ensemble.json or a models folder")
        return cls(load_scoring(**where, device=device, params=params, flags=settings, runtime=runtime),
                   threshold)

    @property
    def notes(self) -> list[str]:
        """Warnings and notes on the loaded models (a model trained only on the synthetic sample, ...)."""
        return list(self.scoring.notes)

    @property
    def models(self) -> list[str]:
        return [m.name for m in self.scoring.models]

    def _detector(self):
        if self._face_detector is None:
            from dfdc.faces.detector import FaceDetector

            self._face_detector = FaceDetector(device=str(self.scoring.device), **self.scoring.settings.detector)
        return self._face_detector

    def score(self, source: Any, *, name: str | None = None, explain: bool = False) -> Result:
        """Score one video or image: a file path, or RGB uint8 frames ((H, W, 3) an image, (T, H, W, 3) a video).

        ``name`` is the result's filename (default: the file's name, or "array"); ``explain`` keeps face
        thumbnails and Grad-CAM maps (``result.to_dict(images=True)``). Never raises for a bad input: the
        result's ``reason`` says why it got 0.5.
        """
        return next(self.score_many([source], workers=0, explain=explain, names=[name] if name else None))

    def score_many(self, sources: Iterable[Any], *, workers: int = 2, explain: bool = False, progress: bool = False,
                   names: Iterable[str] | None = None) -> Iterator[Result]:
        """Score many inputs, ``workers`` at a time, yielding each :class:`Result` in order as it is ready."""
        from dfdc.inference.video import score_stream

        return score_stream(sources, self.scoring, self._detector(), workers=workers, thumbs=explain,
                            progress=progress, threshold=self.threshold, names=names)

    def describe(self) -> dict[str, Any]:
        """What this detector is: its models and weights, how it aggregates, where it came from."""
        s = self.scoring.settings
        return {"models": [{"name": m.name, "weight": m.weight, "input": m.spec.input} for m in self.scoring.models],
                "strategy": s.strategy, "tta": s.tta, "temperature": s.temperature, "threshold": self.threshold,
                "device": str(self.scoring.device), "source": self.scoring.source, "notes": self.notes}
