"""Registry of deepfake classifiers: ``create_model(name)`` over a dict of builders (timm's style).

A builder takes ``input_size``, ``drop_rate``, ``drop_path_rate`` and ``hub``
(load the architecture's published weights) and returns a
:class:`~dfdc.models.spec.DeepfakeModel` with its spec. A clip model's builder
also names ``clip_len`` and ``frame_stride`` among its parameters (its defaults
are the family's); a frame model's builder does not. Families register their
variants as a table, ``BUILDERS`` (:mod:`dfdc.models.image`, :mod:`dfdc.models.video3d`,
:mod:`dfdc.models.sequence`, :mod:`dfdc.models.wsdan`, :mod:`dfdc.models.foundation`), which
:func:`_load_families` adds to :data:`MODELS` on first use; a new family is one more module named there.
"""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable

from dfdc.models.spec import DeepfakeModel
from dfdc.models.weights import HUB, read_state_dict, weights_file

log = logging.getLogger(__name__)

Builder = Callable[..., DeepfakeModel]
MODELS: dict[str, Builder] = {}


def register(name: str, builder: Builder) -> Builder:
    """Add ``builder`` to :data:`MODELS` under ``name``."""
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = builder
    return builder


def list_models() -> list[str]:
    """Sorted names accepted by :func:`create_model`."""
    _load_families()
    return sorted(MODELS)


def create_model(
    name: str,
    *,
    input_size: int = 224,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    pretrained: str | os.PathLike | None = None,
    clip_len: int | None = None,
    frame_stride: int | None = None,
) -> DeepfakeModel:
    """Build registered model ``name``.

    ``pretrained``: None (random init), a local weights file (loaded into the
    model's published architecture; only the classifier head may differ) or
    ``"hub"`` (the published weights through the hub cache; see
    :mod:`dfdc.models.weights`). ``clip_len`` and ``frame_stride`` (clip models
    only; None: the model's defaults) end up in the model's spec.
    """
    builder = _builder(name)
    clip = {k: v for k, v in (("clip_len", clip_len), ("frame_stride", frame_stride)) if v is not None}
    if clip and not takes_clips(builder):
        raise ValueError(f"{name} eats single crops: clip_len and frame_stride apply to clip models only, "
                         f"got {clip}")
    hub = pretrained == HUB
    path = None if hub else weights_file(pretrained, name)
    model = builder(input_size=input_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate, hub=hub, **clip)
    if path is not None:
        load_pretrained_file(model, path, name)
    return model


def input_kind(name: str) -> str:
    """``"frame"`` or ``"clip"``: what registered model ``name`` eats, read from its builder (nothing is built)."""
    return "clip" if takes_clips(_builder(name)) else "frame"


def loss_names(name: str) -> tuple[str, ...]:
    """The optional loss terms registered model ``name`` offers (its builder's ``losses``; nothing is built)."""
    return tuple(getattr(_builder(name), "losses", ()))


def _builder(name: str) -> Builder:
    _load_families()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return MODELS[name]


def takes_clips(builder: Builder) -> bool:
    """Whether ``builder`` builds a clip model (it names ``clip_len`` and ``frame_stride`` parameters)."""
    params = inspect.signature(builder).parameters
    return "clip_len" in params and "frame_stride" in params


def load_pretrained_file(model: DeepfakeModel, path: os.PathLike, name: str) -> None:
    """Load a local weights file through the model's own key mapping (``pretrained_keys``)."""
    state = read_state_dict(path)
    mapper = getattr(model, "pretrained_keys", None)
    if mapper is not None:
        state = mapper(state)
    own = model.state_dict()
    kept = {k: v for k, v in state.items()
            if not (model.spec.is_head(k) and (k not in own or own[k].shape != v.shape))}
    missing = sorted(k for k in own.keys() - kept.keys() if not model.spec.is_head(k))
    unexpected = sorted(k for k in kept.keys() - own.keys() if not model.spec.is_head(k))
    if missing or unexpected:
        raise RuntimeError(f"weights in {path} do not fit {name}: {len(missing)} missing keys {missing[:5]}, "
                           f"{len(unexpected)} unexpected keys {unexpected[:5]}")
    model.load_state_dict(kept, strict=False)
    skipped = sorted(k for k in own if model.spec.is_head(k) and k not in kept)
    if skipped:
        log.info("%s: classifier head %s kept at initialisation", path, skipped)


def _load_families() -> None:
    """Add the families' tables (each module's ``BUILDERS``) to :data:`MODELS`, once."""
    if _LOADED:
        return
    from dfdc.models import foundation, image, sequence, video3d, wsdan

    for family in (image, video3d, sequence, wsdan, foundation):
        for name, builder in family.BUILDERS.items():
            register(name, builder)
    _LOADED.append(True)


_LOADED: list[bool] = []
