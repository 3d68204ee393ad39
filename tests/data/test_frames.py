"""Crop datasets, epoch sampling, the batch and its mixes, and the clip dataset path."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from dfdc.data.augment import train_transforms, val_transforms
from dfdc.data.batch import Batch, collate
from dfdc.data.frames import FrameDataset, read_crops
from dfdc.data.mix import AlignedMixup
from dfdc.data.sampling import aligned_pairs, balanced_indices
from dfdc.faces.crops import crop_key
from dfdc.models import ModelSpec
from dfdc.store import ShardWriter, encode_png

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
S = 32
COLOURS = [(255, 0, 0), (0, 128, 255), (10, 20, 30), (200, 200, 200)]
SHAPES = [(40, 30), (25, 50), (32, 32), (17, 19)]


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """4 constant-colour crops of varied sizes in shards of 2, and their table."""
    d = tmp_path_factory.mktemp("crops")
    writer = ShardWriter(d, shard_size=2)
    rows = []
    for k, (colour, (h, w)) in enumerate(zip(COLOURS, SHAPES)):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = colour
        key = f"v{k}|{k:06d}|0"
        rows.append({"key": key, "video": f"v{k}", "label": k % 2, "shard": writer.add(key, encode_png(img))})
    writer.close()
    table = pd.DataFrame(rows)
    assert sorted(p.name for p in d.iterdir()) == ["shard_00000.npz", "shard_00001.npz"]
    return d, table


def test_round_trip_and_normalisation_on_the_device_side(crops):
    d, table = crops
    ds = FrameDataset(table, d, val_transforms(S))
    assert len(ds) == 4
    spec = ModelSpec("frame", S, MEAN, STD)
    for i in range(4):
        item = ds[i]
        assert item["x"].shape == (S, S, 3) and item["x"].dtype == np.uint8
        assert item["y"] == table["label"][i] and item["idx"] == i
        x = spec.prepare(torch.from_numpy(item["x"])[None])[0]  # (3, S, S)
        np.testing.assert_allclose(x[:, S // 2, S // 2].numpy(), (np.array(COLOURS[i]) / 255 - MEAN) / STD,
                                   rtol=1e-5, atol=1e-5)
    # the non-square crops are zero padded: padding normalises to -mean/std
    x = spec.prepare(torch.from_numpy(ds[0]["x"])[None])[0]  # 40x30 -> 32x24, padded 4 columns each side
    np.testing.assert_allclose(x[:, S // 2, 0].numpy(), -np.array(MEAN) / STD, rtol=1e-5)


def test_no_transform_and_bad_arguments(crops):
    d, table = crops
    assert np.array_equal(FrameDataset(table, d, None)[2]["x"][0, 0], COLOURS[2])
    with pytest.raises(ValueError, match="shard"):
        FrameDataset(table.drop(columns="shard"), d, None)
    with pytest.raises(ValueError, match="orig_key"):
        FrameDataset(table, d, None, aligned=True)
    with pytest.raises(IndexError):
        FrameDataset(table, d, None)[4]
    with pytest.raises(ValueError, match="3 values"):
        ModelSpec("frame", S, (0.5,), STD)
    with pytest.raises(ValueError, match="clip_len must be 1"):
        ModelSpec("frame", S, MEAN, STD, clip_len=4)


def test_dataloader_workers_collate_batches(crops):
    d, table = crops
    ds = FrameDataset(table, d, val_transforms(S))
    ds[0]  # a reader open in the parent must not leak into the workers
    batches = list(DataLoader(ds, batch_size=2, num_workers=2, shuffle=False, collate_fn=collate))
    assert len(batches) == 2 and all(isinstance(b, Batch) for b in batches)
    for b in batches:
        assert b.x.shape == (2, S, S, 3) and b.x.dtype == torch.uint8
        assert b.y.shape == (2,) and b.y.dtype == torch.float32 and b.aligned is None
        unit = b.unit()
        assert unit.x.shape == (2, 3, S, S) and 0 <= unit.x.min() and unit.x.max() <= 1
    assert torch.cat([b.idx for b in batches]).tolist() == [0, 1, 2, 3]
    assert torch.cat([b.y for b in batches]).tolist() == [0.0, 1.0, 0.0, 1.0]


def test_read_crops_in_chunks(crops):
    d, table = crops
    chunks = list(read_crops(table, d, chunk=3))
    assert [len(c) for c in chunks] == [3, 1]
    assert [c.shape[:2] for c in chunks[0] + chunks[1]] == SHAPES


def test_workers_do_not_repeat_augmentations(crops):
    import albumentations as A

    d, table = crops
    same = pd.concat([table.iloc[[3]]] * 2, ignore_index=True)  # the same crop twice
    noisy = A.Compose([A.GaussNoise(std_range=(0.2, 0.2), p=1), A.PadIfNeeded(S, S)], seed=0)
    a, b = DataLoader(FrameDataset(same, d, noisy), batch_size=1, num_workers=2, collate_fn=collate)
    assert not torch.equal(a.x, b.x)


def test_balanced_indices_counts_and_coverage():
    labels = np.array([0] * 3 + [1] * 10)
    idx = balanced_indices(labels, np.random.default_rng(0))
    assert idx.dtype == np.int64 and len(idx) == 20
    assert (labels[idx] == 0).sum() == (labels[idx] == 1).sum() == 10
    assert set(idx[labels[idx] == 0]) == {0, 1, 2}  # the smaller class is fully covered
    assert sorted(idx[labels[idx] == 1]) == list(range(3, 13))  # the larger without replacement
    assert not np.array_equal(idx, np.sort(idx))  # shuffled


def test_balanced_indices_per_class():
    labels = np.array([1, 0, 0, 0, 0, 0, 1, 1, 0, 0])
    idx = balanced_indices(labels, np.random.default_rng(1), per_class=4)
    assert (labels[idx] == 0).sum() == (labels[idx] == 1).sum() == 4
    assert set(idx[labels[idx] == 1]) == {0, 6, 7}
    assert len(set(idx[labels[idx] == 0])) == 4  # no repeats where there are enough
    np.testing.assert_array_equal(balanced_indices(labels, np.random.default_rng(5)),
                                  balanced_indices(labels, np.random.default_rng(5)))


def test_balanced_indices_errors():
    with pytest.raises(ValueError, match="fake"):
        balanced_indices(np.zeros(5, int), np.random.default_rng(0))
    with pytest.raises(ValueError, match="real"):
        balanced_indices(np.ones(5, int), np.random.default_rng(0))
    with pytest.raises(ValueError, match="per_class"):
        balanced_indices(np.array([0, 1]), np.random.default_rng(0), per_class=0)
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        balanced_indices(np.array([0, 1, 2]), np.random.default_rng(0))


def test_aligned_mixup_is_a_batch_level_mix_of_a_fake_and_its_original(tmp_path):
    w = ShardWriter(tmp_path / "c", shard_size=2)
    rows = []
    for video, label, value in (("r.mp4", 0, 0), ("f.mp4", 1, 200), ("lonely.mp4", 1, 100)):
        original = "r.mp4" if video != "lonely.mp4" else "gone.mp4"
        key = crop_key(video, 5, 0)
        shard = w.add(key, encode_png(np.full((20, 16, 3), value, np.uint8)))
        rows.append({"key": key, "video": video, "original": original, "frame": 5, "track": 0,
                     "label": label, "shard": shard})
    w.close()
    pairs = aligned_pairs(pd.DataFrame(rows))
    assert pairs["video"].tolist() == ["f.mp4"] and pairs["orig_key"].iloc[0] == crop_key("r.mp4", 5, 0)

    ds = FrameDataset(pd.concat([pairs] * 200, ignore_index=True), tmp_path / "c", None, aligned=True)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch.aligned is not None and batch.aligned.shape == batch.x.shape
    mixed = AlignedMixup()(batch.unit(), np.random.default_rng(0))
    t = mixed.y.numpy()
    assert mixed.aligned is None and mixed.x.shape == (200, 3, 20, 16)
    torch.testing.assert_close(mixed.x, (mixed.y * 200 / 255).view(-1, 1, 1, 1).expand_as(mixed.x))  # (1-t)*0 + t*200
    assert 0 <= t.min() and t.max() <= 1 and abs(t.mean() - 0.5) < 0.08
    assert ((t < 0.1) | (t > 0.9)).mean() > 0.3  # Beta(0.5, 0.5) piles up near 0 and 1
    again = AlignedMixup()(batch.unit(), np.random.default_rng(0))
    assert torch.equal(again.y, mixed.y)  # the draw follows the rng it is given

    paired = FrameDataset(pairs, tmp_path / "c", train_transforms(12, seed=0, paired=True), aligned=True)[0]
    assert paired["x"].shape == paired["aligned"].shape == (12, 12, 3)
    with pytest.raises(ValueError, match="batch.aligned"):
        AlignedMixup()(collate([FrameDataset(pairs, tmp_path / "c", None)[0]]).unit(), np.random.default_rng(0))
