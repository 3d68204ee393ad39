"""Training data of one model: the split, the datasets its spec asks for, and each epoch's loader."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Dataset

from dfdc.config.train import ModelParams
from dfdc.data.augment import train_transforms
from dfdc.data.batch import collate
from dfdc.data.clips import ClipDataset
from dfdc.data.faceparts import Cutout
from dfdc.data.frames import FrameDataset
from dfdc.faces.landmarks import DENSE_COLUMNS, attach_dense
from dfdc.data.sampling import aligned_pairs, balanced_indices
from dfdc.folds import unseen_videos
from dfdc.models import ModelSpec

log = logging.getLogger("dfdc.train")


def split_by_fold(table: pd.DataFrame, folds: pd.DataFrame, holdout: int,
                  leave_out: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows) of a crops or clips table, by the video's fold.

    The fakes of manipulation ``leave_out`` are in neither (:func:`dfdc.folds.unseen_videos`): neither
    training nor model selection sees them.
    """
    t = table.merge(folds[["video", "fold"]], on="video", how="inner")
    if leave_out is not None:
        t = t[~t["video"].isin(unseen_videos(folds, leave_out))]
    return t[t["fold"] != holdout].reset_index(drop=True), t[t["fold"] == holdout].reset_index(drop=True)


@dataclass
class TrainData:
    """The training set of one model and how an epoch walks it."""

    dataset: Dataset
    table: pd.DataFrame  # the rows the dataset indexes
    val: pd.DataFrame  # holdout rows (scored by the scorer, not through this dataset)
    paired: bool  # items are fakes with their aligned originals (aligned mixup)
    batch_size: int
    workers: int
    train_rows: int  # training rows of the split (before pairing)

    def epoch_indices(self, rng: np.random.Generator) -> np.ndarray:
        """One epoch: the aligned pairs in a new order, or real and fake rows balanced."""
        if self.paired:
            return rng.permutation(len(self.table)).astype(np.int64)
        return balanced_indices(self.table["label"].to_numpy(), rng)

    @property
    def epoch_size(self) -> int:
        """Items in one epoch (before it is shared out among the ranks)."""
        return len(self.table) if self.paired else len(balanced_indices(self.table["label"].to_numpy(),
                                                                        np.random.default_rng(0)))

    def batches_per_epoch(self, world: int = 1) -> int:
        """Batches each of ``world`` ranks takes in one epoch (:func:`shard_indices`)."""
        return math.ceil(math.ceil(self.epoch_size / world) / self.batch_size)

    def reseed(self, seed: int) -> None:
        """Seed the augmentation of the coming epoch (in this process; DataLoader workers reseed from torch's
        seed), so that an epoch's draws depend on its number alone and a resumed run repeats them."""
        if hasattr(self.dataset, "set_random_seed"):
            self.dataset.set_random_seed(seed)
            return
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(seed % 2**32)

    def loader(self, indices: np.ndarray) -> DataLoader:
        """The batches of one epoch, in ``indices`` order, as :class:`dfdc.data.batch.Batch`."""
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=indices.tolist(), collate_fn=collate,
                          num_workers=self.workers, drop_last=False, persistent_workers=False)


def shard_indices(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s share of an epoch's ``indices`` (the same list on every rank): every
    ``world``-th index from position ``rank``.

    The list is first padded to a multiple of ``world`` with its own first indices (as
    torch's DistributedSampler pads), so every rank gets ``ceil(n / world)`` indices, the same number
    of batches of the same sizes, and steps as often as the others: at most ``world - 1`` items are
    seen twice in an epoch, none is dropped. Batch ``s`` of every rank together is then batch ``s`` of
    a single process at ``world`` times the batch size.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not one of {world} ranks")
    if world == 1:
        return indices
    per = math.ceil(len(indices) / world)
    return np.resize(indices, per * world)[rank::world]


def self_blended_rows(train: pd.DataFrame, fakes: str) -> pd.DataFrame:
    """The training rows for ``fakes``: ``dataset`` (as they are), ``self_blended`` (the real rows and a
    pseudo-fake of each, label 1 with ``self_blend`` set) or ``both`` (all rows and the pseudo-fakes)."""
    if fakes == "dataset":
        return train
    reals = train[train["label"] == 0]
    if len(reals) == 0:
        raise ValueError(f"fakes: {fakes}: self-blended images are made from real crops; the training rows "
                         "hold none")
    kept = reals if fakes == "self_blended" else train
    pseudo = reals.assign(label=1, self_blend=True)
    return pd.concat([kept.assign(self_blend=False), pseudo], ignore_index=True)


def uses_dense_landmarks(p: ModelParams) -> bool:
    """Whether the entry takes face regions from the 68 dense landmarks (half-face blackout or self-blends with
    ``face_region: hull``)."""
    return p.inputs != "clips" and p.face_region == "hull" and (p.cutout.half_face > 0 or p.fakes != "dataset")


def build_train_data(p: ModelParams, spec: ModelSpec, table: pd.DataFrame, folds: pd.DataFrame,
                     directory: str | Path, holdout: int, *, leave_out: str | None = None,
                     margin: float = 0.3, landmarks: pd.DataFrame | None = None) -> TrainData:
    """Split ``table`` (crops, or clips for a clip model) by fold and build the dataset the spec eats.

    ``leave_out``: a manipulation kept out of training and validation (:func:`split_by_fold`).
    The diff-guided cutout reads each fake crop's SSIM diff mask from the crops table's ``mask``
    column (a shard in ``directory``). ``margin`` is the crops' margin (the self-blend mask of a crop
    without landmarks). ``landmarks``: the `landmarks` stage's table, joined by key when the entry uses the
    68 points (:func:`uses_dense_landmarks`); without it every crop takes the 5-point ellipse.
    """
    if uses_dense_landmarks(p):
        if landmarks is None:
            log.warning("face_region: hull, but no 68-point landmarks were given: every crop takes the 5-point "
                        "ellipse")
        else:
            table = attach_dense(table, landmarks)
    train, val = split_by_fold(table, folds, holdout, leave_out)
    for part, rows in (("training", train), ("holdout", val)):
        if len(rows) == 0:
            raise ValueError(f"no {part} rows: the inputs table and the folds (holdout fold {holdout}) "
                             "share no video of that part")
    n_train = len(train)
    if p.codec_augment > 0 and spec.input != "clip":
        raise ValueError("codec_augment re-encodes clips; it is for clip models (inputs: clips) only")
    if spec.input == "clip":
        if "frames" not in table.columns:
            raise ValueError(f"the model eats clips of {spec.clip_len} crops (spec input 'clip'), but its inputs "
                             "are a crops table; it needs a clips table")
        wrong = sorted(set(table["frames"].astype(int)) - {spec.clip_len})
        if wrong:
            raise ValueError(f"the model eats clips of {spec.clip_len} crops, but the clips table holds clips of "
                             f"{wrong} crops")
    cutout = Cutout(**dataclasses.asdict(p.cutout))
    if spec.input == "clip" and (cutout.active or p.fakes != "dataset"):
        raise ValueError("cutout and fakes (self-blended images) work on face crops; they are for frame models "
                         "only")
    if p.aligned_mixup and p.fakes != "dataset":
        raise ValueError(f"aligned_mixup pairs each fake with its original's crop; fakes: {p.fakes} adds "
                         "pseudo-fakes that have none: use one of the two")
    if cutout.diff > 0 and "mask" not in table.columns:
        raise ValueError("cutout.diff needs the SSIM diff masks: the crops table has no mask column (the crops "
                         "stage writes them unless run with --no-masks)")
    augment = train_transforms(spec.size, seed=p.seed, paired=p.aligned_mixup, keypoints=cutout.active,
                               **dataclasses.asdict(p.augment))
    if spec.input == "clip":
        if p.aligned_mixup:
            raise ValueError("aligned_mixup pairs face crops; it is not available for clip models")
        dataset: Dataset = ClipDataset(train, directory, augment, codec_p=p.codec_augment)
    elif p.aligned_mixup:
        train = aligned_pairs(train)
        if len(train) == 0:
            raise ValueError("aligned_mixup: no fake crop has its original's crop in the training folds")
        dataset = FrameDataset(train, directory, augment, aligned=True, cutout=cutout, margin=margin)
    else:
        train = self_blended_rows(train, p.fakes)
        dataset = FrameDataset(train, directory, augment, cutout=cutout, margin=margin)
    return TrainData(dataset, train, val, p.aligned_mixup, p.batch_size, p.workers, n_train)


def data_fingerprint(train: pd.DataFrame, val: pd.DataFrame, directory: str | Path,
                     weights: list[str | Path] = ()) -> str:
    """Changes when the rows, their split, the shard files (names and sizes) or the contents of the
    starting ``weights`` files change. Modification times are left out: a `dvc checkout` or a fresh
    clone's identical rebuild is the same data, and the checkpoint stays the same bytes."""
    from dfdc.store import file_sha256

    h = hashlib.sha1()
    for f in weights:
        h.update(file_sha256(f).encode())
    for table in (train, val):
        h.update(pd.util.hash_pandas_object(table[["key", "shard", "label"]], index=False).to_numpy().tobytes())
        if set(DENSE_COLUMNS) <= set(table.columns):
            h.update(np.ascontiguousarray(table[DENSE_COLUMNS].to_numpy(np.float32)).tobytes())
    for f in sorted(Path(directory).iterdir()):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}".encode())
    return h.hexdigest()
