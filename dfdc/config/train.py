"""`train`: the model table, one entry per model.

Every entry names its architecture and what it reads (``inputs``: the face
``crops``, or the face-track ``clips``), checked against the architecture's spec
when the params load. ``train.models`` holds the models that start from scratch
or from published weights (``train@KEY``); ``train.stacked`` the ones whose
backbone starts from another entry's trained checkpoint (``backbone_from``,
``train_stacked@KEY``), which DVC must then depend on. Two groups, not one,
because DVC 3's templating cannot make a dependency conditional: an entry without
``backbone_from`` would depend on ``models/None``. A key names one model across
both groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dfdc.config.base import Section, rng

GROUPS = ("models", "stacked")
INPUTS = {"crops": "frame", "clips": "clip"}  # what an entry reads -> the spec input of the models that eat it


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
class CutoutParams:
    """The 1st place's dropouts, as probabilities per training crop (0: off; frame models only).

    ``landmarks``: remove the eyes, the nose or the mouth along the 5 landmarks (the 1st place: 0.7);
    otherwise ``half_face``: black out half of the face region (the 1st place: 0.2); then ``diff``: black
    out a half or a quadrant pair, on a fake only where its SSIM diff mask stays visible (the 1st place:
    0.6 to 0.8). The landmarks and the diff mask follow every geometric augmentation.
    """

    landmarks: float = rng(ge=0, le=1, default=0.0)
    half_face: float = rng(ge=0, le=1, default=0.0)
    diff: float = rng(ge=0, le=1, default=0.0)


@dataclass
class ModelParams:
    """One model of the ensemble: `train.models.<key>` (or `train.stacked.<key>`)."""

    arch: str
    # face crops (frame models) or face-track clips (clip models); required in a params file, where dvc.yaml
    # reads data/<inputs>
    inputs: Literal["crops", "clips"] | None = None
    input_size: int = rng(ge=16, default=224)
    epochs: int = rng(ge=1, default=10)
    batch_size: int = rng(ge=2, default=16)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"  # adam: weight decay as an L2 term (Effort's release)
    lr: float = rng(gt=0, default=1e-3)
    backbone_lr_scale: float = rng(ge=0, le=1, default=1.0)  # backbone lr = lr x this; 0 freezes the backbone
    weight_decay: float = rng(ge=0, default=1e-4)
    momentum: float = rng(ge=0, le=1, default=0.9)
    schedule: Literal["onecycle", "poly", "constant", "cosine"] = "onecycle"
    # cosine: from lr down to min_lr over cycle_epochs, restarting (GenD: 10, min_lr 1e-6); 0: one cycle
    cycle_epochs: int = rng(ge=0, default=0)
    min_lr: float = rng(ge=0, default=0.0)
    drop_rate: float = rng(ge=0, le=1, default=0.0)
    drop_path_rate: float = rng(ge=0, le=1, default=0.0)
    pretrained: str | None = None  # a local weights file, or "hub": the architecture's published weights
    backbone_from: str | None = None  # train.stacked only: the key whose best checkpoint gives the backbone
    augment: AugmentParams = field(default_factory=AugmentParams)
    aligned_mixup: bool = False  # NTech: mix each fake with its original's crop, target t ~ Beta(0.5, 0.5)
    cutmix: float = rng(ge=0, le=1, default=0.0)  # share of batches CutMix'ed (3D cuboids for clip models; the Medics)
    cutmix_alpha: float = rng(gt=0, default=1.0)  # the kept share ~ Beta(alpha, alpha)
    codec_augment: float = rng(ge=0, le=1, default=0.0)  # clip models: share of clips re-encoded (NTech)
    cutout: CutoutParams = field(default_factory=CutoutParams)
    # the fakes it learns from: the dataset's, self-blended pseudo-fakes made from its real crops
    # (Shiohara and Yamasaki 2022), or both (frame models only)
    fakes: Literal["dataset", "self_blended", "both"] = "dataset"
    # the face region of the half-face blackout and the self-blend: "hull", from dlib's 68 points (the
    # landmarks stage), as the 1st place and SBI had it, or "ellipse", from MTCNN's 5 points (a crop
    # whose 68-point fit failed always falls back to it)
    face_region: Literal["hull", "ellipse"] = "hull"
    seed: int = 0
    workers: int = rng(ge=0, default=0)
    # processes (GPUs) on this machine: stages/train.py relaunches itself under torchrun (DDP) when > 1
    nproc: int = rng(ge=1, default=1)
    sync_bn: bool = False  # batch-norm statistics over every process's batch (SyncBatchNorm; GPUs only)
    # one optimizer step every `accumulate` batches: the global batch is batch_size x processes x accumulate
    accumulate: int = rng(ge=1, default=1)
    # weights of the architecture's optional loss terms (clip_vit_*_effort: orthogonality, singular_values;
    # clip_vit_*_ln and _effort: GenD's uniformity, alignment)
    losses: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainParams(Section):
    """Training: the model table; `dvc.yaml` runs one stage per entry."""

    SECTION = "train"

    device: str = "auto"
    models: dict[str, ModelParams] = field(default_factory=dict)
    stacked: dict[str, ModelParams] = field(default_factory=dict)

    def validate(self) -> None:
        for key in self.stacked:
            if key in self.models:
                raise ValueError(f"stacked.{key}: the key is also in train.models; a key names one model")
        for key, p in self.models.items():
            if p.backbone_from is not None:
                raise ValueError(f"models.{key}.backbone_from: an entry that starts from another model's "
                                 "checkpoint goes under train.stacked (DVC then depends on that model); move it there")
        for group, key, p in self.entries():
            _check_inputs(f"{group}.{key}", p)
            _check_losses(f"{group}.{key}", p)
        known = self.all_models()
        for key, p in self.stacked.items():
            if not p.backbone_from:
                raise ValueError(f"stacked.{key}.backbone_from: required: the key of the model whose trained "
                                 "backbone this one starts from")
            seen = [key]
            source = p.backbone_from
            while source is not None:
                if source not in known:
                    raise ValueError(f"stacked.{key}.backbone_from: no model {source!r} "
                                     f"(defined: {', '.join(sorted(known))})")
                if source in seen:
                    raise ValueError(f"stacked.{key}.backbone_from: a cycle: {' -> '.join(seen + [source])}")
                seen.append(source)
                source = known[source].backbone_from

    def entries(self) -> list[tuple[str, str, ModelParams]]:
        """(group, key, entry) of every model."""
        return [(g, k, p) for g in GROUPS for k, p in getattr(self, g).items()]

    def all_models(self) -> dict[str, ModelParams]:
        """Every model entry of both groups, by key."""
        return {k: p for _, k, p in self.entries()}

    def group_of(self, key: str) -> str:
        """The group (one of GROUPS) that holds ``key``."""
        return next(g for g, k, _ in self.entries() if k == key)


def _check_losses(where: str, p: ModelParams) -> None:
    """``losses``: names the architecture's builder offers, weights finite and >= 0 (nothing is built)."""
    import math

    from dfdc.models.registry import loss_names

    offered = loss_names(p.arch)
    for name, weight in p.losses.items():
        if name not in offered:
            raise ValueError(f"{where}.losses.{name}: {p.arch} has no such loss term (its optional terms: "
                             f"{', '.join(offered) or 'none'})")
        if not (math.isfinite(float(weight)) and float(weight) >= 0):
            raise ValueError(f"{where}.losses.{name}: a weight must be finite and >= 0, got {weight}")


def _check_inputs(where: str, p: ModelParams) -> None:
    """``inputs`` against what the architecture eats (its registered builder; nothing is built)."""
    from dfdc.models.registry import input_kind

    if p.inputs is None:
        raise ValueError(f"{where}.inputs: required: crops or clips (what the model reads; dvc.yaml's stages "
                         "read data/<inputs>)")

    try:
        kind = input_kind(p.arch)
    except ValueError as e:
        raise ValueError(f"{where}.arch: {e}") from None
    if INPUTS[p.inputs] != kind:
        want = next(k for k, v in INPUTS.items() if v == kind)
        raise ValueError(f"{where}.inputs: {p.arch} is a {kind} model, it reads {want}, not {p.inputs}; "
                         f"set inputs: {want}")
