"""Sequence models on face-track clips: NTech's (3rd place) temporal EfficientNet, and the 15th place's frame
backbone + LSTM.

Both run the clip's frames through a 2D timm backbone as one ``(B*T, 3, H, W)`` batch whose keys are
those of the 2D :class:`~dfdc.models.image.TimmClassifier` of the same timm architecture
(``backbone.*``), so ImageNet weights or a trained frame model's checkpoint load into them.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfdc.models.image import TIMM_2D
from dfdc.models.spec import DeepfakeModel, ModelOutput, ModelSpec
from dfdc.models.weights import timm_hub_check

log = logging.getLogger(__name__)

TEMPORAL = "temporal"  # NTech's temporal convolutions live under this prefix

# registered name: (timm architecture, has stochastic depth); NTech used the Noisy Student B7
NTECH: dict[str, tuple[str, bool]] = {
    "ntech_efficientnet_b0": ("efficientnet_b0", True),
    "ntech_tf_efficientnet_b7_ns": ("tf_efficientnet_b7.ns_jft_in1k", True),
}
LSTM_BACKBONES = ("resnet18", "regnetx_002", "mobilenetv3_small_100", "efficientnet_b0", "efficientnet_b6",
                  "tf_efficientnet_b7_ns")  # the 15th place: B6
LSTM_HEAD = ("lstm", "logit")  # names no timm model uses at its top level
HEAD_PREFIXES = tuple(h + "." for h in LSTM_HEAD)


def _classifier_prefixes(cfg: dict[str, Any]) -> tuple[str, ...]:
    heads = cfg.get("classifier") or ()
    return (heads,) if isinstance(heads, str) else tuple(heads)


def _timm_backbone(name: str, arch: str, has_drop_path: bool, *, num_classes: int, drop_rate: float,
                   drop_path_rate: float, hub: bool) -> nn.Module:
    import timm

    if drop_path_rate and not has_drop_path:
        raise ValueError(f"{arch} has no stochastic depth; drop_path_rate must be 0, got {drop_path_rate}")
    kw: dict[str, Any] = {"drop_path_rate": drop_path_rate} if has_drop_path else {}
    if hub:
        timm_hub_check(name, arch)
    return timm.create_model(arch, pretrained=hub, num_classes=num_classes, drop_rate=drop_rate, **kw)


def _pooled_features(net: nn.Module) -> int:
    """Width of a timm model's pooled output with ``num_classes=0`` (MobileNetV3 has a head conv past its
    ``num_features``)."""
    return int(getattr(net, "head_hidden_size", None) or net.num_features)


class TemporalConv(nn.Module):
    """Residual temporal convolution over frames: ``x + conv_(3,1,1)(x)``, the conv initialised to zero.

    Eats and returns a ``(B*T, C, H, W)`` frame batch; time is padded by repeating the edge frames.
    ``depthwise`` gives one temporal filter per channel instead of the full ``C -> C`` mixing.
    """

    def __init__(self, channels: int, kernel: int = 3, depthwise: bool = False) -> None:
        super().__init__()
        self.pad = ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)
        self.conv = nn.Conv3d(channels, channels, (kernel, 1, 1), groups=channels if depthwise else 1, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bt, c, h, w = x.shape
        y = x.reshape(bt // frames, frames, c, h, w).transpose(1, 2)  # (B, C, T, H, W)
        y = self.conv(F.pad(y, (0, 0, 0, 0, *self.pad), mode="replicate"))
        return x + y.transpose(1, 2).reshape(bt, c, h, w)


class NTechSequence(DeepfakeModel):
    """A timm EfficientNet with a residual temporal convolution after every block (``blocks[i][j]``).

    Frames run as one ``(B*T)`` 2D batch; after each block, :class:`TemporalConv` ``temporal.<k>`` mixes
    neighbouring frames. The features are averaged over T, H and W and the 2D classifier gives one logit.
    With the temporal convs at their zero init the model is the 2D classifier averaged over frames, so the
    2D weights work unchanged. NTech's code inflated each block's 1x1 expansion conv into a full
    (3, 1, 1) conv instead; the residual form keeps the 2D keys and the 2D model's output exactly.
    """

    def __init__(self, backbone: nn.Module, spec: ModelSpec, depthwise: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.temporal = nn.ModuleList(TemporalConv(c, depthwise=depthwise) for c in _block_channels(backbone))

    def forward(self, x: Tensor) -> ModelOutput:
        b, c, t, h, w = x.shape
        net = self.backbone
        x = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, 3, H, W)
        x = net.bn1(net.conv_stem(x))
        k = 0
        for stage in net.blocks:
            for block in stage:
                x = self.temporal[k](block(x), t)
                k += 1
        x = net.bn2(net.conv_head(x))
        x = net.global_pool(x).view(b, t, -1).mean(1)  # (B, C): mean over T, H, W
        x = F.dropout(x, net.drop_rate, self.training)
        return ModelOutput(net.classifier(x).squeeze(-1))

    def pretrained_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """timm / 2D-model keys -> this model's; a 2D file (no ``temporal.*``) leaves the temporal convs at init."""
        out = {k if k.startswith(TEMPORAL + ".") else "backbone." + k.removeprefix("backbone."): v
               for k, v in state.items()}
        return out if _has_temporal(out) else {**self._own_temporal(), **out}

    def load_backbone(self, state: dict[str, Tensor], source: str) -> int:
        """Copy another model's backbone; the temporal convs come from ``state`` when it has any.

        A 2D model's weights (no ``temporal.*`` keys) fill every ``backbone.*`` tensor and leave the
        temporal convs as they are (zero at init: the 2D model's behaviour); another NTech model's weights
        must hold all of them. Every ``backbone.*`` tensor must be in ``state``, as in the base class.
        Returns the number of tensors copied from ``state``.
        """
        if _has_temporal(state):
            return super().load_backbone(state, source)
        own = self._own_temporal()
        log.info("%s: no temporal convolutions; %d kept as they are", source, len(own))
        return super().load_backbone({**state, **own}, source) - len(own)

    def _own_temporal(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(TEMPORAL + ".")}


def _has_temporal(state: dict[str, Tensor]) -> bool:
    return any(k.startswith(TEMPORAL + ".") for k in state)


def _block_channels(backbone: nn.Module) -> list[int]:
    """Output channels of every block of a timm EfficientNet, by one small forward in eval mode."""
    if not all(hasattr(backbone, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise TypeError(f"NTech's temporal blocks need a timm EfficientNet, got {type(backbone).__name__}")
    channels, was = [], backbone.training
    backbone.eval()
    with torch.no_grad():
        x = backbone.bn1(backbone.conv_stem(torch.zeros(1, 3, 32, 32)))
        for stage in backbone.blocks:
            for block in stage:
                x = block(x)
                channels.append(x.shape[1])
    backbone.train(was)
    return channels


def ntech(name: str, *, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
          hub: bool = False, clip_len: int = 7, frame_stride: int = 2, depthwise: bool = False) -> NTechSequence:
    """NTech's sequence model ``name`` of :data:`NTECH` (ImageNet weights for the 2D part when ``hub``).

    Defaults follow NTech: 7 frames 1/15 s apart (every 2nd frame at 30 fps), full (3, 1, 1) convs.
    """
    arch, has_drop_path = NTECH[name]
    net = _timm_backbone(name, arch, has_drop_path, num_classes=1, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate, hub=hub)
    cfg = net.pretrained_cfg
    spec = ModelSpec(input="clip", size=int(input_size), mean=tuple(float(v) for v in cfg["mean"]),
                     std=tuple(float(v) for v in cfg["std"]), clip_len=int(clip_len), frame_stride=int(frame_stride),
                     head=tuple(f"backbone.{h}" for h in _classifier_prefixes(cfg)))
    return NTechSequence(net, spec, depthwise=depthwise)


class FrameLSTM(DeepfakeModel):
    """A frame backbone (timm, ``num_classes=0``) -> per-frame features -> LSTM -> linear: one logit per clip.

    ``backbone`` has the keys of the 2D classifier's backbone without its classifier, so a trained frame
    model's weights load with :meth:`load_backbone`; ``lstm`` and ``logit`` (a linear layer) are the head, so
    ``backbone_lr_scale: 0`` trains exactly them (the 15th place). The clip's logit reads the last layer's final
    states of both directions; features get dropout at ``drop_rate`` before the LSTM.
    """

    def __init__(self, backbone: nn.Module, spec: ModelSpec, *, hidden_size: int = 512, num_layers: int = 2,
                 bidirectional: bool = True, drop_rate: float = 0.0, classifier: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.drop_rate = float(drop_rate)
        self.lstm = nn.LSTM(_pooled_features(backbone), hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=self.drop_rate if num_layers > 1 else 0.0)
        self.logit = nn.Linear(hidden_size * (2 if bidirectional else 1), 1)
        self._classifier = tuple(f"backbone.{h}" for h in classifier)

    def forward(self, x: Tensor) -> ModelOutput:
        b, c, t, h, w = x.shape
        feats = self.backbone(x.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, -1)  # (B, T, F)
        feats = F.dropout(feats, self.drop_rate, self.training)
        _, (h_n, _) = self.lstm(feats)  # h_n: (layers * directions, B, hidden)
        last = h_n[-2:] if self.lstm.bidirectional else h_n[-1:]
        return ModelOutput(self.logit(last.transpose(0, 1).flatten(1)).squeeze(-1))

    def pretrained_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """timm / 2D-model keys -> this model's; the 2D classifier's tensors (``fc``, ``classifier``...) are dropped."""
        out = {}
        for k, v in state.items():
            if not k.startswith(HEAD_PREFIXES):
                k = "backbone." + k.removeprefix("backbone.")
            if not any(k == h or k.startswith(h + ".") for h in self._classifier):
                out[k] = v
        return out


def frame_lstm(backbone_name: str, *, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
               hub: bool = False, clip_len: int = 5, frame_stride: int = 1, hidden_size: int = 512,
               num_layers: int = 2, bidirectional: bool = True) -> FrameLSTM:
    """``lstm_<backbone_name>``: a 2D backbone of :data:`~dfdc.models.image.TIMM_2D` under an LSTM head.

    Defaults follow the 15th place's code: 5 consecutive frames, a 2-layer bidirectional LSTM of 512 units.
    """
    arch, has_drop_path = TIMM_2D[backbone_name]
    net = _timm_backbone(f"lstm_{backbone_name}", arch, has_drop_path, num_classes=0, drop_rate=0.0,
                         drop_path_rate=drop_path_rate, hub=hub)
    cfg = net.pretrained_cfg
    spec = ModelSpec(input="clip", size=int(input_size), mean=tuple(float(v) for v in cfg["mean"]),
                     std=tuple(float(v) for v in cfg["std"]), clip_len=int(clip_len), frame_stride=int(frame_stride),
                     head=LSTM_HEAD)
    return FrameLSTM(net, spec, hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                     drop_rate=drop_rate, classifier=_classifier_prefixes(cfg))


def _ntech_builder(name: str):
    def build(*, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0, hub: bool = False,
              clip_len: int = 7, frame_stride: int = 2) -> NTechSequence:
        return ntech(name, input_size=input_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate, hub=hub,
                     clip_len=clip_len, frame_stride=frame_stride)

    build.__doc__ = f"{name}: timm's {NTECH[name][0]} with a temporal conv after every block (NTech, 3rd place)."
    return build


def _lstm_builder(backbone_name: str):
    def build(*, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0, hub: bool = False,
              clip_len: int = 5, frame_stride: int = 1) -> FrameLSTM:
        return frame_lstm(backbone_name, input_size=input_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                          hub=hub, clip_len=clip_len, frame_stride=frame_stride)

    build.__doc__ = f"lstm_{backbone_name}: {backbone_name}'s features per frame -> LSTM -> one logit (the 15th place)."
    return build


# the family's rows of the model registry (dfdc.models.registry collects them)
BUILDERS = {**{name: _ntech_builder(name) for name in NTECH},
            **{f"lstm_{backbone}": _lstm_builder(backbone) for backbone in LSTM_BACKBONES}}
