"""Foundation-model detectors: a CLIP ViT image tower, frozen, with one linear logit on its class token.

Four tuning modes, the mechanisms behind the strongest published cross-dataset results:

* ``ln`` (GenD's LN-tuning): the tower's LayerNorm weights and biases and the linear head train; every
  other tower tensor stays as pretrained.
* ``gend`` (GenD as released, "LN+L2"): ``ln`` with the head reading the L2-normalised class token
  (their ``LinearProbe(normalize_inputs=True)``), so features and logits live on the sphere the
  feature losses shape.
* ``probe`` (UnivFD): only the linear head trains, on the frozen tower's features.
* ``effort`` (Effort, ICML 2025): every attention projection is split by SVD into a frozen principal
  part and a trainable rank-1 residual (:mod:`dfdc.models.svd_residual`); the residual factors and the
  head train. Its two losses, ``orthogonality`` and ``singular_values``, are off unless the model entry's
  ``losses`` weighs them: the authors' released configurations train with both off.

Under ``ln`` and ``effort`` the entry's ``losses`` may also weigh GenD's feature losses on the
L2-normalised class-token features (:mod:`dfdc.models.losses`), over the global batch under DDP:
``uniformity`` (GenD: 0.5) and label-aware ``alignment`` (GenD: 0.1). Under ``ln`` and ``effort`` the head
reads the features as they are (only the losses see them normalised); under ``gend`` it reads them
normalised too.

Everything outside those sets has ``requires_grad`` False from construction, and
:meth:`ClipDetector.param_groups` hands the optimizer only what trains. The tower always runs in
eval mode, so a frozen or LayerNorm-tuned tower computes the features it was pretrained to; the
model's ``drop_rate`` is a dropout on the feature, before the head.

The towers are timm's CLIP image towers with QuickGELU, the activation OpenAI trained them with
(timm's ``vit_*_clip_quickgelu_224.openai``; the same published weights as ``vit_*_clip_224.openai``).
The head reads the class token after the tower's final LayerNorm (1024-d for ViT-L/14, 768-d for
ViT-B/16), before CLIP's projection to the joint embedding: a linear probe on the projected
embedding, as UnivFD trains it, is one of the probes on this feature. The ``clip_vit_tiny_*`` rows
are a small CLIP-style tower from random init, with no published weights: they exercise the code
(tests, the demo), not the quality.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from dfdc.models.losses import alignment, gather_batch, uniformity
from dfdc.models.spec import DeepfakeModel, ModelOutput, ModelSpec
from dfdc.models.svd_residual import decompose_attention, decomposed_state
from dfdc.models.weights import WeightsError, timm_hub_check

HEAD = "head"
MODES = ("ln", "probe", "effort", "gend")
EFFORT_RANK = 1  # the residual's rank: r = width - 1 principal components stay frozen, as in the paper
EFFORT_LOSSES = ("orthogonality", "singular_values")  # SVDResidualLinear's methods, weighed by `losses`
FEATURE_LOSSES = ("uniformity", "alignment")  # GenD's, on the L2-normalised features (GenD weighs 0.5, 0.1)


def mode_losses(mode: str) -> tuple[str, ...]:
    """The optional loss terms of a tuning mode: none for the probe (its features never change)."""
    return {"ln": FEATURE_LOSSES, "gend": FEATURE_LOSSES, "effort": EFFORT_LOSSES + FEATURE_LOSSES}.get(mode, ())
TINY = "tiny"

# tower: (timm architecture with published weights, or TINY: random init only; patch size)
TOWERS: dict[str, tuple[str, int]] = {
    "vit_l14": ("vit_large_patch14_clip_quickgelu_224.openai", 14),  # the GenD / UnivFD / Effort backbone
    "vit_b16": ("vit_base_patch16_clip_quickgelu_224.openai", 16),
    "vit_tiny": (TINY, 16),
}
# timm's CLIP image-tower arguments (vit_base_patch16_clip_quickgelu_224) at ViT-Tiny width and depth 4
TINY_TOWER: dict[str, Any] = {"embed_dim": 192, "depth": 4, "num_heads": 3, "pre_norm": True,
                              "act_layer": "quick_gelu"}

# registered name: (tower, tuning mode)
CLIP_DETECTORS: dict[str, tuple[str, str]] = {
    "clip_vit_l14_ln": ("vit_l14", "ln"),  # GenD
    "clip_vit_l14_probe": ("vit_l14", "probe"),  # UnivFD
    "clip_vit_b16_ln": ("vit_b16", "ln"),
    "clip_vit_b16_probe": ("vit_b16", "probe"),
    "clip_vit_tiny_ln": ("vit_tiny", "ln"),
    "clip_vit_tiny_probe": ("vit_tiny", "probe"),
    "clip_vit_l14_effort": ("vit_l14", "effort"),  # Effort
    "clip_vit_b16_effort": ("vit_b16", "effort"),
    "clip_vit_tiny_effort": ("vit_tiny", "effort"),
    "clip_vit_l14_gend": ("vit_l14", "gend"),  # GenD as released (LN + L2-normalised head)
    "clip_vit_b16_gend": ("vit_b16", "gend"),
    "clip_vit_tiny_gend": ("vit_tiny", "gend"),
}


class ClipDetector(DeepfakeModel):
    """A CLIP ViT image tower (``backbone``, timm layout) and a linear ``head``: ``(B, 3, H, W)`` -> logits ``(B,)``.

    ``mode`` ``ln`` trains the tower's LayerNorms and the head, ``probe`` the head alone, ``effort`` the
    residual factors of the decomposed attention projections and the head. An input
    whose side is not a multiple of the patch size is zero-padded on the right and bottom to the
    tower's image size (the next multiple).
    """

    def __init__(self, backbone: nn.Module, spec: ModelSpec, mode: str, drop_rate: float = 0.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"tuning mode must be one of {MODES}, got {mode!r}")
        self.backbone = backbone
        self.spec = spec
        self.mode = mode
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(int(backbone.num_features), 1)
        for p in backbone.parameters():
            p.requires_grad_(False)
        if mode in ("ln", "gend"):
            for p in layer_norm_parameters(backbone):
                p.requires_grad_(True)
        self.decomposed = decompose_attention(backbone, EFFORT_RANK) if mode == "effort" else []
        self.train()

    def features(self, x: Tensor) -> Tensor:
        """The tower's class-token feature ``(B, D)`` of a normalised ``(B, 3, H, W)`` input."""
        side = self.backbone.patch_embed.img_size
        pad_h, pad_w = max(0, side[0] - x.shape[-2]), max(0, side[1] - x.shape[-1])
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.backbone(x)

    def forward(self, x: Tensor) -> ModelOutput:
        features = self.features(x)
        seen = F.normalize(features, dim=-1) if self.mode == "gend" else features
        return ModelOutput(self.head(self.drop(seen)).squeeze(-1), {"features": features})  # (B, 1) -> (B,)

    @property
    def LOSSES(self) -> tuple[str, ...]:  # noqa: N802 - the class-level name of DeepfakeModel
        return mode_losses(self.mode)

    def loss_terms(self, out: ModelOutput, batch: Any) -> dict[str, Tensor]:
        """The weighted optional losses: Effort's summed over the decomposed layers, GenD's over the features
        of the global batch (every rank's, gathered)."""
        terms: dict[str, Tensor] = {}
        weights = {k: w for k, w in self.loss_weights.items() if w > 0}
        if set(weights) & set(FEATURE_LOSSES):
            z, y = gather_batch(F.normalize(out.aux["features"].float(), dim=-1), batch.y)
        for name, weight in weights.items():
            if name in EFFORT_LOSSES:
                total = sum(getattr(layer, name)() for layer in self.decomposed)
            else:
                total = uniformity(z) if name == "uniformity" else alignment(z, y)
            terms[name] = (weight * total).float()
        return terms

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0) -> list[dict]:
        """Optimizer groups of the parameters that train, and of those only.

        The head at ``lr`` and ``weight_decay``; under ``ln`` the tower's LayerNorms at
        ``lr * backbone_lr_scale`` without weight decay (decay would pull their gains towards 0,
        not towards the pretrained values). ``backbone_lr_scale`` 0 freezes the LayerNorms too:
        the head alone trains, as in ``probe``.
        """
        tower = [p for n, p in self.named_parameters() if p.requires_grad and not self.spec.is_head(n)]
        head = [p for n, p in self.named_parameters() if p.requires_grad and self.spec.is_head(n)]
        if backbone_lr_scale == 0:
            for p in tower:
                p.requires_grad_(False)
            tower = []
        groups = [{"params": tower, "lr": lr * backbone_lr_scale, "weight_decay": 0.0, "name": "backbone"},
                  {"params": head, "lr": lr, "weight_decay": weight_decay, "name": "head"}]
        return [g for g in groups if g["params"]]

    def train(self, mode: bool = True) -> ClipDetector:
        """As nn.Module.train, but the tower stays in eval mode (its dropout and stochastic depth off)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def pretrained_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A CLIP image tower's weights -> this model's keys.

        Accepted: timm's VisionTransformer layout (the keys of timm's ``vit_*_clip_*`` models, as
        timm and open_clip's timm conversions save them), and what timm's own checkpoint filter
        converts (OpenAI CLIP / open_clip ``visual.*``). The position embedding is resampled to this
        tower's patch grid. A file whose keys sit under ``backbone.`` (a dfdc checkpoint of this
        model) keeps its other keys (its ``head.*``); in a bare tower file, ``head.*`` is the tower's
        own classifier or CLIP projection and is dropped.
        """
        from timm.models.vision_transformer import checkpoint_filter_fn

        prefix = "backbone."
        if any(k.startswith(prefix) for k in state):
            tower = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
        else:
            tower, rest = state, {}
        tower = checkpoint_filter_fn(tower, self.backbone)
        if self.mode == "effort":
            tower = decomposed_state(tower, self.backbone, EFFORT_RANK)
        return {**{prefix + k: v for k, v in tower.items() if not _is_tower_head(k)}, **rest}


def _is_tower_head(key: str) -> bool:
    return key == HEAD or key.startswith(HEAD + ".")


def layer_norm_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Weights and biases of every LayerNorm in ``module``."""
    return [p for m in module.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)]


def tower_size(input_size: int, patch_size: int) -> int:
    """The tower's image side: ``input_size`` rounded up to a multiple of ``patch_size``."""
    return patch_size * math.ceil(input_size / patch_size)


def clip_detector(tower: str, mode: str, *, input_size: int = 224, drop_rate: float = 0.0,
                  drop_path_rate: float = 0.0, hub: bool = False, name: str = "") -> ClipDetector:
    """Build CLIP tower ``tower`` (published weights when ``hub``) with tuning ``mode`` and its frame spec."""
    import timm
    from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from timm.layers import LayerNorm
    from timm.models.vision_transformer import VisionTransformer

    arch, patch = TOWERS[tower]
    size = tower_size(input_size, patch)
    name = name or f"clip_{tower}_{mode}"
    if drop_path_rate:
        raise ValueError(f"{name}: the CLIP tower runs in eval mode (no stochastic depth); drop_path_rate must "
                         f"be 0, got {drop_path_rate}")
    if arch == TINY:
        if hub:
            raise WeightsError(f"{name}: no weights are published for its random-init tiny CLIP tower; set "
                               "pretrained to a local weights file or leave it empty (random init)")
        backbone = VisionTransformer(img_size=size, patch_size=patch, num_classes=0,
                                     norm_layer=partial(LayerNorm, eps=1e-5), **TINY_TOWER)
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    else:
        if hub:
            timm_hub_check(name, arch)
        backbone = timm.create_model(arch, pretrained=hub, num_classes=0, img_size=size)
        mean, std = backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"]
    spec = ModelSpec(input="frame", size=int(input_size), mean=tuple(float(v) for v in mean),
                     std=tuple(float(v) for v in std), head=(HEAD,))
    return ClipDetector(backbone, spec, mode, drop_rate=drop_rate)


def _builder(name: str, tower: str, mode: str):
    def build(*, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
              hub: bool = False) -> ClipDetector:
        return clip_detector(tower, mode, input_size=input_size, drop_rate=drop_rate,
                             drop_path_rate=drop_path_rate, hub=hub, name=name)

    trains = {"ln": "its LayerNorms and a linear head", "probe": "a linear head alone",
              "gend": "its LayerNorms and a linear head on the L2-normalised class token",
              "effort": "the rank-1 SVD residuals of its attention projections and a linear head"}[mode]
    build.__doc__ = f"{name}: CLIP tower {TOWERS[tower][0]}, frozen but for {trains}."
    build.losses = mode_losses(mode)
    return build


# the family's rows of the model registry (dfdc.models.registry collects them)
BUILDERS = {name: _builder(name, tower, mode) for name, (tower, mode) in CLIP_DETECTORS.items()}
