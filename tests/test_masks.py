"""SSIM difference masks: agreement with scikit-image, behaviour on a real FF++ fake."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dfdc.masks import _grey_row, bench_masks, diff_mask, diff_mask_reference, ssim_map

FFPP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ffpp"
REAL = FFPP / "original_sequences" / "youtube" / "c23" / "videos" / "519.mp4"
FAKE = FFPP / "manipulated_sequences" / "Deepfakes" / "c23" / "videos" / "519_515.mp4"

# Face boxes (x0, y0, x1, y1) in the 640x480 frames of 519.mp4, found once with
# facenet_pytorch.MTCNN; crops add a 30% margin on every side.
FACES = {
    0: (373, 94, 445, 195),
    30: (383, 85, 455, 182),
}
MARGIN = 0.3


def _read_rgb(path: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    try:
        for _ in range(index + 1):  # sequential reads: seeking in mp4 is not frame-exact everywhere
            ok, frame = cap.read()
            assert ok, f"{path}: cannot read frame {index}"
    finally:
        cap.release()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)  # (H, W, 3)


def _crop_box(face: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = face
    mx, my = round((x1 - x0) * MARGIN), round((y1 - y0) * MARGIN)
    return max(0, x0 - mx), max(0, y0 - my), min(shape[1], x1 + mx), min(shape[0], y1 + my)


@pytest.fixture(scope="module")
def face_pairs() -> list[tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]]:
    """(real crop, fake crop, face box in crop coordinates) for each frame in FACES."""
    if not (REAL.exists() and FAKE.exists()):
        pytest.skip(f"FaceForensics++ sample not found under {FFPP}")
    pairs = []
    for index, face in FACES.items():
        real, fake = _read_rgb(REAL, index), _read_rgb(FAKE, index)
        assert real.shape == fake.shape
        x0, y0, x1, y1 = _crop_box(face, real.shape)
        inner = (face[0] - x0, face[1] - y0, face[2] - x0, face[3] - y0)
        pairs.append((real[y0:y1, x0:x1].copy(), fake[y0:y1, x0:x1].copy(), inner))
    return pairs


def _random_pair(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An image and a copy that is unrelated on the left, noisy in the middle, equal on the right."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = a.copy()
    third = shape[1] // 3
    b[:, :third] = rng.integers(0, 256, b[:, :third].shape)
    middle = a[:, third : 2 * third]
    b[:, third : 2 * third] = np.clip(middle + rng.normal(0, 40, middle.shape), 0, 255)
    return a, b


@pytest.mark.parametrize(
    ("shape", "win_size"),
    [((37, 53, 3), 7), ((37, 53), 7), ((41, 29, 1), 7), ((7, 7, 3), 7), ((37, 53, 3), 3), ((37, 53, 3), 13)],
)
def test_ssim_map_matches_skimage(shape: tuple[int, ...], win_size: int) -> None:
    a, b = _random_pair(shape, seed=sum(shape) + win_size)
    channel_axis = -1 if len(shape) == 3 else None
    _, ref = structural_similarity(
        a, b, win_size=win_size, channel_axis=channel_axis, data_range=255, full=True
    )
    ours = ssim_map(a, b, win_size=win_size)
    assert ours.shape == shape
    assert ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-6
    assert ref.min() < 0.2 and ref.max() > 0.99  # the pair spans a wide range of SSIM


def test_ssim_map_largest_window_does_not_overflow() -> None:
    """Window sums of x^2 + y^2 reach 127^2 * 2 * 255^2, just under 2^31, on white images."""
    white = np.full((130, 127, 3), 255, np.uint8)
    a, b = _random_pair(white.shape, seed=9)
    for x, y in [(white, white), (white, a), (a, b)]:
        _, ref = structural_similarity(x, y, win_size=127, channel_axis=-1, data_range=255, full=True)
        assert np.abs(ssim_map(x, y, win_size=127) - ref).max() <= 1e-6


def test_diff_mask_matches_reference_on_real_crops(face_pairs) -> None:
    for real, fake, _ in face_pairs:
        ours = diff_mask(real, fake)
        ref = diff_mask_reference(real, fake)
        assert ours.shape == real.shape[:2]
        assert ours.dtype == np.uint8
        assert int(np.abs(ours.astype(np.int16) - ref).max()) <= 2
        assert (ours != ref).mean() < 1e-3  # off-by-one truncations are rare


def test_fake_mask_lights_up_the_face(face_pairs) -> None:
    for real, fake, (x0, y0, x1, y1) in face_pairs:
        assert not diff_mask(real, real).any()
        mask = diff_mask(real, fake)
        face_mean = mask[y0:y1, x0:x1].mean()
        assert face_mean > 40, face_mean
        assert face_mean > 1.5 * mask.mean()  # brighter than the crop as a whole


def test_diff_mask_greyscale_and_clipping() -> None:
    a, b = _random_pair((40, 48), seed=1)
    grey = diff_mask(a, b)
    assert grey.shape == a.shape
    assert np.abs(grey.astype(np.int16) - diff_mask_reference(a, b)).max() <= 2
    # An inverted image has SSIM near -1: (1 - SSIM) * 255 clips to 255 instead of wrapping.
    a3, _ = _random_pair((32, 32, 3), seed=2)
    inverted = diff_mask(a3, 255 - a3)
    assert np.abs(inverted.astype(np.int16) - diff_mask_reference(a3, 255 - a3)).max() <= 2
    assert (inverted >= 250).mean() > 0.9


def _assert_matches_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ours = diff_mask(a, b)
    ref = diff_mask_reference(a, b)
    assert ours.shape == a.shape[:2] and ours.dtype == np.uint8
    assert int(np.abs(ours.astype(np.int16) - ref).max()) <= 2
    return ours


@pytest.mark.parametrize(
    "shape",
    [(7, 7, 3), (7, 7), (7, 7, 1), (7, 30, 3), (30, 7, 3), (8, 9, 3), (13, 11), (31, 17, 3), (64, 48, 3)],
)
def test_diff_mask_matches_reference_on_small_and_odd_sizes(shape: tuple[int, ...]) -> None:
    a, b = _random_pair(shape, seed=sum(shape))
    _assert_matches_reference(a, b)
    assert not diff_mask(a, a).any()


def test_diff_mask_edge_inputs() -> None:
    rng = np.random.default_rng(5)
    black, white = np.zeros((9, 12, 3), np.uint8), np.full((9, 12, 3), 255, np.uint8)
    for a, b in [(black, black), (white, white), (black, white), (white, black)]:
        _assert_matches_reference(a, b)
    assert not diff_mask(white, white).any()
    frame = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    # Views that are not C-contiguous: a crop of a frame, a channel-reversed (BGR) view.
    _assert_matches_reference(frame[5:45, 10:60], other[5:45, 10:60])
    _assert_matches_reference(frame[..., ::-1], other[..., ::-1])
    assert not diff_mask(frame[5:45, 10:60], frame[5:45, 10:60].copy()).any()


def test_grey_row_is_cv2_rgb2gray() -> None:
    """The fused grey conversion equals cv2.cvtColor(RGB2GRAY) on every RGB triple."""
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([v >> 16, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8)  # (2^24, 3)
    ours = np.empty(len(rgb), np.uint8)
    _grey_row(rgb.reshape(-1), 3, ours)
    np.testing.assert_array_equal(ours, cv2.cvtColor(rgb[None], cv2.COLOR_RGB2GRAY)[0])


def test_shape_mismatch_raises() -> None:
    a = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        diff_mask(a, np.zeros((32, 33, 3), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        diff_mask_reference(a, np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        ssim_map(a, a[:, :, :2])
    with pytest.raises(ValueError, match="uint8"):
        ssim_map(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(ValueError, match="window"):
        ssim_map(a[:5], a[:5])


def test_bench_masks_reports_positive_numbers() -> None:
    pairs = [_random_pair((24, 20, 3), seed=s) for s in (3, 4)]
    result = bench_masks(pairs, repeat=1)
    assert set(result) == {"pairs", "ours_ms", "skimage_ms", "speedup", "max_abs_diff"}
    assert result["pairs"] == 2
    for key in ("ours_ms", "skimage_ms", "speedup"):
        assert result[key] > 0, key
    assert 0 <= result["max_abs_diff"] <= 2
