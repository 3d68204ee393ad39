"""WS-DAN, the attention model of the DFDC 4th place (\\WM/): attention maps guide crops and drops of the face.

Hu et al., "See Better Before Looking Closer: Weakly Supervised Data Augmentation Network for Fine-Grained
Visual Classification" (arXiv:1901.09891), adapted to one fake logit. A timm backbone's last feature map
``(B, C, h, w)`` gives ``M`` attention maps (1x1 conv, batch norm, ReLU); bilinear attention pooling turns
maps and features into a part-feature matrix ``(B, M, C)`` (signed square root, L2-normalised as one
``M*C`` vector) and a linear layer reads one logit from it. In training, one attention map per image
(drawn in proportion to its mass) crops the image to its region and another drops (zeroes) its region; both
views go through the network again and get a BCE of their own, and a centre loss pulls each image's
features to the centre of its class (real or fake). At evaluation, the mean attention map crops the image
and the prediction averages the probabilities of the whole image and its crop.

\\WM/'s adaptations: 8 attention maps (the paper: 32), dropout of whole attention parts on the feature
matrix the classifier reads (attention heads that settle on the image's edge carry nothing and would make
attention dropping useless), and feature centres multiplied by 2 after each epoch (:meth:`WSDAN.scale_centres`)
so that they settle. The defaults of :class:`WSDAN` are those of the 4th place's code (its ``wsdan-conf``
and ``train-wsdan.py``): drop thresholds in [0.4, 0.7], crop thresholds in [0.4, 0.6] with 10% padding,
centre update rate 0.05, crop and drop losses weighted 1/3 and 1/2, an evaluation crop at 0.1 of the mean
map's peak with 5% padding.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfdc.models.image import TIMM_2D
from dfdc.models.losses import split_bce
from dfdc.models.spec import DeepfakeModel, ModelOutput, ModelSpec
from dfdc.models.weights import timm_hub_check

WSDAN_BACKBONES = ("xception", "efficientnet_b3", "resnet18")  # rows of TIMM_2D; \WM/: Xception and B3
HEAD = ("attention", "logit", "centres")  # names no timm model uses at its top level
HEAD_PREFIXES = tuple(h + "." for h in HEAD)
EPS = 1e-12  # under the signed square root

Range = tuple[float, float]


def bilinear_attention_pooling(features: Tensor, attention: Tensor) -> Tensor:
    """Feature maps ``(B, C, h, w)`` and attention maps ``(B, M, h, w)`` -> part features ``(B, M, C)``.

    Part ``m`` is the mean over positions of the features weighted by attention map ``m``.
    """
    h, w = features.shape[-2:]
    return torch.einsum("bmhw,bchw->bmc", attention, features) / (h * w)


def signed_sqrt_l2(parts: Tensor) -> Tensor:
    """Part features ``(B, M, C)`` -> ``(B, M*C)``: ``sign(x) * sqrt(|x|)``, then unit L2 norm per image."""
    x = parts.flatten(1)
    return F.normalize(torch.sign(x) * torch.sqrt(x.abs() + EPS), dim=-1)


def drop_parts(parts: Tensor, rate: float) -> Tensor:
    """Zero each image's attention parts (rows of ``(B, M, C)``) independently with probability ``rate``.

    The features are L2-normalised afterwards, so the kept parts need no rescaling.
    """
    if rate <= 0:
        return parts
    keep = torch.rand(parts.shape[0], parts.shape[1], 1, device=parts.device) >= rate
    return parts * keep.to(parts.dtype)


def pick_maps(attention: Tensor, count: int = 2) -> Tensor:
    """Per image, ``count`` attention-map indices ``(B, count)`` drawn (with replacement) in proportion to the
    square root of each map's mass, from torch's global RNG."""
    weights = torch.sqrt(attention.detach().float().sum((2, 3)).clamp_min(0) + EPS)  # (B, M)
    return torch.multinomial(weights, count, replacement=True)


def _normalised_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Maps ``(B, h, w)`` or ``(B, 1, h, w)`` divided by each one's peak (0 where it has none) and resized
    bilinearly to ``size``: ``(B, H, W)`` in [0, 1]."""
    b, h, w = maps.shape[0], maps.shape[-2], maps.shape[-1]
    maps = maps.detach().float().reshape(b, 1, h, w)
    peak = maps.amax((2, 3), keepdim=True)
    maps = torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]


def _per_image(theta: float | Tensor, b: int, device: torch.device) -> Tensor:
    return torch.as_tensor(theta, dtype=torch.float32, device=device).expand(b).reshape(b, 1, 1)


def uniform(bounds: Range, b: int, device: torch.device) -> Tensor:
    """``b`` thresholds drawn uniformly in ``bounds`` from torch's global RNG."""
    lo, hi = bounds
    return torch.rand(b, device=device) * (hi - lo) + lo


def crop_boxes(mask: Tensor, padding: float = 0.0) -> Tensor:
    """Bounding boxes ``(B, 4)`` as ``top, bottom, left, right`` (bottom and right exclusive) of each mask
    ``(B, H, W)``, widened by ``padding`` of the image's height and width; the whole image for an empty mask."""
    height, width = mask.shape[1:]
    rows, cols = mask.any(2).int(), mask.any(1).int()
    top, left = rows.argmax(1), cols.argmax(1)
    bottom, right = height - rows.flip(1).argmax(1), width - cols.flip(1).argmax(1)
    pad_h, pad_w = round(padding * height), round(padding * width)
    boxes = torch.stack([(top - pad_h).clamp_min(0), (bottom + pad_h).clamp_max(height),
                         (left - pad_w).clamp_min(0), (right + pad_w).clamp_max(width)], 1)
    whole = torch.tensor([0, height, 0, width], device=mask.device)
    return torch.where(rows.any(1, keepdim=True).bool(), boxes, whole)


def attention_crop(images: Tensor, maps: Tensor, theta: float | Tensor, padding: float = 0.0) -> Tensor:
    """Each image ``(B, 3, H, W)`` cropped to the box where its map (``(B, h, w)``, resized to the image,
    over its peak) exceeds ``theta`` (a float or one per image), padded by ``padding`` of the image size,
    and resized back to ``(H, W)`` bilinearly. An image whose map exceeds ``theta`` nowhere stays whole."""
    b, _, height, width = images.shape
    mask = _normalised_maps(maps, (height, width)) > _per_image(theta, b, images.device)
    boxes = crop_boxes(mask, padding).tolist()
    crops = [F.interpolate(images[i:i + 1, :, t:bt, lf:rt], size=(height, width), mode="bilinear",
                           align_corners=False) for i, (t, bt, lf, rt) in enumerate(boxes)]
    return torch.cat(crops)


def attention_drop(images: Tensor, maps: Tensor, theta: float | Tensor) -> Tensor:
    """Images ``(B, 3, H, W)`` zeroed where their map (``(B, h, w)``, resized to the image, over its peak)
    exceeds ``theta`` (a float or one per image); unchanged elsewhere."""
    b, _, height, width = images.shape
    keep = _normalised_maps(maps, (height, width)) <= _per_image(theta, b, images.device)
    return images * keep.unsqueeze(1).to(images.dtype)


def centre_loss(features: Tensor, centres: Tensor, fake: Tensor) -> Tensor:
    """Mean over images of the squared distance between features ``(B, D)`` and the unit-norm centre
    (``centres`` ``(2, D)``: real, fake) of each image's class (``fake`` ``(B,)`` bool)."""
    target = F.normalize(centres, dim=-1)[fake.long()]
    return (features.float() - target).pow(2).sum(1).mean()


@torch.no_grad()
def update_centres(centres: Tensor, features: Tensor, fake: Tensor, beta: float) -> None:
    """Move each class's centre in place: ``centre += beta * (mean feature of the class - centre / |centre|)``.

    As in WS-DAN's code the step is taken towards the unit-norm centre, so a centre's direction moves by
    about ``beta / |centre|``: scaling the centres up (\\WM/: by 2 after each epoch) slows them down.
    Classes absent from the batch keep their centre.
    """
    features = features.detach().float()
    for cls in (0, 1):
        rows = fake == bool(cls)
        if rows.any():
            centres[cls] += beta * (features[rows].mean(0) - F.normalize(centres[cls], dim=0))


def mean_probability_logit(a: Tensor, b: Tensor) -> Tensor:
    """``logit((sigmoid(a) + sigmoid(b)) / 2)``, computed in log space (exact for any finite logits)."""
    a, b = a.float(), b.float()
    return torch.logaddexp(F.logsigmoid(a), F.logsigmoid(b)) - torch.logaddexp(F.logsigmoid(-a), F.logsigmoid(-b))


class WSDAN(DeepfakeModel):
    """A timm backbone (``num_classes=0``) under WS-DAN's attention, bilinear pooling and one linear logit.

    Head (``spec.head``): the attention layers ``attention.*``, the classifier ``logit.*`` and the class
    centres ``centres`` (a buffer, saved with the weights): the backbone's keys are those of the 2D
    :class:`~dfdc.models.image.TimmClassifier` of the same timm architecture without its classifier, so
    ImageNet weights or a trained frame model (\\WM/ started its WS-DAN from its trained Xception) load
    into it and nothing else. ``feature_dropout`` is the rate at which whole attention parts are dropped
    from the classifier's input in training (on the whole image's pass only); the centre loss reads the
    features without it.

    Training ``forward`` returns the whole image's logits and, in ``aux``, ``crop_logits`` and
    ``drop_logits`` of the augmented views, the ``features`` ``(B, M*C)`` and the ``attention`` maps
    ``(B, M, h, w)``; :meth:`loss_terms` turns them into ``crop_bce``, ``drop_bce`` and ``center``. The
    crop and drop views run as one batch. In eval mode ``logits`` are the logit of the mean probability of
    the whole image (``aux["raw_logits"]``) and of its crop to the mean attention map
    (``aux["crop_logits"]``); with ``refine=False`` (the 4th place's submission) the whole image's alone.
    """

    def __init__(self, backbone: nn.Module, spec: ModelSpec, *, num_features: int, attentions: int = 8,
                 feature_dropout: float = 0.5, crop_theta: Range = (0.4, 0.6), crop_padding: float = 0.1,
                 drop_theta: Range = (0.4, 0.7), eval_theta: float = 0.1, eval_padding: float = 0.05,
                 crop_weight: float = 1 / 3, drop_weight: float = 1 / 2, centre_beta: float = 5e-2,
                 centre_weight: float = 1.0, feature_scale: float = 100.0, refine: bool = True,
                 classifier: tuple[str, ...] = ()) -> None:
        super().__init__()
        if attentions < 1:
            raise ValueError(f"WS-DAN needs at least one attention map, got {attentions}")
        if not 0.0 <= feature_dropout <= 1.0:
            raise ValueError(f"feature_dropout must be in [0, 1], got {feature_dropout}")
        self.backbone = backbone
        self.spec = spec
        self.attention = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(num_features, attentions, kernel_size=1, bias=False),
            bn=nn.BatchNorm2d(attentions, eps=1e-3),
            act=nn.ReLU(inplace=True),
        ))
        self.logit = nn.Linear(attentions * num_features, 1)
        self.register_buffer("centres", torch.zeros(2, attentions * num_features))
        self.attentions = int(attentions)
        self.feature_dropout = float(feature_dropout)
        self.crop_theta, self.crop_padding, self.drop_theta = tuple(crop_theta), float(crop_padding), tuple(drop_theta)
        self.eval_theta, self.eval_padding = float(eval_theta), float(eval_padding)
        self.crop_weight, self.drop_weight = float(crop_weight), float(drop_weight)
        self.centre_beta, self.centre_weight = float(centre_beta), float(centre_weight)
        self.feature_scale = float(feature_scale)
        self.refine = bool(refine)
        self._classifier = tuple(f"backbone.{h}" for h in classifier)

    def describe(self, x: Tensor, dropout: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Images ``(B, 3, H, W)`` -> logits ``(B,)``, features ``(B, M*C)`` and attention maps ``(B, M, h, w)``.

        ``dropout``: the classifier reads the features with attention parts dropped at ``feature_dropout``.
        """
        fmap = self.backbone.forward_features(x)
        attention = self.attention(fmap)
        with torch.autocast(x.device.type, enabled=False):
            parts = bilinear_attention_pooling(fmap.float(), attention.float())
            features = signed_sqrt_l2(parts)
            seen = signed_sqrt_l2(drop_parts(parts, self.feature_dropout)) if dropout else features
        return self.logit(seen * self.feature_scale).squeeze(-1), features, attention

    def forward(self, x: Tensor) -> ModelOutput:
        if self.training:
            return self._forward_train(x)
        return self._forward_eval(x)

    def _forward_train(self, x: Tensor) -> ModelOutput:
        b = x.shape[0]
        logits, features, attention = self.describe(x, dropout=True)
        with torch.no_grad():
            maps = attention.detach()
            picked = pick_maps(maps, 2)  # (B, 2): one map to crop to, one to drop
            chosen = maps[torch.arange(b, device=maps.device)[:, None], picked]  # (B, 2, h, w)
            crops = attention_crop(x, chosen[:, 0], uniform(self.crop_theta, b, x.device), self.crop_padding)
            drops = attention_drop(x, chosen[:, 1], uniform(self.drop_theta, b, x.device))
        views, _, _ = self.describe(torch.cat([crops, drops]))
        aux = {"crop_logits": views[:b], "drop_logits": views[b:], "features": features, "attention": attention}
        return ModelOutput(logits, aux)

    def _forward_eval(self, x: Tensor) -> ModelOutput:
        logits, _, attention = self.describe(x)
        if not self.refine:
            return ModelOutput(logits, {"raw_logits": logits, "attention": attention})
        with torch.no_grad():
            crops = attention_crop(x, attention.detach().mean(1), self.eval_theta, self.eval_padding)
        crop_logits, _, _ = self.describe(crops)
        aux = {"raw_logits": logits, "crop_logits": crop_logits, "attention": attention}
        return ModelOutput(mean_probability_logit(logits, crop_logits), aux)

    def loss_terms(self, out: ModelOutput, batch: Any) -> dict[str, Tensor]:
        """``crop_bce`` and ``drop_bce`` (split BCE of the crop and drop views, weighted) and ``center``
        (the weighted centre loss) of a training output; moves the class centres when training.

        Fake is ``batch.y >= 0.5`` (mixed targets included). An eval-mode output has no terms.
        """
        aux = out.aux
        if "drop_logits" not in aux:
            return {}
        y = batch.y.float()
        fake = y >= 0.5
        terms = {
            "crop_bce": self.crop_weight * split_bce(aux["crop_logits"].float(), y),
            "drop_bce": self.drop_weight * split_bce(aux["drop_logits"].float(), y),
            "center": self.centre_weight * centre_loss(aux["features"], self.centres, fake),
        }
        if self.training:
            update_centres(self.centres, aux["features"], fake, self.centre_beta)
        return terms

    @torch.no_grad()
    def scale_centres(self, factor: float = 2.0) -> None:
        """Multiply the class centres by ``factor``: \\WM/ doubled them after each epoch so they settle."""
        self.centres.mul_(factor)

    def end_epoch(self, epoch: int) -> None:
        """\\WM/'s centre fixing: the centres double after every epoch (their moves shrink as 1/|centre|)."""
        self.scale_centres(2.0)

    def pretrained_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """timm / 2D-model keys -> this model's; the 2D classifier's tensors (``fc``, ``classifier``...) are
        dropped, WS-DAN's own head keys (``attention.*``, ``logit.*``, ``centres``) kept."""
        out = {}
        for k, v in state.items():
            if not (k in HEAD or k.startswith(HEAD_PREFIXES)):
                k = "backbone." + k.removeprefix("backbone.")
            if not any(k == h or k.startswith(h + ".") for h in self._classifier):
                out[k] = v
        return out


def wsdan(backbone_name: str, *, input_size: int = 224, drop_rate: float = 0.5, drop_path_rate: float = 0.0,
          hub: bool = False, **kwargs: Any) -> WSDAN:
    """``wsdan_<backbone_name>``: WS-DAN on a 2D backbone of :data:`~dfdc.models.image.TIMM_2D`.

    ``drop_rate`` is the feature-matrix dropout (\\WM/'s code: 0.5; ``create_model``'s default is 0, so
    a training config sets it); ``drop_path_rate`` reaches the backbone's stochastic depth. ``hub``: the
    backbone's ImageNet weights. Other keywords go to :class:`WSDAN`.
    """
    import timm

    name = f"wsdan_{backbone_name}"
    arch, has_drop_path = TIMM_2D[backbone_name]
    if drop_path_rate and not has_drop_path:
        raise ValueError(f"{arch} has no stochastic depth; drop_path_rate must be 0, got {drop_path_rate}")
    kw: dict[str, Any] = {"drop_path_rate": drop_path_rate} if has_drop_path else {}
    if hub:
        timm_hub_check(name, arch)
    net = timm.create_model(arch, pretrained=hub, num_classes=0, **kw)
    cfg = net.pretrained_cfg
    classifier = cfg.get("classifier") or ()
    spec = ModelSpec(input="frame", size=int(input_size), mean=tuple(float(v) for v in cfg["mean"]),
                     std=tuple(float(v) for v in cfg["std"]), head=HEAD)
    return WSDAN(net, spec, num_features=int(net.num_features), feature_dropout=drop_rate,
                 classifier=(classifier,) if isinstance(classifier, str) else tuple(classifier), **kwargs)


def _builder(backbone_name: str):
    def build(*, input_size: int = 224, drop_rate: float = 0.5, drop_path_rate: float = 0.0,
              hub: bool = False) -> WSDAN:
        return wsdan(backbone_name, input_size=input_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                     hub=hub)

    build.__doc__ = f"wsdan_{backbone_name}: WS-DAN on timm's {TIMM_2D[backbone_name][0]} (\\WM/, 4th place)."
    return build


# the family's rows of the model registry (dfdc.models.registry collects them)
BUILDERS = {f"wsdan_{backbone}": _builder(backbone) for backbone in WSDAN_BACKBONES}
