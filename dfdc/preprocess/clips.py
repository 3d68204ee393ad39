"""Face-track clips: windows of consecutive face crops along every face track, real and fake alike, in shards.

For each track of a real video, ``per_track`` windows of ``window`` frames,
``stride`` video frames apart, are spread evenly over the frames the track was
detected on. Each window is cut at one fixed square box (the union of the
track's boxes over the window, plus the detections just before and after it,
with ``margin`` of its size on each side; the Medics) and resized to ``size``. A
fake is cut at its original's windows and boxes, so the clips of one key are
frame-aligned. The `cut` stage (:mod:`dfdc.preprocess.cut`) decodes every video
once, selectively, for its crops and its clips; each frame is cut into the
windows that hold it as it goes by.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pandas as pd

from dfdc.data.codec import encode_clip_mp4
from dfdc.preprocess.chunks import Chunk, chunk_tmp
from dfdc.preprocess.frames import decode_video_frames
from dfdc.store import ShardFile, encode_png, write_parquet
from dfdc.video import VideoError

log = logging.getLogger("dfdc.preprocess")

CLIP_COLUMNS = ["key", "video", "original", "label", "track", "frame", "frames", "stride", "shard", "codec",
                "x1", "y1", "x2", "y2", "edge"]
STATUS_COLUMNS = ["video", "clips", "ok", "error", "short_tracks", "edge_clips", "missing_clips"]


@dataclass(frozen=True)
class Window:
    """One clip's place: a track, its first video frame and its square box (may reach past the frame)."""

    track: int
    start: int
    box: tuple[int, int, int, int]

    def frames(self, length: int, stride: int) -> range:
        return range(self.start, self.start + (length - 1) * stride + 1, stride)


def clip_key(video: str, track: int, start: int) -> str:
    """Key of one clip; a fake's clip and its original's share (track, start)."""
    return f"{video}|{track}|{start:06d}"


def window_starts(first: int, last: int, span: int, count: int) -> list[int]:
    """Up to ``count`` first frames, evenly spread, of windows of ``span`` frames inside [first, last]."""
    room = last - first + 1 - span
    if room < 0:
        return []
    if count == 1:
        return [first + room // 2]
    return sorted(set(int(round(first + room * i / (count - 1))) for i in range(count)))


def square_box(box: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """A square around ``box`` (x1, y1, x2, y2): side = longer side x (1 + 2 margin), same centre."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2))
    s = max(int(np.ceil(side)), 1)
    return left, top, left + s, top + s


def window_box(detections: pd.DataFrame, start: int, end: int, margin: float) -> tuple[int, int, int, int]:
    """Square box of a window [start, end] of one track: its detections inside, and the nearest ones around."""
    f = detections["frame"].to_numpy()
    inside = (f >= start) & (f <= end)
    before, after = f[f < start], f[f > end]
    if len(before):
        inside |= f == before.max()
    if len(after):
        inside |= f == after.min()
    d = detections[inside]
    union = np.array([d["x1"].min(), d["y1"].min(), d["x2"].max(), d["y2"].max()])
    return square_box(union, margin)


def reaches_edge(box: tuple[int, int, int, int], width: int, height: int) -> bool:
    x1, y1, x2, y2 = box
    return x1 < 0 or y1 < 0 or x2 > width or y2 > height


def cut_square(frame: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The pixels of ``frame`` in ``box`` (black outside the frame) resized to ``size`` x ``size``."""
    x1, y1, x2, y2 = box
    h, w = frame.shape[:2]
    out = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = frame[sy1:sy2, sx1:sx2]
    interp = cv2.INTER_AREA if out.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(out, (size, size), interpolation=interp)


def plan_windows(faces: pd.DataFrame, window: int, stride: int, per_track: int,
                 margin: float) -> tuple[list[Window], int]:
    """(windows, tracks shorter than one window) of one video's face detections."""
    span = (window - 1) * stride + 1
    windows, short = [], 0
    for track, d in faces.groupby("track", sort=True):
        d = d.sort_values("frame")
        starts = window_starts(int(d["frame"].min()), int(d["frame"].max()), span, per_track)
        if not starts:
            short += 1
        windows += [Window(int(track), s, window_box(d, s, s + span - 1, margin)) for s in starts]
    return windows, short


@dataclass
class _Job:
    video: str
    path: str
    label: int
    source: str
    ok: bool
    error: str
    windows: list[Window] = field(default_factory=list)
    short: int = 0
    degradation: str = ""  # a degraded holdout video: its source at ``path`` degraded to width x height
    width: int = 0
    height: int = 0


class WindowCut:
    """The windows of one video, cut from its frames as they are decoded (:func:`feed_frames`)."""

    def __init__(self, windows: list[Window], window: int, stride: int, size: int) -> None:
        self.windows, self.window = windows, window
        self.need: dict[int, list[tuple[Window, int]]] = {}
        for win in windows:
            for t, i in enumerate(win.frames(window, stride)):
                self.need.setdefault(i, []).append((win, t))
        self.size = size
        self.buffers = {win: np.zeros((window, size, size, 3), np.uint8) for win in windows}
        self.filled = {win: 0 for win in windows}
        self.wh = (0, 0)

    def take(self, index: int, frame: np.ndarray) -> None:
        """Cut frame ``index`` into every window that holds it."""
        self.wh = (frame.shape[1], frame.shape[0])
        for win, t in self.need.get(index, ()):
            self.buffers[win][t] = cut_square(frame, win.box, self.size)
            self.filled[win] += 1

    def cut(self) -> dict[Window, np.ndarray]:
        """{window: (T, size, size, 3)} of the windows whose frames all came (not those past the video's end)."""
        return {win: self.buffers[win] for win in self.windows if self.filled[win] == self.window}


def cut_clips(video: Any, windows: list[Window], window: int, stride: int,
              size: int) -> tuple[dict[Window, np.ndarray], tuple[int, int]]:
    """Decode the frames of ``video`` (a path, an index row: see :func:`decode_video_frames`, or its frames
    (T, H, W, 3) in memory) that the windows hold, once, and cut every window: ({window: (T, size, size, 3)},
    (width, height)).

    A window whose frames run past the end of the video is left out; a video that cannot be read raises
    VideoError.
    """
    cutter = WindowCut(windows, window, stride, size)
    if isinstance(video, np.ndarray):
        frames = ((i, video[i]) for i in sorted(cutter.need) if i < len(video))
    else:
        row = SimpleNamespace(path=video) if isinstance(video, (str, Path)) else video
        frames = decode_video_frames(row, cutter.need)
    for i, frame in frames:
        cutter.take(i, frame)
    return cutter.cut(), cutter.wh


class ClipCut:
    """One video's clips at its original's windows, cut as its frames are decoded, then encoded."""

    def __init__(self, job: _Job, window: int, stride: int, size: int, codec: str, crf: int, fps: float) -> None:
        self.job, self.window, self.stride, self.codec, self.crf, self.fps = job, window, stride, codec, crf, fps
        self.reason = ""
        if not job.ok:
            self.reason = f"not ok in index: {job.error}"
        elif not job.windows:
            self.reason = ("original has no faces" if job.source != job.video else "no face") if not job.short else \
                f"every face track is shorter than one window ({(window - 1) * stride + 1} frames)"
        self.cutter = WindowCut([] if self.reason else job.windows, window, stride, size)
        self.need = self.cutter.need

    def take(self, index: int, frame: np.ndarray) -> None:
        self.cutter.take(index, frame)

    def result(self, error: str = "") -> tuple[_Job, list[tuple[dict, Any]], int, str]:
        """(job, [(clip row, MP4 bytes or PNG frames)], windows missing, why); ``error``: why the decode failed."""
        job = self.job
        if self.reason or error:
            return job, [], 0, self.reason or error
        out = []
        try:
            cut, (w, h) = self.cutter.cut(), self.cutter.wh
            for win in job.windows:
                if win not in cut:
                    continue
                meta = {"key": clip_key(job.video, win.track, win.start), "video": job.video,
                        "original": job.source, "label": job.label, "track": win.track, "frame": win.start,
                        "frames": self.window, "stride": self.stride, "codec": self.codec, "x1": win.box[0],
                        "y1": win.box[1], "x2": win.box[2], "y2": win.box[3], "edge": reaches_edge(win.box, w, h)}
                data = encode_clip_mp4(cut[win], crf=self.crf, fps=self.fps) if self.codec == "mp4" else \
                    [encode_png(f) for f in cut[win]]
                out.append((meta, data))
        except VideoError as e:  # an encode that fails loses the video's clips, never the stage
            return job, [], 0, str(e)
        except Exception as e:  # noqa: BLE001 - one bad video never stops the stage
            return job, [], 0, f"{type(e).__name__}: {e}"
        missing = len(job.windows) - len(out)
        why = f"shorter than its original: {missing} of {len(job.windows)} windows run past its end" \
            if missing and job.source != job.video else \
            (f"{missing} of {len(job.windows)} windows run past the end of the video" if missing else "")
        return job, out, missing, why


def clip_jobs(unit: dict, opts: dict) -> list[tuple[_Job, float]]:
    """The (job, fps) of every video of a unit (:func:`~dfdc.preprocess.crops.source_units`), at its original's
    windows."""
    wins, short = plan_windows(unit["boxes"], opts["window"], opts["stride"], opts["per_track"],
                               opts["margin"]) if unit["boxes"] is not None else ([], 0)
    jobs = []
    for v in unit["videos"]:
        error = v["error"] if isinstance(v["error"], str) else ""
        degraded = v.get("degradation") if isinstance(v.get("degradation"), str) else ""
        jobs.append((_Job(v["video"], v["path"], int(v["label"]), unit["source"], bool(v["ok"]), error, wins, short,
                          degraded, int(v["width"]), int(v["height"])), unit["fps"] or 30.0))
    return jobs


class ClipShard:
    """A chunk's clips shard (``<chunk>.npz``) and tables, filled one video at a time."""

    def __init__(self, chunk: Chunk, directory: Path, codec: str) -> None:
        self.chunk, self.codec = chunk, codec
        self.files = {"npz": chunk_tmp(directory, chunk, "npz"),
                      "clips.parquet": chunk_tmp(directory, chunk, "clips.parquet"),
                      "status.parquet": chunk_tmp(directory, chunk, "status.parquet")}
        self.out = ShardFile(self.files["npz"])
        self.rows: list[dict] = []
        self.status: list[dict] = []

    def add(self, result: tuple[_Job, list[tuple[dict, Any]], int, str]) -> None:
        """One video's :meth:`ClipCut.result`."""
        from dfdc.data.clips import frame_key

        job, clips, missing, error = result
        for meta, data in clips:
            if self.codec == "mp4":
                self.out.add(meta["key"], np.frombuffer(data, np.uint8))
            else:
                for t, png in enumerate(data):
                    self.out.add(frame_key(meta["key"], t), png)
            meta["shard"] = f"{self.chunk.name}.npz"
            self.rows.append(meta)
        if error:
            log.warning("clips: %s: %s", job.video, error)
        self.status.append({"video": job.video, "clips": len(clips), "ok": bool(clips), "error": error,
                            "short_tracks": job.short, "edge_clips": sum(m["edge"] for m, _ in clips),
                            "missing_clips": missing})

    def close(self) -> dict[str, Path]:
        """Finish the files; returns them (suffix -> temporary path) for the chunk's record."""
        self.out.close()
        write_parquet(pd.DataFrame(self.rows, columns=CLIP_COLUMNS), self.files["clips.parquet"])
        write_parquet(pd.DataFrame(self.status, columns=STATUS_COLUMNS), self.files["status.parquet"])
        return self.files


def clip_fps(unit: dict) -> float | None:
    """The frame rate of a unit's original (its clips' MP4s play at it), None when unknown."""
    fps = [float(v["fps"]) for v in unit["videos"] if v["video"] == unit["source"] and "fps" in v]
    return next((f for f in fps if math.isfinite(f) and f > 0), None)
