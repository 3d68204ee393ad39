import numpy as np
import pytest

from dfdc.data import codec
from dfdc.data.codec import (X264_TUNES, CodecError, CodecParams, apply_codec, decode_clip_mp4, draw_codec_params,
                             encode_clip_mp4, held_frames, reencode_clip, scaled_size)


def _clip(length=8, height=64, width=64, seed=0, fine=True):
    """Colour gradients and a disc moving 3 px per frame; ``fine`` adds a 2 px checkerboard and light noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (height + width) + 64], -1)
    if fine:
        base[(xx // 2 + yy // 2) % 2 == 0] *= 0.75
    noise = rng.normal(0, 6, (height, width, 1)) if fine else 0
    frames = []
    for t in range(length):
        f = base + noise
        f[(xx - (width // 4 + 3 * t)) ** 2 + (yy - height // 2) ** 2 < (min(height, width) // 6) ** 2] = (240, 40, 30)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _high_freq(frames):
    f = frames.astype(np.float64).mean(-1)
    return np.abs(np.diff(f, axis=1)).mean() + np.abs(np.diff(f, axis=2)).mean()


FIXED = dict(fps=(30, 30), crf=(17, 17), tunes=("film",))


def test_reencoded_clip_differs_keeps_shape_dtype_and_content():
    clip = _clip()
    out = reencode_clip(clip, np.random.default_rng(0))
    assert out.shape == clip.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - clip).mean()
    assert 1 < err < 30, f"mean abs error {err}: the re-encode should degrade, not replace, the clip"
    assert np.corrcoef(out.ravel(), clip.ravel())[0, 1] > 0.9


def test_drawn_parameters_lie_in_their_ranges_and_cover_them():
    rng = np.random.default_rng(1)
    draws = [draw_codec_params(rng) for _ in range(600)]
    fps, scale, crf = (np.array([getattr(d, k) for d in draws]) for k in ("fps", "scale", "crf"))
    assert fps.min() == 15 and fps.max() == 30 and np.issubdtype(fps.dtype, np.integer)
    assert crf.min() == 17 and crf.max() == 40 and np.issubdtype(crf.dtype, np.integer)
    assert 0.25 <= scale.min() < 0.3 and 0.95 < scale.max() <= 1.0
    assert {d.tune for d in draws} == set(X264_TUNES)


def test_reencode_clip_applies_the_draw_that_draw_codec_params_reports():
    clip = _clip(length=4)
    params = draw_codec_params(np.random.default_rng(11))
    assert isinstance(params, CodecParams)
    assert np.array_equal(reencode_clip(clip, np.random.default_rng(11)), apply_codec(clip, params))


def test_quarter_scale_is_blurrier_than_full_scale():
    clip = _clip()
    full = reencode_clip(clip, np.random.default_rng(0), scale=(1.0, 1.0), **FIXED)
    quarter = reencode_clip(clip, np.random.default_rng(0), scale=(0.25, 0.25), **FIXED)
    assert _high_freq(quarter) < 0.6 * _high_freq(full), (_high_freq(quarter), _high_freq(full))
    assert _high_freq(full) > 0.7 * _high_freq(clip)


def test_lower_frame_rate_drops_frames_and_holds_them():
    assert [a.tolist() for a in held_frames(8, 15, 30)] == [[0, 2, 4, 6], [0, 0, 1, 1, 2, 2, 3, 3]]
    assert [a.tolist() for a in held_frames(5, 20, 30)] == [[0, 2, 3], [0, 0, 1, 2, 2]]
    assert [a.tolist() for a in held_frames(4, 30, 25)] == [[0, 1, 2, 3], [0, 1, 2, 3]]  # never above the source
    clip = _clip()
    out = reencode_clip(clip, np.random.default_rng(0), fps=(15, 15), scale=(1.0, 1.0), crf=(17, 17))
    assert all(np.array_equal(out[2 * k], out[2 * k + 1]) for k in range(4))
    assert not np.array_equal(out[0], out[2])


def test_scaled_size_rule():
    assert scaled_size(64, 64, 0.25) == (16, 16)
    assert scaled_size(64, 64, 0.2) == (16, 16)  # never below 16 px
    assert scaled_size(128, 96, 0.5) == (64, 48)
    assert scaled_size(33, 31, 1.0) == (34, 32)  # nearest even
    assert scaled_size(100, 100, 0.37) == (38, 38)
    odd = _clip(length=3, height=33, width=31)
    assert reencode_clip(odd, np.random.default_rng(0)).shape == odd.shape


def test_same_seed_gives_the_same_bytes():
    clip = _clip()
    a = reencode_clip(clip, np.random.default_rng(7))
    assert a.tobytes() == reencode_clip(clip, np.random.default_rng(7)).tobytes()
    assert a.tobytes() != reencode_clip(clip, np.random.default_rng(8)).tobytes()
    assert encode_clip_mp4(clip) == encode_clip_mp4(clip)


def test_bytes_do_not_depend_on_ffmpegs_simd_paths(monkeypatch):
    clip = _clip(length=4)
    expected = reencode_clip(clip, np.random.default_rng(2)), encode_clip_mp4(clip)
    run = codec._run
    monkeypatch.setattr(codec, "_run", lambda stream, data, what: run(stream.global_args("-cpuflags", "0"), data, what))
    assert np.array_equal(reencode_clip(clip, np.random.default_rng(2)), expected[0])
    assert encode_clip_mp4(clip) == expected[1]


@pytest.mark.parametrize("shape", [(8, 64, 64), (1, 64, 64), (3, 65, 63)], ids=["yuv420p", "one-frame", "odd-yuv444p"])
def test_mp4_round_trip_keeps_frames_and_size(shape):
    clip = _clip(*shape, fine=False)
    data = encode_clip_mp4(clip)
    assert isinstance(data, bytes) and data[4:8] == b"ftyp"
    back = decode_clip_mp4(np.frombuffer(data, np.uint8))  # as stored in a shard
    assert back.shape == clip.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - clip).mean() < 4.0  # measured 2.5 to 3.3 at the default CRF 18
    assert np.array_equal(decode_clip_mp4(data), back)


def test_lower_crf_is_closer_and_bigger():
    clip = _clip()
    lo, hi = encode_clip_mp4(clip, crf=10), encode_clip_mp4(clip, crf=35)
    err = lambda d: np.abs(decode_clip_mp4(d).astype(int) - clip).mean()  # noqa: E731
    assert len(lo) > len(hi) and err(lo) < err(hi)


def test_errors_are_clear():
    clip = _clip(length=2)
    with pytest.raises(ValueError, match="uint8"):
        reencode_clip(clip.astype(np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown x264 tune"):
        reencode_clip(clip, np.random.default_rng(0), tunes=("cartoon",))
    with pytest.raises(ValueError, match="scale"):
        reencode_clip(clip, np.random.default_rng(0), scale=(0.5, 2.0))
    with pytest.raises(CodecError, match=r"fps=20, scale=0.500 \(32x32\), crf=30, tune=film"):
        apply_codec(clip, CodecParams(fps=20, scale=0.5, crf=30, tune="film"), preset="no-such-preset")
    with pytest.raises(CodecError, match="decode an MP4 clip of 9 bytes"):
        decode_clip_mp4(b"not a mp4")
    with pytest.raises(CodecError, match="empty"):
        decode_clip_mp4(b"")
