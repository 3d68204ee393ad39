"""Pretrained weights: a local file, or the architecture's published weights through the hub caches.

``pretrained`` is None (random init), a path to a local weights file, or
``"hub"``: timm's published weights through its normal Hugging Face / torch.hub
cache, or torchvision's through torch.hub's cache (``TORCH_HOME``). A download
happens only for ``"hub"`` and only when the weights are not cached. Without
network (``HF_HUB_OFFLINE=1``, which dfdc also applies to torchvision's
downloads, or a host that cannot be reached) the hub path fails at once with a
message naming the model, where the weights would come from and how to give a
local file instead.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor

log = logging.getLogger(__name__)

HUB = "hub"
WEIGHT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors"})
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "weights")  # "weights": a dfdc checkpoint
_PROBE_TIMEOUT_S = 3.0


class WeightsError(RuntimeError):
    """Pretrained weights cannot be had: missing file, no published weights, or no network."""


def weights_file(pretrained: str | os.PathLike | bool | None, model: str) -> Path | None:
    """Validate a local ``pretrained``: None/False -> None, an existing file -> its path, else raise.

    ``"hub"`` is not a file: :func:`hub_source` handles it.
    """
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        raise ValueError(f"{model}: pretrained=True is ambiguous: pass 'hub' for the published weights "
                         "(downloaded once into the hub cache) or the path of a local weights file")
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f"{model}: pretrained must be a path, 'hub' or None, got {type(pretrained).__name__}")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    text = os.fspath(pretrained)
    if isinstance(pretrained, os.PathLike) or "/" in text or os.sep in text or path.suffix.lower() in WEIGHT_SUFFIXES:
        raise FileNotFoundError(f"{model}: pretrained weights file {text!r} is missing (or not a file); "
                                "give an existing local weights file, or 'hub' for the published weights")
    raise ValueError(f"{model}: pretrained={text!r} is neither an existing file nor 'hub' "
                     "(the architecture's published weights, fetched through the hub cache)")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a torch.save'd state_dict or checkpoint dict, or a .safetensors file (no code runs)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear line
        raise WeightsError(f"{path}: not a weights file torch can read safely ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for key in _CHECKPOINT_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    state = {}
    for key, value in obj.items():
        state[key.removeprefix("module.")] = value
    return state


def offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value (dfdc applies it to every hub download)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def reachable(host: str, port: int = 443, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (name lookup included)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _no_network(model: str, what: str, host: str, cache: str) -> WeightsError | None:
    why = ("HF_HUB_OFFLINE is set" if offline() else
           f"{host} cannot be reached" if not reachable(host) else "")
    if not why:
        return None
    return WeightsError(
        f"{model}: pretrained: hub needs {what}, which is not in the cache ({cache}), and {why}: "
        f"download it once on a machine with network and copy the cache here, "
        f"or set pretrained to a local weights file")


def timm_hub_check(model: str, arch: str) -> None:
    """Make sure timm can load ``arch``'s published weights without a failed download.

    Passes when they are cached or the network answers; raises :class:`WeightsError`
    when the architecture has none or they would need a download that cannot happen.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    hf_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if not hf_id and not url:
        raise WeightsError(f"{model}: timm publishes no weights for {arch}; set pretrained to a local weights "
                           "file or leave it empty (random init)")
    if hf_id:
        from huggingface_hub import constants, try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(hf_id, name), str):
                return
        err = _no_network(model, f"timm's weights {hf_id} from the Hugging Face hub", "huggingface.co",
                          constants.HF_HUB_CACHE)
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if cached.is_file():
            return
        err = _no_network(model, f"timm's weights {url}", urlparse(url).hostname or "", str(cached.parent))
    if err is not None:
        raise err


def torchvision_weights(model: str, weights: str) -> dict[str, Tensor]:
    """State dict of torchvision weights ``weights`` (e.g. ``R3D_18_Weights.KINETICS400_V1``) via torch.hub's cache."""
    from torchvision.models import get_weight

    try:
        w = get_weight(weights)
    except (ValueError, KeyError, AttributeError) as e:
        raise WeightsError(f"{model}: torchvision has no weights {weights!r} ({e})") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(w.url).path).name
    if not cached.is_file():
        err = _no_network(model, f"torchvision's weights {weights} ({w.url})", urlparse(w.url).hostname or "",
                          str(cached.parent))
        if err is not None:
            raise err
    return w.get_state_dict(progress=True, check_hash=True)
