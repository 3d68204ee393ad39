"""Registry of one-logit deepfake classifiers built on timm architectures.

A registered name is a small function that builds a timm backbone with a
single output and wraps it so that ``forward`` maps ``(B, 3, H, W)`` images to
``(B,)`` logits. Every model carries a :class:`ModelSpec` (normalisation and
default input size) as ``model.spec``. Weights only ever come from local files:
timm is always called with ``pretrained=False``, so nothing is downloaded.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

MODELS: dict[str, Callable[..., "BinaryClassifier"]] = {}

WEIGHT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors"})
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects of its input: RGB in [0, 1] normalised as ``(x - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int]  # (H, W)
    arch: str  # timm model name the backbone was built from


class BinaryClassifier(nn.Module):
    """A timm backbone with one output unit; ``forward`` returns ``(B,)`` logits."""

    def __init__(self, backbone: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, 3, H, W) -> backbone: (B, 1) -> (B,)
        return self.backbone(x).squeeze(-1)


def register(name: str) -> Callable[[Callable[..., BinaryClassifier]], Callable[..., BinaryClassifier]]:
    """Decorator adding a model-building function to :data:`MODELS` under ``name``."""

    def add(fn: Callable[..., BinaryClassifier]) -> Callable[..., BinaryClassifier]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return add


def list_models() -> list[str]:
    """Sorted names accepted by :func:`create_model`."""
    return sorted(MODELS)


def create_model(
    name: str,
    *,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    pretrained: str | os.PathLike | None = None,
    **kw: Any,
) -> BinaryClassifier:
    """Build registered model ``name``; ``pretrained`` is a local weights file or None.

    ``input_size`` (int or (H, W)) overrides the spec's default input size; other
    keyword arguments go to ``timm.create_model``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    weights = _weights_path(pretrained)
    model = MODELS[name](drop_rate=drop_rate, drop_path_rate=drop_path_rate, **kw)
    if weights is not None:
        _load_weights(model, weights)
    return model


def _timm_classifier(
    arch: str,
    *,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    has_drop_path: bool = True,
    input_size: int | tuple[int, int] | None = None,
    **kw: Any,
) -> BinaryClassifier:
    """Build timm ``arch`` (never pretrained) with one output and wrap it."""
    if drop_path_rate and not has_drop_path:
        raise ValueError(f"{arch} has no stochastic depth; drop_path_rate must be 0, got {drop_path_rate}")
    if has_drop_path:
        kw["drop_path_rate"] = drop_path_rate
    backbone = timm.create_model(arch, pretrained=False, num_classes=1, drop_rate=drop_rate, **kw)
    cfg = backbone.pretrained_cfg
    if input_size is None:
        input_size = tuple(cfg["input_size"][-2:])
    elif isinstance(input_size, int):
        input_size = (input_size, input_size)
    spec = ModelSpec(
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        input_size=(int(input_size[0]), int(input_size[1])),
        arch=arch,
    )
    return BinaryClassifier(backbone, spec)


def _weights_path(pretrained: str | os.PathLike | bool | None) -> Path | None:
    """Validate ``pretrained``: None/False -> None, an existing file -> its path, else raise."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        raise ValueError(
            "pretrained=True would download weights; only local weights files are supported "
            "(no download): pass the path of a state_dict saved with torch.save"
        )
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f"pretrained must be a path or None, got {type(pretrained).__name__}")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    text = os.fspath(pretrained)
    if isinstance(pretrained, os.PathLike) or "/" in text or os.sep in text or path.suffix.lower() in WEIGHT_SUFFIXES:
        raise FileNotFoundError(
            f"pretrained weights file {text!r} is missing (or not a file); nothing is downloaded, "
            "pass an existing local weights file"
        )
    raise ValueError(
        f"pretrained={text!r} is not an existing file; only local weights files are supported "
        "(no download of hub or timm weights such as 'imagenet')"
    )


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a torch.save'd state_dict or checkpoint dict, or a .safetensors file."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in _CHECKPOINT_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    state = {}
    for key, value in obj.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        state[key] = value
    return state


def _load_weights(model: BinaryClassifier, path: Path) -> None:
    """Load ``path`` into ``model.backbone``; only classifier-head keys may differ."""
    heads = model.backbone.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)

    def is_head(key: str) -> bool:
        return any(key.startswith(h + ".") for h in heads)

    own = model.backbone.state_dict()
    state = {
        k: v for k, v in _read_state_dict(path).items()
        if not (is_head(k) and (k not in own or own[k].shape != v.shape))
    }
    missing = sorted(k for k in own.keys() - state.keys() if not is_head(k))
    unexpected = sorted(k for k in state.keys() - own.keys() if not is_head(k))
    if missing or unexpected:
        raise RuntimeError(
            f"weights in {path} do not fit {model.spec.arch}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    model.backbone.load_state_dict(state, strict=False)
    skipped = sorted(k for k in own if is_head(k) and k not in state)
    if skipped:
        log.info("%s: classifier head %s kept at initialisation", path, skipped)


@register("efficientnet_b0")
def efficientnet_b0(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_b0", **kw)


@register("efficientnet_b1")
def efficientnet_b1(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_b1", **kw)


@register("efficientnet_b2")
def efficientnet_b2(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_b2", **kw)


@register("efficientnet_b3")
def efficientnet_b3(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_b3", **kw)


@register("efficientnet_b4")
def efficientnet_b4(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_b4", **kw)


@register("efficientnet_b5")
def efficientnet_b5(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_b5", **kw)


@register("efficientnet_b6")
def efficientnet_b6(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_b6", **kw)


@register("efficientnet_b7")
def efficientnet_b7(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_b7", **kw)


@register("tf_efficientnet_b7_ns")
def tf_efficientnet_b7_ns(**kw: Any) -> BinaryClassifier:
    """The DFDC 1st-place encoder (Noisy Student); timm 1.0 renamed it to a tagged name."""
    return _timm_classifier("tf_efficientnet_b7.ns_jft_in1k", **kw)


@register("xception")
def xception(**kw: Any) -> BinaryClassifier:
    """The original (Keras/Cadene) Xception of FaceForensics++; timm names it legacy_xception."""
    return _timm_classifier("legacy_xception", has_drop_path=False, **kw)


@register("seresnext50_32x4d")
def seresnext50_32x4d(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("seresnext50_32x4d", **kw)


@register("resnet18")
def resnet18(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("resnet18", **kw)


@register("mobilenetv3_small_100")
def mobilenetv3_small_100(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("mobilenetv3_small_100", **kw)


@register("efficientnet_lite0")
def efficientnet_lite0(**kw: Any) -> BinaryClassifier:
    return _timm_classifier("efficientnet_lite0", **kw)


@register("regnetx_002")
def regnetx_002(**kw: Any) -> BinaryClassifier:
    """RegNetX-200MF: a plain conv/BN design that trains well from random init on a CPU."""
    return _timm_classifier("regnetx_002", **kw)
