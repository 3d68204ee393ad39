"""Decode, probe and encode videos.

Decoding uses OpenCV's bundled FFmpeg; encoding pipes raw frames into the
static ffmpeg binary shipped with imageio-ffmpeg (libx264). Frames are RGB
uint8 arrays of shape (H, W, 3).
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np


class VideoError(RuntimeError):
    """A video cannot be read or written."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int


def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary: imageio-ffmpeg's bundled one, else the system's."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - fall back to PATH
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise VideoError("no ffmpeg found: install imageio-ffmpeg or Debian's ffmpeg") from None
        return exe


def _open(path: str | Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: zero-byte file")
    if image_format(path) is not None:
        raise VideoError(f"{path}: a {image_format(path)} image, not a video")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: {diagnose(path)}")
    return cap


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))


def image_format(path: str | Path) -> str | None:
    """``"PNG"``, ``"JPEG"``, ``"WEBP"`` or ``"BMP"`` when the file's first bytes say it is that image, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)


def read_image(path: str | Path) -> np.ndarray:
    """A still image as one RGB frame (EXIF orientation applied); raises VideoError when it cannot be decoded."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise VideoError(f"{path}: {image_format(path) or 'image'} file cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def diagnose(path: str | Path) -> str:
    """Why a file that OpenCV cannot read as video is not one, in words (asks ffmpeg about its streams)."""
    try:
        out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                             text=True, errors="replace", timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired, VideoError) as e:
        return f"cannot be read as video ({type(e).__name__})"
    streams = re.findall(r"Stream #\S+: (\w+): (\w+)", out)  # [(kind, codec)]
    kinds = {kind for kind, _ in streams}
    if streams and "Video" not in kinds:
        what = "audio-only" if kinds == {"Audio"} else "/".join(sorted(kinds)).lower() + "-only"
        return f"no video stream: an {what} file ({', '.join(codec for _, codec in streams)})"
    if "Invalid data found when processing input" in out:
        return "not a video or image file: ffmpeg does not recognise its contents"
    if "End of file" in out or "error reading header" in out or "moov atom not found" in out:
        return "truncated or corrupt video: its header cannot be read"
    errors = [line.strip() for line in out.splitlines() if "rror" in line]
    return f"cannot be read as video ({errors[-1]})" if errors else "cannot be read as video"


def probe(path: str | Path, verify: bool = True) -> VideoInfo:
    """Frame count, fps and size from the container; ``verify`` decodes the first and last frame."""
    cap = _open(path)
    try:
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if frames <= 0 or width <= 0 or height <= 0:
            raise VideoError(f"{path}: {diagnose(path) if frames <= 0 else f'frames of size {width}x{height}'}")
        if verify:
            ok, frame = cap.read()
            if not ok or frame is None:
                raise VideoError(f"{path}: first frame cannot be decoded")
            height, width = frame.shape[:2]  # after any rotation metadata
            if frames > 1:
                cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
                ok, _ = cap.read()
                # a cut file can decode *some* frame after the seek; the position tells
                if not ok or int(cap.get(cv2.CAP_PROP_POS_FRAMES)) < frames:
                    raise VideoError(f"{path}: truncated: frame {frames - 1} of {frames} cannot be decoded")
        return VideoInfo(frames=frames, fps=fps, width=width, height=height)
    finally:
        cap.release()


def read_frames(path: str | Path, indices: Sequence[int] | None = None) -> tuple[dict[int, np.ndarray], int]:
    """Decode the frames at ``indices`` (all when None) in one sequential pass.

    Returns ({index: RGB frame}, frames decoded). Frames past the end of the
    stream are simply absent; a file that cannot be opened raises VideoError.
    Skipped frames are grabbed but not converted, which is the cheap path.
    """
    cap = _open(path)
    wanted = None if indices is None else set(int(i) for i in indices)
    last = None if wanted is None else (max(wanted) if wanted else -1)
    out: dict[int, np.ndarray] = {}
    i = 0
    try:
        while last is None or i <= last:
            if not cap.grab():
                break
            if wanted is None or i in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    out[i] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()
    return out, i


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of a video in order, as RGB, decoded one at a time (constant memory)."""
    cap = _open(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def sample_indices(frames: int, every: int | None = None, count: int | None = None) -> list[int]:
    """Every ``every``-th frame, or ``count`` frames spread evenly over the video."""
    if frames <= 0:
        return []
    if every is not None:
        return list(range(0, frames, every))
    if count is None or count >= frames:
        return list(range(frames))
    return sorted(set(np.linspace(0, frames - 1, count).round().astype(int).tolist()))


X264_THREADS = 1
# x264 picks its SIMD functions from the CPU it runs on, and some of them (float paths in the
# lookahead) round differently, so its output bytes change with the CPU. Every x86-64 CPU has SSE2:
# pinned to it, the same frames give the same file on any x86-64 machine (docs: reproducibility).
X264_ASM: str | None = "SSE2" if platform.machine().lower() in ("x86_64", "amd64") else None


def x264_options() -> dict[str, str]:
    """ffmpeg output options that pin x264's instruction set to ``X264_ASM`` (none off x86-64)."""
    return {"x264-params": f"asm={X264_ASM}"} if X264_ASM else {}


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """An RGB frame (H, W, 3), H and W even, as yuv420p planes: Y, then U and V at half size, flat uint8.

    BT.601 limited range in exact integer arithmetic (chroma from each 2x2 block's sum), so the
    same frame gives the same bytes on every CPU; ffmpeg's own conversion takes CPU-specific
    SIMD paths that round differently (rgb24 -> yuv420p changes with ``-cpuflags 0``).
    """
    p = np.asarray(frame, np.uint16)
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    y = (66 * r + 129 * g + 25 * b + 128) >> 8  # < 2**16
    y += 16
    q = (p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]).astype(np.int32)  # 2x2 sums
    qr, qg, qb = q[..., 0], q[..., 1], q[..., 2]
    u = ((112 * qb - 38 * qr - 74 * qg + 512) >> 10) + 128
    v = ((112 * qr - 94 * qg - 18 * qb + 512) >> 10) + 128
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).astype(np.uint8)


def x264_command(out: str | Path, width: int, height: int, fps: float, crf: int = 23, preset: str = "veryfast",
                 tune: str | None = None, threads: int = X264_THREADS) -> list[str]:
    """The ffmpeg command that encodes yuv420p frames from stdin into an H.264 MP4 at ``out``."""
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p",
           "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "-", "-c:v", "libx264", "-preset", preset,
           "-crf", str(crf), "-threads", str(threads), "-movflags", "+faststart"]
    cmd += [a for k, v in x264_options().items() for a in (f"-{k}", v)]
    if tune:
        cmd += ["-tune", tune]
    return cmd + [str(out)]


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = 23,
    preset: str = "veryfast",
    tune: str | None = None,
    threads: int = X264_THREADS,
) -> None:
    """Encode RGB frames as H.264 (yuv420p) MP4, atomically.

    The same frames give the same file on any machine: the colour conversion is
    :func:`rgb_to_yuv420p`'s, and x264, whose output depends on its thread count
    (which it would pick from the machine's cores), runs with ``threads`` fixed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.mp4")
    proc = None
    try:
        for frame in frames:
            if proc is None:
                h, w = frame.shape[:2]
                if h % 2 or w % 2:
                    raise VideoError(f"{path}: H.264 yuv420p needs even size, got {w}x{h}")
                cmd = x264_command(tmp, w, h, fps, crf=crf, preset=preset, tune=tune, threads=threads)
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            elif frame.shape[:2] != (h, w):
                raise VideoError(f"{path}: every frame must be {w}x{h}, got {frame.shape[1]}x{frame.shape[0]}")
            proc.stdin.write(rgb_to_yuv420p(frame).tobytes())
        if proc is None:
            raise VideoError(f"{path}: no frames to write")
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise VideoError(f"{path}: ffmpeg failed: {err.strip()}")
        os.replace(tmp, path)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if tmp.exists():
            tmp.unlink()
