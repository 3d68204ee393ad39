"""`train`: one entry per model, in groups by what the model reads.

``train.models``: models trained on the face crops (``train@KEY``).
``train.stacked``: models whose backbone starts from another entry's trained
checkpoint (``backbone_from``), so DVC makes ``train_stacked@KEY`` depend on
``models/<backbone_from>``. ``train.clips`` and ``train.clips_stacked``: the same
for clip models, trained on the face-track clips (``train_clips@KEY``,
``train_clips_stacked@KEY``). A key names one model across all groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dfdc.config.base import Section, rng

GROUPS = ("models", "stacked", "clips", "clips_stacked")
STACKED = ("stacked", "clips_stacked")


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
    """Seed 004's dropouts, as probabilities per training crop (0: off; frame models only).

    ``landmarks``: remove the eyes, the nose or the mouth along the 5 landmarks (seed 004: 0.7);
    otherwise ``half_face``: black out half of the face region (seed 004: 0.2); then ``diff``: black
    out a half or a quadrant pair, on a fake only where its SSIM diff mask stays visible (seed 004:
    0.6 to 0.8). The landmarks and the diff mask follow every geometric augmentation.
    """

    landmarks: float = rng(ge=0, le=1, default=0.0)
    half_face: float = rng(ge=0, le=1, default=0.0)
    diff: float = rng(ge=0, le=1, default=0.0)


@dataclass
class ModelParams:
    """One model of the ensemble: `train.models.<key>` (or `train.stacked.<key>`)."""

    arch: str
    input_size: int = rng(ge=16, default=224)
    epochs: int = rng(ge=1, default=10)
    batch_size: int = rng(ge=2, default=16)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = rng(gt=0, default=1e-3)
    backbone_lr_scale: float = rng(ge=0, le=1, default=1.0)  # backbone lr = lr x this; 0 freezes the backbone
    weight_decay: float = rng(ge=0, default=1e-4)
    momentum: float = rng(ge=0, le=1, default=0.9)
    schedule: Literal["onecycle", "poly", "constant"] = "onecycle"
    drop_rate: float = rng(ge=0, le=1, default=0.0)
    drop_path_rate: float = rng(ge=0, le=1, default=0.0)
    pretrained: str | None = None  # a local weights file, or "hub": the architecture's published weights
    backbone_from: str | None = None  # train.stacked only: the key whose best checkpoint gives the backbone
    augment: AugmentParams = field(default_factory=AugmentParams)
    aligned_mixup: bool = False  # seed 001: mix each fake with its original's crop, target t ~ Beta(0.5, 0.5)
    cutmix: float = rng(ge=0, le=1, default=0.0)  # share of batches CutMix'ed (3D cuboids for clip models; seed 000)
    cutmix_alpha: float = rng(gt=0, default=1.0)  # the kept share ~ Beta(alpha, alpha)
    codec_augment: float = rng(ge=0, le=1, default=0.0)  # clip models: share of clips re-encoded (seed 001)
    cutout: CutoutParams = field(default_factory=CutoutParams)
    # the fakes it learns from: the dataset's, self-blended pseudo-fakes made from its real crops
    # (Shiohara and Yamasaki 2022), or both (frame models only)
    fakes: Literal["dataset", "self_blended", "both"] = "dataset"
    seed: int = 0
    workers: int = rng(ge=0, default=0)
    # processes (GPUs) on this machine: stages/train.py relaunches itself under torchrun (DDP) when > 1
    nproc: int = rng(ge=1, default=1)
    sync_bn: bool = False  # batch-norm statistics over every process's batch (SyncBatchNorm; GPUs only)
    # one optimizer step every `accumulate` batches: the global batch is batch_size x processes x accumulate
    accumulate: int = rng(ge=1, default=1)


@dataclass
class TrainParams(Section):
    """Training: one entry per model; `dvc.yaml` runs one stage per entry of each group."""

    SECTION = "train"

    device: str = "auto"
    models: dict[str, ModelParams] = field(default_factory=dict)
    stacked: dict[str, ModelParams] = field(default_factory=dict)
    clips: dict[str, ModelParams] = field(default_factory=dict)
    clips_stacked: dict[str, ModelParams] = field(default_factory=dict)

    def validate(self) -> None:
        seen_in: dict[str, str] = {}
        for group in GROUPS:
            for key in getattr(self, group):
                if key in seen_in:
                    raise ValueError(f"{group}.{key}: the key is also in train.{seen_in[key]}; a key names one "
                                     "model")
                seen_in[key] = group
        for group in ("models", "clips"):
            for key, p in getattr(self, group).items():
                if p.backbone_from is not None:
                    raise ValueError(f"{group}.{key}.backbone_from: only entries of train.stacked and "
                                     "train.clips_stacked start from another model's checkpoint (DVC then depends "
                                     "on it); move the entry there")
        known = self.all_models()
        for group, key, p in ((g, k, p) for g in STACKED for k, p in getattr(self, g).items()):
            if not p.backbone_from:
                raise ValueError(f"{group}.{key}.backbone_from: required: the key of the model whose trained "
                                 "backbone this one starts from")
            seen = [key]
            source = p.backbone_from
            while True:
                if source not in known:
                    raise ValueError(f"{group}.{key}.backbone_from: no model {source!r} "
                                     f"(defined: {', '.join(sorted(known))})")
                if source in seen:
                    raise ValueError(f"{group}.{key}.backbone_from: a cycle: {' -> '.join(seen + [source])}")
                seen.append(source)
                source = known[source].backbone_from
                if source is None:
                    break

    def all_models(self) -> dict[str, ModelParams]:
        """Every model entry of every group, by key."""
        return {k: p for group in GROUPS for k, p in getattr(self, group).items()}

    def reads_clips(self, key: str) -> bool:
        """Whether entry ``key`` trains on the clips (its group is ``clips`` or ``clips_stacked``)."""
        return self.group_of(key).startswith("clips")

    def group_of(self, key: str) -> str:
        """The group (one of GROUPS) that holds ``key``."""
        for group in GROUPS:
            if key in getattr(self, group):
                return group
        raise KeyError(key)
