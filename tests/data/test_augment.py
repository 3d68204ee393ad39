import albumentations as A
import cv2
import numpy as np
import pytest

from dfdc.data.augment import IsotropicResize, isotropic_resize, train_transforms, val_transforms

SIZES = [(50, 80, 3), (81, 33, 3), (7, 5, 3), (64, 64, 3), (200, 151, 3), (1, 90, 3)]


def _img(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _types(compose):
    """Class names of every transform in a Compose, OneOf children included."""
    out = []
    for t in compose.transforms:
        out.append(type(t).__name__)
        if isinstance(t, A.BaseCompose):
            out.extend(_types(t))
    return out


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        ((50, 80, 3), 64, (40, 64, 3)),  # landscape, shrink
        ((80, 50, 3), 64, (64, 40, 3)),  # portrait, shrink
        ((10, 20, 3), 64, (32, 64, 3)),  # tiny, enlarge
        ((64, 30, 3), 64, (64, 30, 3)),  # already there
        ((1, 300, 3), 64, (1, 64, 3)),  # never below one pixel
        ((40, 40), 32, (32, 32)),  # grey
    ],
)
def test_isotropic_resize_shapes(shape, size, expected):
    out = isotropic_resize(_img(shape), size)
    assert out.shape == expected
    assert out.dtype == np.uint8


def test_isotropic_resize_picks_interpolation():
    img = _img((10, 20, 3))
    up = isotropic_resize(img, 40, cv2.INTER_AREA, cv2.INTER_NEAREST)
    np.testing.assert_array_equal(up, cv2.resize(img, (40, 20), interpolation=cv2.INTER_NEAREST))
    big = _img((40, 80, 3))
    down = isotropic_resize(big, 20, cv2.INTER_NEAREST, cv2.INTER_CUBIC)
    np.testing.assert_array_equal(down, cv2.resize(big, (20, 10), interpolation=cv2.INTER_NEAREST))


def test_isotropic_resize_transform():
    out = IsotropicResize(48)(image=_img((30, 60, 3)))["image"]
    assert out.shape == (24, 48, 3)
    assert IsotropicResize(48, p=0.0)(image=_img((30, 60, 3)))["image"].shape == (30, 60, 3)


@pytest.mark.parametrize("shape", SIZES)
def test_train_and_val_output_shape(shape):
    size = 48
    train = train_transforms(size, seed=0)
    val = val_transforms(size)
    for k in range(8):
        for t in (train, val):
            out = t(image=_img(shape, seed=k))["image"]
            assert out.shape == (size, size, 3)
            assert out.dtype == np.uint8


def test_val_is_centred_and_deterministic():
    img = np.full((20, 40, 3), 200, np.uint8)
    out = val_transforms(32)(image=img)["image"]
    assert out.shape == (32, 32, 3)
    assert (out[:8] == 0).all() and (out[-8:] == 0).all()
    assert (out[8:24] == 200).all()
    np.testing.assert_array_equal(out, val_transforms(32)(image=img)["image"])


def test_same_seed_same_output_different_seed_differs():
    imgs = [_img((70, 50, 3), seed=k) for k in range(10)]
    a = [train_transforms(40, seed=3)(image=i)["image"] for i in imgs]
    t1, t2, t3 = train_transforms(40, seed=3), train_transforms(40, seed=3), train_transforms(40, seed=4)
    r1 = [t1(image=i)["image"] for i in imgs]
    r2 = [t2(image=i)["image"] for i in imgs]
    r3 = [t3(image=i)["image"] for i in imgs]
    for x, y in zip(r1, r2):
        np.testing.assert_array_equal(x, y)
    assert a[0].tolist() == r1[0].tolist()
    assert any(not np.array_equal(x, z) for x, z in zip(r1, r3))


def test_full_pipeline_contents():
    names = _types(train_transforms(32))
    assert names == [
        "ImageCompression", "GaussNoise", "GaussianBlur", "HorizontalFlip",
        "OneOf", "IsotropicResize", "IsotropicResize", "IsotropicResize",
        "PadIfNeeded",
        "OneOf", "RandomBrightnessContrast", "FancyPCA", "HueSaturationValue",
        "ToGray", "Affine",
    ]  # fmt: skip
    t = train_transforms(32).transforms
    assert t[0].quality_range == (60, 100) and t[0].p == 0.5
    assert t[1].p == 0.1 and t[2].p == 0.05 and t[2].blur_limit == (3, 3)
    assert t[4].p == 1 and [(r.interpolation_down, r.interpolation_up) for r in t[4].transforms] == [
        (cv2.INTER_AREA, cv2.INTER_CUBIC), (cv2.INTER_AREA, cv2.INTER_LINEAR), (cv2.INTER_LINEAR, cv2.INTER_LINEAR)
    ]  # fmt: skip
    assert t[5].border_mode == cv2.BORDER_CONSTANT and t[5].min_height == t[5].min_width == 32
    assert t[6].p == 0.7 and t[7].p == 0.2
    assert t[8].p == 0.5 and t[8].border_mode == cv2.BORDER_CONSTANT and tuple(t[8].rotate) == (-10, 10)
    assert _types(val_transforms(32)) == ["IsotropicResize", "PadIfNeeded"]


@pytest.mark.parametrize(
    "switch, removed",
    [
        ("jpeg", {"ImageCompression"}),
        ("noise", {"GaussNoise"}),
        ("blur", {"GaussianBlur"}),
        ("hflip", {"HorizontalFlip"}),
        ("color", {"RandomBrightnessContrast", "FancyPCA", "HueSaturationValue"}),
        ("gray", {"ToGray"}),
        ("geometric", {"Affine"}),
    ],
)
def test_each_switch_removes_its_transform(switch, removed):
    full = _types(train_transforms(32))
    off = _types(train_transforms(32, **{switch: False}))
    assert removed <= set(full)
    assert not removed & set(off)
    assert len(full) - len(off) == len(removed) + (1 if switch == "color" else 0)  # + its OneOf
    assert off.count("IsotropicResize") == 3 and "PadIfNeeded" in off
    assert train_transforms(32, **{switch: False})(image=_img((20, 30, 3)))["image"].shape == (32, 32, 3)


@pytest.mark.parametrize("bad", [0, -1, 2.5, None, True])
def test_bad_size_raises(bad):
    for make in (train_transforms, val_transforms, IsotropicResize):
        with pytest.raises(ValueError, match="positive integer"):
            make(bad)
    with pytest.raises(ValueError):
        isotropic_resize(_img((4, 4, 3)), bad)


def test_bad_interpolation_raises():
    with pytest.raises(ValueError, match="interpolation_up"):
        IsotropicResize(32, cv2.INTER_AREA, 99)
