"""`clips`: windows of consecutive face crops along every face track, real and fake alike, in shards.

For each track of a real video, ``per_track`` windows of ``window`` frames,
``stride`` video frames apart, are spread evenly over the frames the track was
detected on. Each window is cut at one fixed square box (the union of the
track's boxes over the window, plus the detections just before and after it,
with ``margin`` of its size on each side; the Medics) and resized to ``size``. A
fake is cut at its original's windows and boxes, so the clips of one key are
frame-aligned. Every video is decoded once, in order, selectively (only the
frames the windows hold, and those they are predicted from), and each frame is
cut into the windows that hold it as it goes by.
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

from dfdc.codehash import code_digest
from dfdc.data.codec import encode_clip_mp4
from dfdc.parallel import prefetch_map
from dfdc.preprocess.chunks import Chunk, ChunkStore, RunSummary, chunk_tmp, plan_chunks, run_chunks
from dfdc.store import ShardFile, encode_png, write_parquet
from dfdc.preprocess.degrade import decode_video_frames
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


def cut_clips(video: Any, windows: list[Window], window: int, stride: int,
              size: int) -> tuple[dict[Window, np.ndarray], tuple[int, int]]:
    """Decode the frames of ``video`` (a path, or an index row: see
    :func:`~dfdc.preprocess.degrade.decode_video_frames`) that the windows hold, once, and cut every window:
    ({window: (T, size, size, 3)}, (width, height)).

    A window whose frames run past the end of the video is left out.
    """
    need: dict[int, list[tuple[Window, int]]] = {}
    for win in windows:
        for t, i in enumerate(win.frames(window, stride)):
            need.setdefault(i, []).append((win, t))
    buffers = {win: np.zeros((window, size, size, 3), np.uint8) for win in windows}
    filled = {win: 0 for win in windows}
    wh = (0, 0)
    row = SimpleNamespace(path=video) if isinstance(video, (str, Path)) else video
    for i, frame in decode_video_frames(row, need):
        wh = (frame.shape[1], frame.shape[0])
        for win, t in need.get(i, ()):
            buffers[win][t] = cut_square(frame, win.box, size)
            filled[win] += 1
    return {win: buffers[win] for win in windows if filled[win] == window}, wh


def _clip_one(job_and_params) -> tuple[_Job, list[tuple[dict, np.ndarray]], int, str]:
    job, window, stride, size, codec, crf, fps = job_and_params
    if not job.ok:
        return job, [], 0, f"not ok in index: {job.error}"
    if not job.windows:
        reason = ("original has no faces" if job.source != job.video else "no face") if not job.short else \
            f"every face track is shorter than one window ({(window - 1) * stride + 1} frames)"
        return job, [], 0, reason
    out = []
    try:
        cut, (w, h) = cut_clips(job, job.windows, window, stride, size)
        for win in job.windows:
            if win not in cut:
                continue
            frames = cut[win]
            meta = {"key": clip_key(job.video, win.track, win.start), "video": job.video, "original": job.source,
                    "label": job.label, "track": win.track, "frame": win.start, "frames": window, "stride": stride,
                    "codec": codec, "x1": win.box[0], "y1": win.box[1], "x2": win.box[2], "y2": win.box[3],
                    "edge": reaches_edge(win.box, w, h)}
            data = encode_clip_mp4(frames, crf=crf, fps=fps) if codec == "mp4" else [encode_png(f) for f in frames]
            out.append((meta, data))
    except VideoError as e:  # an encode that fails loses the video's clips, never the stage
        return job, [], 0, str(e)
    except Exception as e:  # noqa: BLE001 - one bad video never stops the stage
        return job, [], 0, f"{type(e).__name__}: {e}"
    missing = len(job.windows) - len(out)
    error = f"shorter than its original: {missing} of {len(job.windows)} windows run past its end" \
        if missing and job.source != job.video else \
        (f"{missing} of {len(job.windows)} windows run past the end of the video" if missing else "")
    return job, out, missing, error


def _clip_chunk(chunk: Chunk, directory: Path) -> dict[str, Path]:
    from dfdc.data.clips import frame_key

    opts = chunk.rows[0]["opts"]
    shard = f"{chunk.name}.npz"
    files = {"npz": chunk_tmp(directory, chunk, "npz"), "clips.parquet": chunk_tmp(directory, chunk, "clips.parquet"),
             "status.parquet": chunk_tmp(directory, chunk, "status.parquet")}
    jobs = []
    for unit in chunk.rows:
        wins, short = plan_windows(unit["boxes"], opts["window"], opts["stride"], opts["per_track"],
                                   opts["margin"]) if unit["boxes"] is not None else ([], 0)
        fps = unit["fps"] or 30.0
        for v in unit["videos"]:
            error = v["error"] if isinstance(v["error"], str) else ""
            degraded = v.get("degradation") if isinstance(v.get("degradation"), str) else ""
            jobs.append((_Job(v["video"], v["path"], int(v["label"]), unit["source"], bool(v["ok"]), error, wins, short,
                              degraded, int(v["width"]), int(v["height"])),
                         opts["window"], opts["stride"], opts["size"], opts["codec"], opts["crf"], fps))
    rows, status = [], []
    with ShardFile(files["npz"]) as out:
        for job, clips, missing, error in prefetch_map(_clip_one, jobs, 1):
            for meta, data in clips:
                if opts["codec"] == "mp4":
                    out.add(meta["key"], np.frombuffer(data, np.uint8))
                else:
                    for t, png in enumerate(data):
                        out.add(frame_key(meta["key"], t), png)
                meta["shard"] = shard
                rows.append(meta)
            if error:
                log.warning("clips: %s: %s", job.video, error)
            status.append({"video": job.video, "clips": len(clips), "ok": bool(clips), "error": error,
                           "short_tracks": job.short, "edge_clips": sum(m["edge"] for m, _ in clips),
                           "missing_clips": missing})
    write_parquet(pd.DataFrame(rows, columns=CLIP_COLUMNS), files["clips.parquet"])
    write_parquet(pd.DataFrame(status, columns=STATUS_COLUMNS), files["status.parquet"])
    return files


def clip_chunked(
    index: pd.DataFrame,
    faces: pd.DataFrame,
    out_dir: str | Path,
    *,
    window: int = 8,
    stride: int = 1,
    per_track: int = 2,
    size: int = 64,
    margin: float = 0.3,
    codec: str = "mp4",
    crf: int = 18,
    workers: int = 2,
    chunk: int = 64,
    progress: bool = True,
    scheduler: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, RunSummary]:
    """Cut the clips of every REAL and FAKE video at its ORIGINAL's tracks into ``out_dir``, resumably: chunks
    of ``chunk`` originals (with their fakes) per part, one shard ``<chunk>.npz`` and its tables each, in
    ``workers`` processes, or on the Dask cluster at ``scheduler``. Returns (clips, status, summary).

    MP4 clips are one stored item each (the encoded bytes); PNG clips store frame
    ``t`` of clip ``key`` under ``f"{key}#{t}"``, all in the chunk's shard.
    """
    from dfdc.preprocess.columns import FACE_COLUMNS
    from dfdc.preprocess.crops import source_units, unit_inputs

    if codec not in ("mp4", "png"):
        raise ValueError(f"codec must be mp4 or png, got {codec!r}")
    opts = {"window": window, "stride": stride, "per_track": per_track, "size": size, "margin": margin,
            "codec": codec, "crf": crf}
    units = source_units(index, faces)
    for u in units:
        u["opts"] = opts
        fps = [float(v["fps"]) for v in u["videos"] if v["video"] == u["source"] and "fps" in v]
        u["fps"] = next((f for f in fps if math.isfinite(f) and f > 0), None)
    plan = plan_chunks(((u["part"], u["source"], u) for u in units), chunk,
                       lambda us: [unit_inputs(us, FACE_COLUMNS), [u["fps"] for u in us]])
    store = ChunkStore(out_dir, {"stage": "clips", "params": {**opts, "chunk": chunk},
                                 "code": code_digest("dfdc.preprocess.clips")})
    summary = run_chunks(store, plan, _clip_chunk, workers, desc="clips", unit="originals", progress=progress,
                         scheduler=scheduler)
    return store.table(plan, "clips.parquet", CLIP_COLUMNS), store.table(plan, "status.parquet", STATUS_COLUMNS), \
        summary


def clip_videos(index: pd.DataFrame, faces: pd.DataFrame, out_dir: str | Path, **kwargs: Any
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`clip_chunked` without its summary: (clips, status)."""
    return clip_chunked(index, faces, out_dir, **kwargs)[:2]
