"""3D CNNs on face-track clips (the Medics): torchvision's Kinetics nets, a narrow 3D ResNet, and an inflated I3D.

Every model eats ``(B, 3, T, H, W)`` normalised clips and returns one fake logit per clip.
The torchvision family (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``) keeps the
torchvision network under ``backbone`` with torchvision's own keys, so a Kinetics-400
state_dict (or torchvision's hub weights) loads with only the classifier left at init.
``i3d`` is Inception-v1 inflated to 3D after Carreira & Zisserman (2017); :func:`inflate_2d`
turns a 2D network into its 3D twin.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfdc.models.spec import DeepfakeModel, ModelOutput, ModelSpec
from dfdc.models.weights import WeightsError, torchvision_weights

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # torchvision's googlenet weights and pytorch-i3d's files expect [-1, 1] input
INCEPTION_STD = (0.5, 0.5, 0.5)

# registered name: (torchvision builder, torchvision weights, classifier module, default clip_len, least clip_len)
TORCHVISION_3D: dict[str, tuple[str, str, str, int, int]] = {
    "r3d_18": ("r3d_18", "R3D_18_Weights.KINETICS400_V1", "fc", 16, 1),
    "mc3_18": ("mc3_18", "MC3_18_Weights.KINETICS400_V1", "fc", 16, 1),
    "r2plus1d_18": ("r2plus1d_18", "R2Plus1D_18_Weights.KINETICS400_V1", "fc", 16, 1),
    "s3d": ("s3d", "S3D_Weights.KINETICS400_V1", "classifier", 16, 5),
}
I3D_MIN_CLIP = 3
MINI_WIDTHS = (16, 32, 64, 128)


def _no_drop_path(name: str, drop_path_rate: float) -> None:
    if drop_path_rate:
        raise ValueError(f"{name} has no stochastic depth; drop_path_rate must be 0, got {drop_path_rate}")


def _clip_spec(name: str, input_size: int, mean: tuple[float, ...], std: tuple[float, ...], clip_len: int,
               frame_stride: int, head: tuple[str, ...], least: int = 1) -> ModelSpec:
    if clip_len < least:
        raise ValueError(f"{name} needs clips of at least {least} frames (its pools stride time), "
                         f"got clip_len={clip_len}")
    return ModelSpec(input="clip", size=int(input_size), mean=tuple(mean), std=tuple(std), clip_len=int(clip_len),
                     frame_stride=int(frame_stride), head=head)


class VideoClassifier(DeepfakeModel):
    """A 3D CNN under ``backbone`` with one output: ``(B, 3, T, H, W)`` -> logits ``(B,)``.

    ``backbone`` is a torchvision video ResNet (``stem``, ``layer1..4``, ``avgpool``, ``fc``) or
    S3D (``features``, ``avgpool``, ``classifier`` = dropout + 1x1x1 conv); dropout at ``drop_rate``
    runs on the pooled features before the classifier.
    """

    def __init__(self, backbone: nn.Module, spec: ModelSpec, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.drop_rate = float(drop_rate)
        self._s3d = hasattr(backbone, "features")
        if self._s3d:
            backbone.classifier[0].p = self.drop_rate

    def forward(self, x: Tensor) -> ModelOutput:
        b = self.backbone
        if self._s3d:
            x = b.classifier(b.avgpool(b.features(x)))  # (B, 1, 1, 1, 1)
            return ModelOutput(x.flatten(1).squeeze(-1))
        x = b.layer4(b.layer3(b.layer2(b.layer1(b.stem(x)))))
        x = b.avgpool(x).flatten(1)  # (B, C)
        x = F.dropout(x, self.drop_rate, self.training)
        return ModelOutput(b.fc(x).squeeze(-1))

    def pretrained_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A torchvision state_dict's keys (optionally under ``backbone.``) -> this model's keys."""
        return {"backbone." + k.removeprefix("backbone."): v for k, v in state.items()}


def _load_classifier_free(net: nn.Module, state: dict[str, Tensor], head: str, name: str) -> None:
    """Load published weights into ``net`` except its classifier ``head``; every other key must fit."""
    state = {k: v for k, v in state.items() if not (k == head or k.startswith(head + "."))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        raise RuntimeError(f"{name}: published weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def torchvision_video(name: str, *, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                      hub: bool = False, clip_len: int | None = None, frame_stride: int = 1) -> VideoClassifier:
    """torchvision video net ``name`` of :data:`TORCHVISION_3D` with one output (Kinetics-400 weights when ``hub``)."""
    import torchvision.models.video as tvv

    arch, weights, head, default_len, least = TORCHVISION_3D[name]
    _no_drop_path(name, drop_path_rate)
    spec = _clip_spec(name, input_size, KINETICS_MEAN, KINETICS_STD, default_len if clip_len is None else clip_len,
                      frame_stride, (f"backbone.{head}",), least)
    net = getattr(tvv, arch)(weights=None, num_classes=1)
    if hub:
        _load_classifier_free(net, torchvision_weights(name, weights), head, name)
    if arch == "s3d":
        net.avgpool = nn.AdaptiveAvgPool3d(1)  # the published (2, 7, 7) kernel fits only 16+ frames at 224 px
    return VideoClassifier(net, spec, drop_rate)


class NarrowVideoResNet(nn.Module):
    """torchvision's R3D design (BasicBlock, Conv3DSimple, (3, 7, 7) stem) with free widths and depths."""

    def __init__(self, widths: tuple[int, int, int, int] = MINI_WIDTHS, layers: tuple[int, ...] = (1, 1, 1, 1)) -> None:
        super().__init__()
        from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

        self.stem = nn.Sequential(
            nn.Conv3d(3, widths[0], kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
        inplanes = widths[0]
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv3d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                     nn.BatchNorm3d(planes))
            stage = [BasicBlock(inplanes, planes, Conv3DSimple, stride, down)]
            stage += [BasicBlock(planes, planes, Conv3DSimple) for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(inplanes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


def r3d_mini(*, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0, hub: bool = False,
             clip_len: int = 8, frame_stride: int = 1) -> VideoClassifier:
    """r3d_mini: an R3D with widths (16, 32, 64, 128) and one block per stage, for CPU demos (no published weights)."""
    _no_drop_path("r3d_mini", drop_path_rate)
    if hub:
        raise WeightsError("r3d_mini: no published weights exist for this narrow R3D; set pretrained to a local "
                           "weights file or leave it empty (random init)")
    spec = _clip_spec("r3d_mini", input_size, KINETICS_MEAN, KINETICS_STD, clip_len, frame_stride, ("backbone.fc",))
    return VideoClassifier(NarrowVideoResNet(), spec, drop_rate)


class TimePaddedConv3d(nn.Conv3d):
    """Conv3d that pads time by repeating the edge frames (``time_pad`` = frames before, after) before convolving.

    Space is padded by the convolution itself, as in the 2D parent; time padding never adds zeros, so a clip
    of one frame repeated gives every frame the 2D parent's response.
    """

    def __init__(self, *args: Any, time_pad: tuple[int, int] = (0, 0), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.time_pad = tuple(time_pad)

    def forward(self, x: Tensor) -> Tensor:
        if any(self.time_pad):
            x = F.pad(x, (0, 0, 0, 0, *self.time_pad), mode="replicate")  # (B, C, T + pads, H, W)
        return super().forward(x)


TimeRule = Callable[[str, nn.Module], "tuple[int, int] | None"]


def _pair(v: Any) -> tuple[Any, Any]:
    return (v, v) if v is None or isinstance(v, int) else (v[0], v[1])


def _adaptive_3d(output_size: Any) -> tuple[int | None, Any, Any]:
    """A 2D adaptive pool's output size in 3D: global in space pools time to 1 too, else time is kept."""
    oh, ow = _pair(output_size)
    return (1 if (oh, ow) == (1, 1) else None, oh, ow)


def inflate_weight(w2d: Tensor, time_kernel: int) -> Tensor:
    """``(O, I, kh, kw)`` -> ``(O, I, kt, kh, kw)``: repeated over time, divided by ``kt`` (a still clip's response)."""
    return w2d.unsqueeze(2).repeat(1, 1, time_kernel, 1, 1) / time_kernel


def inflate_2d(module2d: nn.Module, *, time: Mapping[str, tuple[int, int]] | TimeRule | None = None) -> nn.Module:
    """A 3D copy of a 2D network (``module2d`` is left unchanged), following I3D's inflation.

    Conv2d -> :class:`TimePaddedConv3d`, weights repeated over time and divided by the temporal
    kernel; BatchNorm2d -> BatchNorm3d with the same affine weights and running statistics;
    MaxPool2d / AvgPool2d / AdaptiveAvgPool2d / AdaptiveMaxPool2d / Dropout2d -> their 3D forms.
    The temporal (kernel, stride) of a layer is ``time[name]`` when given (a dict by module name, or a
    function of name and module returning None for the default), else the spatial kernel with the spatial
    stride (a 1-wide kernel never strides time): 7x7/2 -> 7x7x7/2, 3x3 -> 3x3x3, 1x1 -> 1x1x1.
    Max pools pad time like space (their padding never wins a max); average pools do not pad time.
    The network's own ``forward`` must work on 5D tensors (channel concatenation, ``flatten(x, 1)`` do).
    Raises TypeError for subclasses of these layers and other 2D-only layers it cannot translate faithfully.
    """
    net = copy.deepcopy(module2d)
    rule: TimeRule
    if time is None:
        rule = lambda name, m: None
    elif isinstance(time, Mapping):
        rule = lambda name, m: time.get(name)
    else:
        rule = time
    if _is_2d_layer(net):
        return _inflate_layer(net, "", rule)
    _inflate_children(net, "", rule)
    return net


_LEAVES_2D = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
              nn.Dropout2d)


def _is_2d_layer(m: nn.Module) -> bool:
    if isinstance(m, _LEAVES_2D):
        if type(m) not in _LEAVES_2D:
            base = next(t for t in _LEAVES_2D if isinstance(m, t)).__name__
            raise TypeError(f"inflate_2d: {type(m).__qualname__} is a subclass of {base}; only the plain layer "
                            "inflates faithfully")
        return True
    if type(m).__name__.endswith("2d") and not any(True for _ in m.children()):
        raise TypeError(f"inflate_2d: no 3D form known for {type(m).__qualname__}")
    return False


def _inflate_children(parent: nn.Module, prefix: str, rule: TimeRule) -> None:
    for cname, child in parent.named_children():
        name = f"{prefix}{cname}"
        if _is_2d_layer(child):
            setattr(parent, cname, _inflate_layer(child, name, rule))
        else:
            _inflate_children(child, name + ".", rule)


def _time_of(m: nn.Module, name: str, rule: TimeRule, kernel: int, stride: int) -> tuple[int, int]:
    given = rule(name, m)
    if given is not None:
        kt, st = int(given[0]), int(given[1])
    else:
        kt, st = kernel, (stride if kernel > 1 else 1)
    if kt < 1 or st < 1:
        raise ValueError(f"inflate_2d: {name}: temporal kernel and stride must be >= 1, got {(kt, st)}")
    return kt, st


def _inflate_layer(m: nn.Module, name: str, rule: TimeRule) -> nn.Module:
    where = name or type(m).__name__
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            raise TypeError(f"inflate_2d: {where}: only integer zero padding inflates, got padding={m.padding!r}, "
                            f"padding_mode={m.padding_mode!r}")
        kt, st = _time_of(m, name, rule, m.kernel_size[0], m.stride[0])
        conv = TimePaddedConv3d(m.in_channels, m.out_channels, (kt, *m.kernel_size), stride=(st, *m.stride),
                                padding=(0, *m.padding), dilation=(1, *m.dilation), groups=m.groups,
                                bias=m.bias is not None, time_pad=((kt - 1) // 2, kt - 1 - (kt - 1) // 2),
                                device=m.weight.device, dtype=m.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(inflate_weight(m.weight, kt))
            if m.bias is not None:
                conv.bias.copy_(m.bias)
        return conv
    if isinstance(m, nn.BatchNorm2d):
        tensors = list(m.state_dict().values())
        bn = nn.BatchNorm3d(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                            track_running_stats=m.track_running_stats,
                            device=tensors[0].device if tensors else None, dtype=tensors[0].dtype if tensors else None)
        bn.load_state_dict(m.state_dict())
        return bn
    if isinstance(m, nn.MaxPool2d):
        (kh, kw), (sh, sw), (ph, pw), dil = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)
        if dil != (1, 1) or m.return_indices:
            raise TypeError(f"inflate_2d: {where}: dilated max pools and return_indices do not inflate")
        kt, st = _time_of(m, name, rule, kh, sh)
        pt = (kt - 1) // 2 if (ph or pw) else 0
        return nn.MaxPool3d((kt, kh, kw), stride=(st, sh, sw), padding=(pt, ph, pw), ceil_mode=m.ceil_mode)
    if isinstance(m, nn.AvgPool2d):
        (kh, kw), (sh, sw), (ph, pw) = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
        kt, st = _time_of(m, name, rule, kh, sh)
        return nn.AvgPool3d((kt, kh, kw), stride=(st, sh, sw), padding=(0, ph, pw), ceil_mode=m.ceil_mode,
                            count_include_pad=m.count_include_pad, divisor_override=m.divisor_override)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return nn.AdaptiveAvgPool3d(_adaptive_3d(m.output_size))
    if isinstance(m, nn.AdaptiveMaxPool2d):
        if m.return_indices:
            raise TypeError(f"inflate_2d: {where}: return_indices does not inflate")
        return nn.AdaptiveMaxPool3d(_adaptive_3d(m.output_size))
    if isinstance(m, nn.Dropout2d):
        return nn.Dropout3d(m.p, inplace=m.inplace)
    raise TypeError(f"inflate_2d: no 3D form known for {type(m).__qualname__} at {where}")


I3D_TIME = {"maxpool1": (1, 1), "maxpool2": (1, 1)}  # the first two pools keep every frame (paper, sec. 2.4)

# pytorch-i3d (piergiaj) module names -> torchvision googlenet's, block by block
_I3D_BLOCKS = {"Conv3d_1a_7x7": "conv1", "Conv3d_2b_1x1": "conv2", "Conv3d_2c_3x3": "conv3",
               "Mixed_3b": "inception3a", "Mixed_3c": "inception3b", "Mixed_4b": "inception4a",
               "Mixed_4c": "inception4b", "Mixed_4d": "inception4c", "Mixed_4e": "inception4d",
               "Mixed_4f": "inception4e", "Mixed_5b": "inception5a", "Mixed_5c": "inception5b"}
_I3D_BRANCHES = {"b0": "branch1", "b1a": "branch2.0", "b1b": "branch2.1", "b2a": "branch3.0", "b2b": "branch3.1",
                 "b3b": "branch4.1"}


def _googlenet_2d(drop_rate: float) -> nn.Module:
    from torchvision.models import googlenet

    return googlenet(weights=None, aux_logits=False, transform_input=False, init_weights=True, num_classes=1,
                     dropout=drop_rate)


class I3D(DeepfakeModel):
    """Inflated Inception-v1 (torchvision's googlenet layout under ``backbone``) with one output."""

    def __init__(self, backbone: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(self.backbone(x).squeeze(-1))  # (B, 1) -> (B,)

    def pretrained_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Keys of this model, of a 2D googlenet (inflated here) or of a pytorch-i3d file -> this model's keys.

        pytorch-i3d's Kinetics / ImageNet-inflated files (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b...``)
        have the same blocks and channels as the inflated googlenet; their TF "same" padding differs from this
        model's symmetric padding, so such weights want a short fine-tune. Auxiliary classifiers are dropped;
        batch-norm counters a file lacks start from this model's.
        """
        own = self.state_dict()
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            key = _from_pytorch_i3d(key.removeprefix("backbone."))
            if key.startswith(("aux1.", "aux2.")):
                continue
            key = "backbone." + key
            if key in own and own[key].dim() == 5 and value.dim() == 4:
                value = inflate_weight(value, own[key].shape[2])
            elif key == "backbone.fc.weight" and value.dim() == 5:  # pytorch-i3d's 1x1x1 logits conv
                value = value.flatten(1)
            out[key] = value
        for key, value in own.items():
            if key.endswith("num_batches_tracked") and key not in out:
                out[key] = value
        return out


def _from_pytorch_i3d(key: str) -> str:
    block, _, rest = key.partition(".")
    if block == "logits":
        return "fc." + rest.removeprefix("conv3d.")
    if block not in _I3D_BLOCKS:
        return key
    parts = rest.split(".")
    if parts[0] in _I3D_BRANCHES:
        parts[0] = _I3D_BRANCHES[parts[0]]
    parts = ["conv" if p == "conv3d" else p for p in parts]
    return ".".join([_I3D_BLOCKS[block], *parts])


def i3d_from_googlenet(net2d: nn.Module, spec: ModelSpec) -> I3D:
    """Inflate a torchvision googlenet (aux_logits and transform_input off) into an :class:`I3D` with ``spec``."""
    if getattr(net2d, "aux_logits", False) or getattr(net2d, "transform_input", False):
        raise ValueError("i3d: inflate a googlenet built with aux_logits=False and transform_input=False")
    return I3D(inflate_2d(net2d, time=I3D_TIME), spec)


def i3d(*, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0, hub: bool = False,
        clip_len: int = 16, frame_stride: int = 1) -> I3D:
    """i3d: Inception-v1 inflated to 3D, one output.

    ``hub`` loads torchvision's 2D ImageNet googlenet weights and inflates them (the paper's ImageNet
    initialisation); Kinetics I3D weights come as a local file (this model's keys or pytorch-i3d's).
    """
    _no_drop_path("i3d", drop_path_rate)
    spec = _clip_spec("i3d", input_size, INCEPTION_MEAN, INCEPTION_STD, clip_len, frame_stride, ("backbone.fc",),
                      I3D_MIN_CLIP)
    net2d = _googlenet_2d(drop_rate)
    if hub:
        state = {k: v for k, v in torchvision_weights("i3d", "GoogLeNet_Weights.IMAGENET1K_V1").items()
                 if not k.startswith(("aux1.", "aux2."))}
        _load_classifier_free(net2d, state, "fc", "i3d")
    return i3d_from_googlenet(net2d, spec)


def _torchvision_builder(name: str):
    default_len = TORCHVISION_3D[name][3]

    def build(*, input_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0, hub: bool = False,
              clip_len: int = default_len, frame_stride: int = 1) -> VideoClassifier:
        return torchvision_video(name, input_size=input_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                                 hub=hub, clip_len=clip_len, frame_stride=frame_stride)

    build.__doc__ = f"{name}: torchvision's {TORCHVISION_3D[name][0]} with one output (Kinetics-400 weights on hub)."
    return build


# the family's rows of the model registry (dfdc.models.registry collects them)
BUILDERS = {**{name: _torchvision_builder(name) for name in TORCHVISION_3D}, "r3d_mini": r3d_mini, "i3d": i3d}
