import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from dfdc.data.augment import val_transforms
from dfdc.data.dataset import CropDataset, balanced_indices
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


def test_round_trip(crops):
    d, table = crops
    ds = CropDataset(table, d, val_transforms(S), MEAN, STD)
    assert len(ds) == 4
    for i in range(4):
        x, y, j = ds[i]
        assert x.shape == (3, S, S) and x.dtype == torch.float32
        assert y.shape == () and y.dtype == torch.float32 and y.item() == table["label"][i]
        assert j == i
        expected = (np.array(COLOURS[i]) / 255 - MEAN) / STD
        np.testing.assert_allclose(x[:, S // 2, S // 2].numpy(), expected, rtol=1e-5, atol=1e-5)
    # the non-square crops are zero padded: padding normalises to -mean/std
    x, _, _ = ds[0]  # 40x30 -> 32x24, padded 4 columns each side
    np.testing.assert_allclose(x[:, S // 2, 0].numpy(), -np.array(MEAN) / STD, rtol=1e-5)


def test_no_transform_and_bad_arguments(crops):
    d, table = crops
    x, _, _ = CropDataset(table, d, None, (0, 0, 0), (1, 1, 1))[2]
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), np.array(COLOURS[2]) / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="shard"):
        CropDataset(table.drop(columns="shard"), d, None, MEAN, STD)
    with pytest.raises(ValueError, match="3 values"):
        CropDataset(table, d, None, (0.5,), STD)
    with pytest.raises(IndexError):
        CropDataset(table, d, None, MEAN, STD)[4]


def test_dataloader_workers(crops):
    d, table = crops
    ds = CropDataset(table, d, val_transforms(S), MEAN, STD)
    ds[0]  # a reader open in the parent must not leak into the workers
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2
    for x, y, idx in batches:
        assert x.shape == (2, 3, S, S) and x.dtype == torch.float32
        assert y.shape == (2,) and y.dtype == torch.float32
    assert torch.cat([b[2] for b in batches]).tolist() == [0, 1, 2, 3]
    assert torch.cat([b[1] for b in batches]).tolist() == [0.0, 1.0, 0.0, 1.0]


def test_workers_do_not_repeat_augmentations(crops):
    import albumentations as A

    d, table = crops
    same = pd.concat([table.iloc[[3]]] * 2, ignore_index=True)  # the same crop twice
    noisy = A.Compose([A.GaussNoise(std_range=(0.2, 0.2), p=1), A.PadIfNeeded(S, S)], seed=0)
    ds = CropDataset(same, d, noisy, MEAN, STD)
    (a, _, _), (b, _, _) = DataLoader(ds, batch_size=1, num_workers=2)  # one item per worker
    assert not torch.equal(a, b)


def test_balanced_indices_counts_and_coverage():
    labels = np.array([0] * 3 + [1] * 10)
    rng = np.random.default_rng(0)
    idx = balanced_indices(labels, rng)
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
    a = balanced_indices(labels, np.random.default_rng(5))
    b = balanced_indices(labels, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_balanced_indices_errors():
    with pytest.raises(ValueError, match="fake"):
        balanced_indices(np.zeros(5, int), np.random.default_rng(0))
    with pytest.raises(ValueError, match="real"):
        balanced_indices(np.ones(5, int), np.random.default_rng(0))
    with pytest.raises(ValueError, match="per_class"):
        balanced_indices(np.array([0, 1]), np.random.default_rng(0), per_class=0)
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        balanced_indices(np.array([0, 1, 2]), np.random.default_rng(0))


def test_aligned_mixup_mixes_a_fake_with_its_original(tmp_path):
    import pandas as pd
    import torch

    from dfdc.data.augment import train_transforms
    from dfdc.data.dataset import AlignedMixupDataset, aligned_pairs
    from dfdc.preprocess import crop_key
    from dfdc.store import ShardWriter, encode_png

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

    torch.manual_seed(0)
    ds = AlignedMixupDataset(pairs, tmp_path / "c", None, mean=(0, 0, 0), std=(1, 1, 1))
    ts = []
    for _ in range(200):
        x, t, _ = ds[0]
        assert torch.allclose(x, torch.full_like(x, t.item() * 200 / 255), atol=1e-5)  # (1-t)*0 + t*200
        ts.append(t.item())
    ts = np.array(ts)
    assert 0 <= ts.min() and ts.max() <= 1 and abs(ts.mean() - 0.5) < 0.08
    assert ((ts < 0.1) | (ts > 0.9)).mean() > 0.3  # Beta(0.5, 0.5) piles up near 0 and 1

    paired = AlignedMixupDataset(pairs, tmp_path / "c", train_transforms(12, seed=0, paired=True), (0, 0, 0), (1, 1, 1))
    x, t, _ = paired[0]
    assert x.shape == (3, 12, 12)
