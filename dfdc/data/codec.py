"""H.264 codec augmentation of clips (NTech, 3rd place) and clip storage as MP4 bytes.

Every ffmpeg run goes through pipes, with commands built by ffmpeg-python around
the binary :func:`dfdc.video.ffmpeg_exe` finds: raw YUV frames in, a raw H.264
stream (:func:`reencode_clip`) or a fragmented MP4 (:func:`encode_clip_mp4`,
readable from a pipe and by any FFmpeg-based reader) out, and YUV4MPEG back from
the decoder. No temporary files.

The same input and draws give the same bytes on any machine: the colour
conversions (BT.601 limited range) are integer numpy code, resizing is Pillow's
fixed-point bicubic, and x264 runs with a fixed thread count and instruction set (its `asm` option, pinned by
`x264_options`). ffmpeg's own swscale conversions and scalers take CPU-specific SIMD paths and are not used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import ffmpeg
import numpy as np
from PIL import Image

from dfdc.video import X264_THREADS, VideoError, ffmpeg_exe, rgb_to_yuv420p, x264_options

X264_TUNES = ("film", "animation", "grain", "stillimage", "fastdecode", "zerolatency", "psnr", "ssim")
MIN_SIDE = 16
MP4_CRF = 18


class CodecError(VideoError):
    """ffmpeg failed to encode or decode a clip."""


@dataclass(frozen=True)
class CodecParams:
    """One draw of the codec augmentation: the re-encode's frame rate, size factor, CRF and x264 tune."""

    fps: int
    scale: float
    crf: int
    tune: str | None


def _check_range(name: str, bounds: Sequence[float], lowest: float, highest: float) -> tuple[float, float]:
    if len(bounds) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {bounds!r}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lowest <= lo <= hi <= highest:
        raise ValueError(f"{name} must satisfy {lowest} <= low <= high <= {highest}, got {tuple(bounds)!r}")
    return lo, hi


def draw_codec_params(rng: np.random.Generator, *, fps: Sequence[int] = (15, 30),
                      scale: Sequence[float] = (0.25, 1.0), crf: Sequence[int] = (17, 40),
                      tunes: Sequence[str | None] = X264_TUNES) -> CodecParams:
    """Draw fps (integer, both ends included), scale (uniform), CRF (integer, both ends included) and a tune.

    The draws are made in that order, one value each, from ``rng``. ``None`` among
    ``tunes`` stands for x264's default (no ``-tune``).
    """
    f_lo, f_hi = _check_range("fps", fps, 1, 240)
    s_lo, s_hi = _check_range("scale", scale, 1e-3, 1.0)
    c_lo, c_hi = _check_range("crf", crf, 0, 51)
    if not tunes:
        raise ValueError("tunes must name at least one x264 tune")
    bad = [t for t in tunes if t is not None and t not in X264_TUNES]
    if bad:
        raise ValueError(f"unknown x264 tune(s) {bad}; valid: {', '.join(X264_TUNES)} (or None for no tune)")
    f_lo, f_hi = int(np.ceil(f_lo)), int(np.floor(f_hi))
    if f_lo > f_hi:
        raise ValueError(f"fps range {tuple(fps)!r} holds no whole frame rate")
    c_lo, c_hi = int(np.ceil(c_lo)), int(np.floor(c_hi))
    if c_lo > c_hi:
        raise ValueError(f"crf range {tuple(crf)!r} holds no whole CRF value")
    return CodecParams(
        fps=int(rng.integers(f_lo, f_hi + 1)),
        scale=float(rng.uniform(s_lo, s_hi)),
        crf=int(rng.integers(c_lo, c_hi + 1)),
        tune=tunes[int(rng.integers(len(tunes)))],
    )


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Encoded (height, width): each side times ``scale``, rounded to the nearest even number, at least 16 px."""
    h, w = (max(MIN_SIDE, 2 * int(side * scale / 2 + 0.5)) for side in (height, width))
    return h, w


def held_frames(length: int, fps: float, source_fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame-rate reduction of a ``length``-frame clip at ``source_fps`` to ``fps`` (never above the source).

    Returns (kept, shown): the source frames the lower rate keeps, in order, and for
    each of the ``length`` source instants the kept frame on screen then (sample and hold).
    """
    rate = min(float(fps), float(source_fps))
    shown = np.floor(np.arange(length) * rate / source_fps + 1e-9).astype(np.int64)
    _, kept = np.unique(shown, return_index=True)
    return kept, shown


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC))
                     for f in frames])


def _rgb_to_yuv444p(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range Y, U, V planes at full size, flat uint8 (same coefficients as ``rgb_to_yuv420p``)."""
    p = np.asarray(frame, np.int32)
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = ((112 * b - 38 * r - 74 * g + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).astype(np.uint8)


def _upsample_chroma(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 4:2:0 chroma plane at full size, bilinear about each 2x2 block's centre (weights 9, 3, 3, 1 / 16), int32."""
    p = np.pad(plane.astype(np.int32), 1, mode="edge")
    near, up, down = p[1:-1], p[:-2], p[2:]
    rows = np.stack([3 * near + up, 3 * near + down], axis=1).reshape(-1, p.shape[1])  # (2h, w + 2), x4
    near, left, right = rows[:, 1:-1], rows[:, :-2], rows[:, 2:]
    full = np.stack([3 * near + left, 3 * near + right], axis=2).reshape(rows.shape[0], -1)  # x16
    return ((full + 8) >> 4)[:height, :width]


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """BT.601 limited-range planes -> RGB (H, W, 3) uint8, in integer arithmetic."""
    h, w = y.shape
    u, v = u.astype(np.int32), v.astype(np.int32)
    if u.shape != y.shape:
        u, v = _upsample_chroma(u, h, w), _upsample_chroma(v, h, w)
    c = 298 * (y.astype(np.int32) - 16) + 128
    d, e = u - 128, v - 128
    rgb = np.stack([c + 409 * e, c - 100 * d - 208 * e, c + 516 * d], axis=-1) >> 8
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _parse_y4m(data: bytes) -> np.ndarray:
    """A YUV4MPEG2 stream (4:2:0 or 4:4:4, 8 bit) -> RGB frames (T, H, W, 3)."""
    end = data.find(b"\n")
    if not data.startswith(b"YUV4MPEG2 ") or end < 0:
        raise CodecError("ffmpeg's decoder output is not a YUV4MPEG2 stream")
    fields = {f[:1]: f[1:] for f in data[:end].split(b" ")[1:] if f}
    width, height = int(fields[b"W"]), int(fields[b"H"])
    chroma = fields.get(b"C", b"420jpeg").decode()
    if chroma in ("420", "420jpeg", "420mpeg2", "420paldv"):
        ch, cw = (height + 1) // 2, (width + 1) // 2
    elif chroma == "444":
        ch, cw = height, width
    else:
        raise CodecError(f"decoded clip has chroma format {chroma}; only 4:2:0 and 4:4:4 (8 bit) are read")
    size = height * width + 2 * ch * cw
    frames, pos = [], end + 1
    while pos < len(data):
        header_end = data.find(b"\n", pos)
        if not data.startswith(b"FRAME", pos) or header_end < 0 or header_end + 1 + size > len(data):
            raise CodecError(f"decoded stream is cut or malformed after {len(frames)} frames")
        planes = np.frombuffer(data, np.uint8, size, header_end + 1)
        y = planes[:height * width].reshape(height, width)
        u = planes[height * width:height * width + ch * cw].reshape(ch, cw)
        v = planes[height * width + ch * cw:].reshape(ch, cw)
        frames.append(_yuv_to_rgb(y, u, v))
        pos = header_end + 1 + size
    if not frames:
        raise CodecError("the decoded clip has no frames")
    return np.stack(frames)


def _run(stream: ffmpeg.nodes.OutputStream, data: bytes, what: str) -> bytes:
    try:
        out, _ = stream.global_args("-hide_banner", "-loglevel", "error").run(
            cmd=ffmpeg_exe(), input=data, capture_stdout=True, capture_stderr=True, quiet=True)
    except ffmpeg.Error as e:
        detail = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        raise CodecError(f"ffmpeg failed to {what}: {detail[-1] if detail else 'no message'}") from None
    except OSError as e:
        raise CodecError(f"ffmpeg cannot be started to {what}: {e}") from None
    return out


def _encode(yuv: bytes, pix_fmt: str, height: int, width: int, fps: float, fmt: str, *, crf: int, preset: str,
            tune: str | None, threads: int, what: str, **out_args: str) -> bytes:
    options = {"format": fmt, "vcodec": "libx264", "crf": crf, "preset": preset, "threads": threads,
               **x264_options(), **out_args}
    if tune is not None:
        options["tune"] = tune
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt=pix_fmt, s=f"{width}x{height}",
                          framerate=f"{fps:g}").output("pipe:", **options)
    return _run(stream, yuv, what)


def _decode(data: bytes, fmt: str, what: str) -> np.ndarray:
    stream = ffmpeg.input("pipe:", format=fmt, threads=1).output("pipe:", format="yuv4mpegpipe",
                                                                 fps_mode="passthrough")
    return _parse_y4m(_run(stream, data, what))


def _check_clip(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise ValueError(f"a clip is a non-empty uint8 (T, H, W, 3) array, got {frames.dtype} {frames.shape}")
    return frames


def apply_codec(frames: np.ndarray, params: CodecParams, *, source_fps: float = 30.0, preset: str = "veryfast",
                threads: int = X264_THREADS) -> np.ndarray:
    """Re-encode a clip (T, H, W, 3) uint8 with ``params``; returns the decoded clip, same shape and dtype.

    The kept frames (:func:`held_frames`) are resized to :func:`scaled_size`, encoded
    as yuv420p H.264 at ``params.fps``, decoded, resized back and held to T frames.
    """
    frames = _check_clip(frames)
    if not source_fps > 0:
        raise ValueError(f"source_fps must be > 0, got {source_fps}")
    length, height, width = frames.shape[:3]
    kept, shown = held_frames(length, params.fps, source_fps)
    h, w = scaled_size(height, width, params.scale)
    small = _resize(frames[kept], h, w)
    yuv = b"".join(rgb_to_yuv420p(f).tobytes() for f in small)
    rate = min(float(params.fps), float(source_fps))
    what = (f"re-encode a {length}x{height}x{width} clip with fps={params.fps}, scale={params.scale:.3f} "
            f"({w}x{h}), crf={params.crf}, tune={params.tune}")
    stream = _encode(yuv, "yuv420p", h, w, rate, "h264", crf=params.crf, preset=preset, tune=params.tune,
                     threads=threads, what=what)
    decoded = _decode(stream, "h264", what)
    if decoded.shape != (len(kept), h, w, 3):
        raise CodecError(f"ffmpeg returned frames of shape {decoded.shape} instead of {(len(kept), h, w, 3)} "
                         f"when trying to {what}")
    return np.ascontiguousarray(_resize(decoded, height, width)[shown])


def reencode_clip(frames: np.ndarray, rng: np.random.Generator, *, fps: Sequence[int] = (15, 30),
                  scale: Sequence[float] = (0.25, 1.0), crf: Sequence[int] = (17, 40),
                  tunes: Sequence[str | None] = X264_TUNES, source_fps: float = 30.0,
                  preset: str = "veryfast") -> np.ndarray:
    """NTech's codec augmentation: re-encode a clip with parameters drawn from ``rng``.

    ``apply_codec(frames, draw_codec_params(rng, ...))``: call the two yourself to
    see or log the draw. The same rng state gives the same output bytes.
    """
    params = draw_codec_params(rng, fps=fps, scale=scale, crf=crf, tunes=tunes)
    return apply_codec(frames, params, source_fps=source_fps, preset=preset)


def encode_clip_mp4(frames: np.ndarray, crf: int = MP4_CRF, fps: float = 30.0, *, preset: str = "veryfast",
                    tune: str | None = None, threads: int = X264_THREADS) -> bytes:
    """A clip (T, H, W, 3) uint8 as H.264 fragmented-MP4 bytes (yuv420p; yuv444p when a side is odd)."""
    frames = _check_clip(frames)
    length, height, width = frames.shape[:3]
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    even = height % 2 == 0 and width % 2 == 0
    convert = rgb_to_yuv420p if even else _rgb_to_yuv444p
    yuv = b"".join(convert(f).tobytes() for f in frames)
    what = f"encode a {length}x{height}x{width} clip as MP4 with crf={crf}, fps={fps:g}, tune={tune}"
    return _encode(yuv, "yuv420p" if even else "yuv444p", height, width, fps, "mp4", crf=crf, preset=preset,
                   tune=tune, threads=threads, what=what, movflags="frag_keyframe+empty_moov+default_base_moof",
                   fflags="+bitexact")


def decode_clip_mp4(data: bytes | np.ndarray) -> np.ndarray:
    """MP4 bytes (or a uint8 array of them, as stored in a shard) -> the clip (T, H, W, 3) uint8."""
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if not raw:
        raise CodecError("cannot decode an empty MP4 clip (zero bytes)")
    return _decode(raw, "mp4", f"decode an MP4 clip of {len(raw)} bytes")
