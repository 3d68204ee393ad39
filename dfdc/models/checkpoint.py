"""The one place that writes and reads checkpoints.

A checkpoint is a plain dict of tensors and plain types, loaded with
``torch.load(weights_only=True)``: a file that holds anything else (a pickle
that would run code) is refused before any of it runs. It records what the
model is (params, spec), what it was trained on (the detect/crops settings that
cut its training crops, and the dataset), its weights, the training history and,
for ``last.pt``, the state a resumed run needs.
"""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dfdc.config.base import ParamsError, from_dict
from dfdc.config.train import ModelParams
from dfdc.models import DeepfakeModel, ModelSpec, create_model
from dfdc.store import atomic_path

FORMAT = "dfdc-checkpoint-1"
SYNTHETIC = "sample"  # the dataset name of the built-in sample in the index


class CheckpointError(ValueError):
    """A file is not a dfdc checkpoint this version can use, or is unsafe to load."""


@dataclass
class Checkpoint:
    """Everything a checkpoint holds.

    ``preprocess`` is ``{"detect": {...}, "crops": {...}}`` (``"clips"`` for a clip model): the
    settings that cut the training crops or clips (``dfdc predict`` detects and cuts with them). ``data`` describes the
    training data: ``root`` and ``datasets`` (videos per source dataset of the index,
    e.g. ``{"sample": 192}``). ``state`` holds the resume state of ``last.pt``
    (optimizer, scheduler, scaler, RNGs, holdout, data fingerprint).
    """

    name: str
    params: dict[str, Any]
    spec: dict[str, Any]
    weights: dict[str, Tensor]
    preprocess: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    epoch: int = -1
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] | None = None
    path: Path | None = None  # where it was read from (not stored)

    @property
    def model_params(self) -> ModelParams:
        """The resolved model entry it was trained with."""
        return from_dict(ModelParams, self.params, prefix=f"checkpoint {self.name}", file=str(self.path))

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.spec)

    @property
    def synthetic_only(self) -> bool:
        """Trained on the built-in synthetic sample and nothing else."""
        datasets = (self.data or {}).get("datasets") or {}
        return bool(datasets) and set(datasets) == {SYNTHETIC}

    def build_model(self, device: torch.device | str = "cpu") -> DeepfakeModel:
        """The model with its trained weights, in eval mode on ``device``."""
        p = self.model_params
        try:
            clip = ({"clip_len": int(self.spec["clip_len"]), "frame_stride": int(self.spec["frame_stride"])}
                    if self.spec.get("input") == "clip" else {})
            model = create_model(p.arch, input_size=p.input_size, drop_rate=p.drop_rate,
                                 drop_path_rate=p.drop_path_rate, **clip)
        except ValueError as e:
            raise CheckpointError(f"{self.path}: {e}") from None
        if model.spec.to_dict() != self.spec:
            raise CheckpointError(f"{self.path}: {p.arch} now eats {model.spec.to_dict()}, but the checkpoint "
                                  f"was trained as {self.spec}; retrain it")
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as e:
            raise CheckpointError(f"{self.path}: its weights do not fit {p.arch}: "
                                  f"{str(e).splitlines()[0]}") from None
        return model.to(device).eval()


def save(path: str | Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically (tensors on the CPU, plain types only)."""
    obj = {"format": FORMAT, **{f.name: getattr(ckpt, f.name) for f in dataclasses.fields(ckpt) if f.name != "path"}}
    obj["weights"] = {k: v.detach().cpu() for k, v in ckpt.weights.items()}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


_TYPES = {"name": str, "params": dict, "spec": dict, "weights": dict, "epoch": int, "history": list}


def load(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Read a checkpoint safely; any problem is a :class:`CheckpointError` with one readable line."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the bytes are, one readable line
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in text:
            what = next((w.split(" was not")[0] for w in text.split("GLOBAL ")[1:2]), "a Python object")
            raise CheckpointError(f"{path}: refused: it holds Python objects other than tensors and plain types "
                                  f"({what}), which could run code when loaded; dfdc checkpoints never do") from None
        why = "not a pickle torch can read" if isinstance(e, pickle.UnpicklingError) else \
            (text.strip().splitlines()[0] if text.strip() else type(e).__name__)
        raise CheckpointError(f"{path}: not a torch checkpoint ({why})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a dfdc checkpoint (format {found!r}, expected {FORMAT!r}); "
                              "train it with `dvc repro` or `stages/train.py`")
    for key, tp in _TYPES.items():
        if not isinstance(obj.get(key), tp):
            raise CheckpointError(f"{path}: malformed dfdc checkpoint: {key!r} is "
                                  f"{type(obj.get(key)).__name__}, expected {tp.__name__}")
    if not all(isinstance(v, Tensor) for v in obj["weights"].values()):
        raise CheckpointError(f"{path}: malformed dfdc checkpoint: 'weights' holds something other than tensors")
    for key in ("preprocess", "data", "best", "state"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise CheckpointError(f"{path}: malformed dfdc checkpoint: {key!r} is {type(obj[key]).__name__}, "
                                  "expected a mapping")
    for key in ("detect", "crops", "clips"):
        value = (obj.get("preprocess") or {}).get(key)
        if value is not None and not isinstance(value, dict):
            raise CheckpointError(f"{path}: malformed dfdc checkpoint: preprocess.{key} is "
                                  f"{type(value).__name__}, expected a mapping")
    known = {f.name for f in dataclasses.fields(Checkpoint)} - {"path"}
    ckpt = Checkpoint(**{k: v for k, v in obj.items() if k in known}, path=path)
    try:
        ckpt.model_params
        ckpt.model_spec
    except (ParamsError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed dfdc checkpoint: {e}") from None
    return ckpt
