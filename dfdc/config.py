"""Typed params sections.

Each stage reads one section of ``params.yaml`` into a dataclass. Unknown keys,
missing required keys, wrong types and out-of-range values raise
:class:`ParamsError` naming the dotted key and the file.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """A params file holds an unknown key or a bad value."""


def _check(meta: dict, value: Any) -> str | None:
    if "ge" in meta and value < meta["ge"]:
        return f"must be >= {meta['ge']}, got {value!r}"
    if "gt" in meta and value <= meta["gt"]:
        return f"must be > {meta['gt']}, got {value!r}"
    if "le" in meta and value > meta["le"]:
        return f"must be <= {meta['le']}, got {value!r}"
    return None


def rng(ge: float | None = None, gt: float | None = None, le: float | None = None, **kw: Any) -> Any:
    """A dataclass field with a numeric range check."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    return field(metadata=meta, **kw)


def _convert(tp: Any, value: Any, key: str, file: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ParamsError:
        return ParamsError(f"{file}: {key}: expected {expected}, got {value!r}")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key, file)
            except ParamsError as e:
                errors.append(str(e))
        raise bad(" or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{file}: {key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return from_dict(tp, value, prefix=key, file=file)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {k: _convert(args[1], v, f"{key}.{k}", file) for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        item = args[0] if args else Any
        return [_convert(item, v, f"{key}[{i}]", file) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise TypeError(f"unsupported params type {tp!r} for {key}")


def from_dict(cls: type, data: dict, prefix: str, file: str = "params.yaml") -> Any:
    """Build dataclass ``cls`` from ``data``; errors name ``prefix.key`` and ``file``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(
            f"{file}: {prefix}.{unknown[0]}: unknown key (valid keys: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{file}: {key}: required key is missing")
            continue
        value = _convert(hints[name], data[name], key, file)
        problem = _check(f.metadata, value) if value is not None else None
        if problem:
            raise ParamsError(f"{file}: {key}: {problem}")
        kwargs[name] = value
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if post is not None:
        try:
            post()
        except ValueError as e:
            raise ParamsError(f"{file}: {prefix}.{e}") from None
    return obj


def load_section(path: str | Path, name: str, cls: type | None = None) -> Any:
    """Read section ``name`` of the YAML file at ``path`` as ``cls`` (default: SECTIONS[name])."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    cls = cls or SECTIONS.get(name)
    if cls is None:
        raise ParamsError(f"{path}: {name}: unknown section (valid: {', '.join(sorted(SECTIONS))})")
    section = doc.get(name, {})
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ParamsError(f"{path}: {name}: expected a mapping, got {section!r}")
    return from_dict(cls, section, prefix=name, file=str(path))


def check_file(path: str | Path) -> dict[str, Any]:
    """Load every known section of a params file (catches typos in any section)."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: {unknown[0]}: unknown section (valid: {', '.join(sorted(SECTIONS))})")
    return {name: load_section(path, name) for name in doc}


# ---------------------------------------------------------------- sections


@dataclass
class SampleParams:
    """Built-in sample dataset (DFDC layout)."""

    seed: int = 0
    parts: int = rng(ge=1, default=4)
    reals_per_part: int = rng(ge=1, default=3)
    fakes_per_real: int = rng(ge=0, default=2)
    seconds_min: float = rng(gt=0, default=2.0)
    seconds_max: float = rng(gt=0, default=3.0)
    workers: int = rng(ge=0, default=2)

    def validate(self) -> None:
        if self.seconds_max < self.seconds_min:
            raise ValueError(f"seconds_max: must be >= seconds_min ({self.seconds_min}), got {self.seconds_max}")


@dataclass
class DataParams:
    """Where the dataset lives."""

    root: str = "data/sample"
    deps: str = "data/sample"


@dataclass
class IndexParams:
    """Index stage."""

    workers: int = rng(ge=0, default=2)


@dataclass
class DetectParams:
    """Face detection on real videos (MTCNN)."""

    every: int = rng(ge=1, default=10)
    thresholds: list[float] = field(default_factory=lambda: [0.85, 0.95, 0.95])
    min_score: float = rng(ge=0, le=1, default=0.9)
    min_face_size: int = rng(ge=1, default=40)
    max_faces: int = rng(ge=1, default=4)
    min_track: int = rng(ge=1, default=3)
    max_gap: int = rng(ge=0, default=2)
    min_iou: float = rng(ge=0, le=1, default=0.3)
    batch_size: int = rng(ge=1, default=32)
    device: str = "auto"
    workers: int = rng(ge=0, default=2)

    def validate(self) -> None:
        if len(self.thresholds) != 3 or not all(0 <= t <= 1 for t in self.thresholds):
            raise ValueError(f"thresholds: expected three numbers in [0, 1], got {self.thresholds}")


@dataclass
class CropsParams:
    """Face crops for every video at its original's boxes."""

    margin: float = rng(ge=0, default=0.3)
    shard_size: int = rng(ge=1, default=512)
    workers: int = rng(ge=0, default=2)


@dataclass
class DiffsParams:
    """SSIM difference masks."""

    workers: int = rng(ge=0, default=2)


@dataclass
class FoldsParams:
    """Leak-free folds."""

    k: int = rng(ge=2, default=4)
    holdout: int = rng(ge=0, default=0)
    group: Literal["auto", "part", "original"] = "auto"
    seed: int = 0

    def validate(self) -> None:
        if self.holdout >= self.k:
            raise ValueError(f"holdout: must be < k ({self.k}), got {self.holdout}")


@dataclass
class AugmentParams:
    """Switches for the 1st-place training augmentations."""

    jpeg: bool = True
    noise: bool = True
    blur: bool = True
    hflip: bool = True
    color: bool = True
    gray: bool = True
    geometric: bool = True


@dataclass
class ModelParams:
    """One model of the ensemble: `train.models.<name>`."""

    arch: str
    input_size: int = rng(ge=16, default=224)
    epochs: int = rng(ge=1, default=10)
    batch_size: int = rng(ge=2, default=16)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = rng(gt=0, default=1e-3)
    weight_decay: float = rng(ge=0, default=1e-4)
    momentum: float = rng(ge=0, le=1, default=0.9)
    schedule: Literal["onecycle", "poly", "constant"] = "onecycle"
    drop_rate: float = rng(ge=0, le=1, default=0.0)
    drop_path_rate: float = rng(ge=0, le=1, default=0.0)
    pretrained: str | None = None
    augment: AugmentParams = field(default_factory=AugmentParams)
    aligned_mixup: bool = False  # seed 001: mix each fake with its original's crop, target t ~ Beta(0.5, 0.5)
    seed: int = 0
    workers: int = rng(ge=0, default=0)


@dataclass
class TrainParams:
    """Training: one entry per model; `dvc.yaml` runs `train@<name>` for each."""

    device: str = "auto"
    models: dict[str, ModelParams] = field(default_factory=dict)


@dataclass
class PredictParams:
    """Holdout scoring with each trained model."""

    strategy: Literal["mean", "confident", "weighted"] = "confident"
    tta: bool = False
    batch_size: int = rng(ge=1, default=32)
    device: str = "auto"


@dataclass
class EvaluateParams:
    """Ensemble and metrics."""

    models: list[str] = field(default_factory=list)
    method: Literal["equal", "given", "fitted"] = "equal"
    weights: dict[str, float] = field(default_factory=dict)


SECTIONS: dict[str, type] = {
    "train": TrainParams,
    "predict": PredictParams,
    "evaluate": EvaluateParams,
    "sample": SampleParams,
    "data": DataParams,
    "index": IndexParams,
    "detect": DetectParams,
    "crops": CropsParams,
    "diffs": DiffsParams,
    "folds": FoldsParams,
}
