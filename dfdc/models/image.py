"""2D frame classifiers on timm backbones: one table row per variant."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from dfdc.models.spec import DeepfakeModel, ModelOutput, ModelSpec
from dfdc.models.weights import timm_hub_check

# registered name: (timm architecture, has stochastic depth)
TIMM_2D: dict[str, tuple[str, bool]] = {
    **{f"efficientnet_b{i}": (f"efficientnet_b{i}", True) for i in range(8)},
    "tf_efficientnet_b7_ns": ("tf_efficientnet_b7.ns_jft_in1k", True),  # the DFDC 1st-place encoder (Noisy Student)
    "xception": ("legacy_xception", False),  # the Keras/Cadene Xception of FaceForensics++
    "seresnext50_32x4d": ("seresnext50_32x4d", True),
    "resnet18": ("resnet18", True),
    "mobilenetv3_small_100": ("mobilenetv3_small_100", True),
    "efficientnet_lite0": ("efficientnet_lite0", True),
    "regnetx_002": ("regnetx_002", True),  # RegNetX-200MF: trains well from random init on a CPU
}


class TimmClassifier(DeepfakeModel):
    """A timm backbone with one output unit: ``(B, 3, H, W)`` -> logits ``(B,)``."""

    def __init__(self, backbone: Any, spec: ModelSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(self.backbone(x).squeeze(-1))  # (B, 1) -> (B,)

    def pretrained_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A timm checkpoint's keys (optionally under ``backbone.``) -> this model's keys."""
        return {"backbone." + k.removeprefix("backbone."): v for k, v in state.items()}


def timm_classifier(arch: str, *, has_drop_path: bool = True, input_size: int = 224, drop_rate: float = 0.0,
                    drop_path_rate: float = 0.0, hub: bool = False, name: str = "") -> TimmClassifier:
    """Build timm ``arch`` with one output (published weights when ``hub``) and its frame spec."""
    import timm

    if drop_path_rate and not has_drop_path:
        raise ValueError(f"{arch} has no stochastic depth; drop_path_rate must be 0, got {drop_path_rate}")
    kw: dict[str, Any] = {"drop_path_rate": drop_path_rate} if has_drop_path else {}
    if hub:
        timm_hub_check(name or arch, arch)
    backbone = timm.create_model(arch, pretrained=hub, num_classes=1, drop_rate=drop_rate, **kw)
    cfg = backbone.pretrained_cfg
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    spec = ModelSpec(input="frame", size=int(input_size), mean=tuple(float(v) for v in cfg["mean"]),
                     std=tuple(float(v) for v in cfg["std"]), head=tuple(f"backbone.{h}" for h in heads))
    return TimmClassifier(backbone, spec)


def _builder(name: str, arch: str, has_drop_path: bool):
    def build(**kw: Any) -> TimmClassifier:
        return timm_classifier(arch, has_drop_path=has_drop_path, name=name, **kw)

    build.__doc__ = f"{name}: timm's {arch} with one output."
    return build


# the family's rows of the model registry (dfdc.models.registry collects them)
BUILDERS = {name: _builder(name, arch, drop_path) for name, (arch, drop_path) in TIMM_2D.items()}
