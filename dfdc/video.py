"""Decode, probe and encode videos.

Decoding uses FFmpeg through PyAV (selectively: only what the wanted frames need); encoding pipes raw frames into the
static ffmpeg binary shipped with imageio-ffmpeg (libx264). Frames are RGB
uint8 arrays of shape (H, W, 3).
"""
from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

log = logging.getLogger("dfdc.video")


class VideoError(RuntimeError):
    """A video cannot be read or written."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int


def library_logs(verbose: bool = False) -> None:
    """FFmpeg's (through PyAV) and OpenCV's own log lines: warnings and worse with ``verbose``, else none (a
    bad file's reason goes into its row, in words; the libraries' lines would only break the progress bars)."""
    import av.logging

    av.logging.set_level(av.logging.WARNING if verbose else None)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING if verbose
                                  else cv2.utils.logging.LOG_LEVEL_SILENT)


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


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: zero-byte file")
    if image_format(path) is not None:
        raise VideoError(f"{path}: a {image_format(path)} image, not a video")


@contextmanager
def _opened(path: str | Path) -> Iterator[tuple["av.container.InputContainer", "av.video.stream.VideoStream"]]:
    """The container and its first video stream, set to decode on one thread (the processes are the
    parallelism); raises VideoError with the reason when the file is not a readable video."""
    import av

    path = Path(path)
    _check_file(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"{path}: {diagnose(path)}") from e
    try:
        if not container.streams.video:
            raise VideoError(f"{path}: {diagnose(path)}")
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = 1
        yield container, stream
    finally:
        container.close()


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


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO-BMFF boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = int.from_bytes(data[start:start + 4], "big"), data[start + 4:start + 8]
        head = 8
        if size == 1 and start + 16 <= end:
            size, head = int.from_bytes(data[start + 8:start + 16], "big"), 16
        elif size == 0:
            size = end - start
        if size < head:
            return
        yield kind, start + head, min(start + size, end)
        start += size


def _moov(path: Path) -> bytes:
    """The ``moov`` box of an MP4 / MOV file (b"" when there is none), reading only box headers and it."""
    with open(path, "rb") as f:
        pos, total = 0, os.fstat(f.fileno()).st_size
        while pos + 8 <= total:
            f.seek(pos)
            head = f.read(16)
            size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if size == 1:
                size = int.from_bytes(head[8:16], "big")
            elif size == 0:
                size = total - pos
            if size < 8:
                return b""
            if kind == b"moov":
                f.seek(pos)
                return f.read(min(size, 64 << 20))
            pos += size
    return b""


def _quarter_turned(path: Path) -> bool:
    """Whether an MP4 / MOV file's video track is shown turned a quarter (its ``tkhd`` matrix), which swaps the
    shown width and height; read from the header, decoding nothing. False for other containers."""
    try:
        moov = _moov(path)
    except OSError:
        return False
    for kind, s, e in _boxes(moov, 8):
        if kind != b"trak":
            continue
        inner = {k: (a, b) for k, a, b in _boxes(moov, s, e)}
        mdia = inner.get(b"mdia")
        hdlr = next(((a, b) for k, a, b in _boxes(moov, *mdia) if k == b"hdlr"), None) if mdia else None
        if b"tkhd" not in inner or hdlr is None or moov[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
            continue
        a0 = inner[b"tkhd"][0]
        matrix = a0 + (52 if moov[a0] == 1 else 40)  # after version/flags, times, ids, duration, layer, volume
        a, b = (int.from_bytes(moov[matrix + 4 * i:matrix + 4 * i + 4], "big", signed=True) for i in (0, 1))
        return abs(b) > abs(a)
    return False


@dataclass
class _Packets:
    """A stream's packets in decode order and each one's place in presentation order (None: shown never)."""

    packets: list
    order: list[int | None]
    by_pts: dict[int, int]
    error: str  # why the walk stopped before the end of the file ("" when it did not)

    @property
    def frames(self) -> int:
        return len(self.by_pts)


def _walk(container, stream) -> _Packets:
    """Every packet of ``stream``, without decoding; the frame index of each from its presentation time.
    Without usable timestamps (missing or repeated) ``by_pts`` stays empty and ``order`` all None."""
    import av

    packets, error = [], ""
    try:
        for packet in container.demux(stream):
            if packet.size:
                packets.append(packet)
    except (av.error.FFmpegError, OSError) as e:
        error = f"unreadable after {len(packets)} packets ({type(e).__name__})"
    pts = [p.pts for p in packets if not p.is_discard]
    if any(t is None for t in pts) or len(set(pts)) != len(pts):
        return _Packets(packets, [None] * len(packets), {}, error)
    by_pts = {t: i for i, t in enumerate(sorted(pts))}
    return _Packets(packets, [None if p.is_discard else by_pts[p.pts] for p in packets], by_pts, error)


def probe(path: str | Path, verify: bool = True) -> VideoInfo:
    """Frame count, fps and size (as shown, after any rotation) from the container, decoding nothing.

    ``verify`` walks every packet (no decoding): the frame count is then the
    number of frames the file really holds, and a file that holds fewer than its
    header says, or whose packets cannot be read to the end, raises VideoError
    ("truncated ..."). Without it the count is the header's, where it has one.
    """
    with _opened(path) as (container, stream):
        cc = stream.codec_context
        width, height = (cc.height, cc.width) if _quarter_turned(Path(path)) else (cc.width, cc.height)
        fps = _fps(stream)
        frames = int(stream.frames or 0)
        if verify or not frames:  # a header without a count (Matroska, WebM): the packets say it
            walk = _walk(container, stream)
            if walk.error or (frames and len(walk.packets) < frames):
                said = f" of the {frames} its header lists" if frames else ""
                raise VideoError(f"{path}: truncated or corrupt video: {len(walk.packets)} frames{said} in the file"
                                 + (f", {walk.error}" if walk.error else ""))
            frames = walk.frames or len(walk.packets)
        if frames <= 0 or width <= 0 or height <= 0:
            raise VideoError(f"{path}: {diagnose(path) if frames <= 0 else f'frames of size {width}x{height}'}")
        return VideoInfo(frames=frames, fps=fps, width=width, height=height)


# Codecs whose decoders honour "skip the frames no other frame refers to" exactly (tested bit for bit).
_SKIPS_NONREF = frozenset({"h264"})


# swscale's flags for the conversion to RGB: SWS_POINT | SWS_ACCURATE_RND | SWS_BITEXACT. Without the last
# two its SIMD code rounds otherwise than its C code, so the same video gave other RGB frames (and crops) on
# another CPU; with them the frames are the same with FFmpeg's SIMD on or off (tests/test_video_io.py), and
# they are its C code's frames: within 3 levels of the SIMD conversion (bilinear or bicubic instead of
# point would also resample the chroma: up to 34 and 71 levels away). 5.2 ms per 1080p frame against 1.9.
SWS_EXACT = 0x10 | 0x40000 | 0x80000


def _rgb(frame) -> np.ndarray:
    """The frame as RGB, shown as its display matrix says (turned by quarters, as OpenCV shows it)."""
    rgb = frame.to_ndarray(format="rgb24", interpolation=SWS_EXACT)
    turn = frame.rotation
    if turn % 360 == 90:
        return cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if turn % 360 == 270:
        return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
    if turn % 360 == 180:
        return cv2.rotate(rgb, cv2.ROTATE_180)
    return rgb


def decode_frames(path: str | Path, indices: Iterable[int] | None = None,
                  stats: dict[str, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, RGB frame)`` for each wanted frame of a video (all when ``indices`` is None), in order.

    Decoding is selective: the packets are read first (no decoding), so every
    packet's frame index is known from its timestamp; on H.264 a packet whose
    frame is not wanted is decoded only when other frames refer to it (FFmpeg's
    ``skip_frame`` = NONREF), and only wanted frames are converted to RGB. The
    wanted frames are bit-identical to a full decode's. One decoder thread.
    Frames past the end of the stream are simply absent. ``stats``, when given,
    receives ``frames`` (the frames the file holds) and ``decoded`` (the frames
    the decoder made). Raises VideoError when the file cannot be opened.
    """
    import av

    wanted = None if indices is None else {int(i) for i in indices}
    stats = {} if stats is None else stats
    with _opened(path) as (container, stream):
        walk = _walk(container, stream)
        stats.update(frames=walk.frames or len(walk.packets), decoded=0)
        if wanted is not None and not wanted:
            return
        cc = stream.codec_context
        by_pts = walk.by_pts
        skip = wanted is not None and bool(by_pts) and cc.name in _SKIPS_NONREF
        left = None if wanted is None else len(wanted & set(range(walk.frames))) if by_pts else len(wanted)
        shown = 0  # frames output so far: the index when timestamps cannot say it

        def out(frames) -> Iterator[tuple[int, np.ndarray]]:
            nonlocal shown, left
            for frame in frames:
                stats["decoded"] += 1
                i = by_pts.get(frame.pts, -1) if by_pts else shown
                shown += 1
                if wanted is None or i in wanted:
                    if left is not None:
                        left -= 1
                    yield i, _rgb(frame)

        try:
            for packet, i in zip(walk.packets, walk.order):
                if left is not None and left <= 0:
                    return
                if skip:
                    cc.skip_frame = "DEFAULT" if i in wanted else "NONREF"
                try:
                    frames = cc.decode(packet)
                except av.error.InvalidDataError:
                    continue  # a damaged packet: its frame is absent, the decoder goes on
                yield from out(frames)
            if left is None or left > 0:
                cc.skip_frame = "DEFAULT"
                yield from out(cc.decode(None))
        except av.error.FFmpegError as e:
            log.debug("%s: decoding stopped: %s", path, e)


def read_frames(path: str | Path, indices: Sequence[int] | None = None) -> tuple[dict[int, np.ndarray], int]:
    """The frames at ``indices`` (all when None), by :func:`decode_frames`: ({index: RGB frame}, frames in the
    file). Frames past the end of the stream are simply absent; a file that cannot be opened raises VideoError."""
    stats: dict[str, int] = {}
    frames = dict(decode_frames(path, indices, stats))
    return frames, stats.get("frames", 0)


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of a video in order, as RGB, decoded one at a time (constant memory)."""
    for _, frame in decode_frames(path):
        yield frame


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
