"""Preprocessing: faces on real videos, crops for every video, SSIM diff masks.

Each function takes the tables of the stage before it and returns
(items table, per-video status table). Bad input is recorded in the status
table (``ok``, ``error``) and skipped; it never stops the run.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import pandas as pd
from tqdm import tqdm

from dfdc.faces.crops import crop_box, cut
from dfdc.faces.tracks import drop_short_tracks, link_tracks
from dfdc.masks import diff_mask
from dfdc.store import ShardReader, ShardWriter, decode_png, encode_png
from dfdc.video import VideoError, read_frames, sample_indices

log = logging.getLogger("dfdc.preprocess")

T = TypeVar("T")
R = TypeVar("R")

LANDMARK_COLUMNS = [f"l{a}{i}" for i in range(5) for a in "xy"]  # lx0, ly0, ..., lx4, ly4
FACE_COLUMNS = ["video", "frame", "face", "track", "x1", "y1", "x2", "y2", "score", *LANDMARK_COLUMNS]


def prefetch_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 2) -> Iterator[R]:
    """``map(fn, items)`` in order, running up to ``workers * ahead`` calls ahead in threads."""
    if workers <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as ex:
        queue: deque = deque()
        for item in items:
            queue.append(ex.submit(fn, item))
            if len(queue) >= workers * ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


def crop_key(video: str, frame: int, track: int) -> str:
    """Key of one face crop; a fake's crop and its original's share (frame, track)."""
    return f"{video}|{frame:06d}|{track}"


# ---------------------------------------------------------------- detect


def _read_sampled(row, every: int):
    if not row.ok:
        return row, None, 0, f"not ok in index: {row.error}"
    try:
        frames, n = read_frames(row.path, sample_indices(int(row.frames), every=every))
    except VideoError as e:
        return row, None, 0, str(e)
    except Exception as e:  # noqa: BLE001 - one bad video never stops the stage
        return row, None, 0, f"{type(e).__name__}: {e}"
    if not frames:
        return row, None, n, "no frame could be decoded"
    return row, frames, n, ""


def detect_videos(
    index: pd.DataFrame,
    detector,
    every: int = 10,
    min_track: int = 3,
    max_gap: int = 2,
    min_iou: float = 0.3,
    workers: int = 2,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detect faces on every ``every``-th frame of each REAL video and link them into tracks.

    Tracks seen in fewer than ``min_track`` sampled frames are dropped (one-frame
    false faces). Returns (faces, status): faces has FACE_COLUMNS in full-resolution
    pixels; status has one row per real video.
    """
    reals = index[index["label"] == 0].sort_values("video")
    rows, status = [], []
    bar = tqdm(total=len(reals), desc="detect", unit="video", disable=not progress)
    for row, frames, n_read, error in prefetch_map(lambda r: _read_sampled(r, every), reals.itertuples(), workers):
        bar.update(1)
        entry = {"video": row.video, "frames_sampled": 0, "faces": 0, "tracks": 0, "ok": False, "error": error}
        status.append(entry)
        if frames is None:
            log.warning("detect: %s: %s", row.video, error)
            continue
        idx = sorted(frames)
        found = detector.detect([frames[i] for i in idx])
        ids = link_tracks(idx, [f.boxes for f in found], min_iou=min_iou, max_gap=max_gap)
        keep = drop_short_tracks(ids, min(min_track, len(idx)))
        renumber: dict[int, int] = {}
        for tid in ids:
            for t in map(int, tid):
                if t in keep and t not in renumber:
                    renumber[t] = len(renumber)
        n_faces = 0
        for i, faces, tid in zip(idx, found, ids):
            for face, t in enumerate(map(int, tid)):
                if t in renumber:
                    n_faces += 1
                    rows.append([row.video, i, face, renumber[t], *faces.boxes[face].tolist(),
                                 float(faces.scores[face]), *faces.landmarks[face].reshape(-1).tolist()])
        entry.update(frames_sampled=len(idx), faces=n_faces, tracks=len(renumber))
        entry["ok"] = bool(renumber)
        entry["error"] = "" if renumber else "no face"
        if len(idx) < len(sample_indices(int(row.frames), every=every)):
            entry["error"] = (entry["error"] + "; " if entry["error"] else "") + \
                f"only {n_read} of {int(row.frames)} frames decodable"
    bar.close()
    faces = pd.DataFrame(rows, columns=FACE_COLUMNS).astype({"frame": "int32", "face": "int16", "track": "int16"})
    return faces, pd.DataFrame(status, columns=["video", "frames_sampled", "faces", "tracks", "ok", "error"])


# ---------------------------------------------------------------- crops

CROP_COLUMNS = ["key", "video", "original", "frame", "track", "label", "shard",
                "x1", "y1", "x2", "y2", "score", *LANDMARK_COLUMNS]


def _crop_one(job) -> tuple[str, list[tuple[dict, np.ndarray]], str]:
    row, source, boxes, margin = job
    if not row.ok:
        return row.video, [], f"not ok in index: {row.error}"
    if boxes is None:
        return row.video, [], "original has no faces" if source != row.video else "no face"
    wanted = sorted(boxes["frame"].unique())
    try:
        frames, n = read_frames(row.path, wanted)
    except VideoError as e:
        return row.video, [], str(e)
    except Exception as e:  # noqa: BLE001 - one bad video never stops the stage
        return row.video, [], f"{type(e).__name__}: {e}"
    out = []
    for f in boxes.itertuples():
        frame = frames.get(f.frame)
        if frame is None:
            continue
        h, w = frame.shape[:2]
        box = crop_box(np.array([f.x1, f.y1, f.x2, f.y2]), w, h, margin)
        lm = np.array([getattr(f, c) for c in LANDMARK_COLUMNS]).reshape(5, 2) - box[:2]
        meta = {"key": crop_key(row.video, f.frame, f.track), "video": row.video, "original": source,
                "frame": int(f.frame), "track": int(f.track), "label": int(row.label),
                "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3], "score": float(f.score),
                **dict(zip(LANDMARK_COLUMNS, lm.reshape(-1).tolist()))}
        out.append((meta, encode_png(cut(frame, box))))
    missing = len(wanted) - sum(1 for i in wanted if i in frames)
    error = f"shorter than its original: {missing} of {len(wanted)} sampled frames missing" if missing else ""
    return row.video, out, error


def crop_videos(
    index: pd.DataFrame,
    faces: pd.DataFrame,
    out_dir: str | Path,
    margin: float = 0.3,
    workers: int = 2,
    shard_size: int = 512,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cut crops for every REAL and FAKE video at its ORIGINAL's boxes; write PNG shards to ``out_dir``.

    A real video is its own original. Returns (crops, status).
    """
    videos = index[index["label"].isin([0, 1])].copy()
    videos["source"] = videos["original"].where(videos["label"] == 1, videos["video"])
    videos = videos.sort_values(["source", "label", "video"])
    by_source = dict(tuple(faces.groupby("video"))) if len(faces) else {}
    jobs = ((r, r.source, by_source.get(r.source), margin) for r in videos.itertuples())
    writer = ShardWriter(out_dir, shard_size)
    rows, status = [], []
    bar = tqdm(total=len(videos), desc="crops", unit="video", disable=not progress)
    for video, crops, error in prefetch_map(_crop_one, jobs, workers):
        bar.update(1)
        for meta, png in crops:
            meta["shard"] = writer.add(meta["key"], png)
            rows.append(meta)
        if error:
            log.warning("crops: %s: %s", video, error)
        status.append({"video": video, "crops": len(crops), "ok": bool(crops), "error": error})
    writer.close()
    bar.close()
    crops = pd.DataFrame(rows, columns=CROP_COLUMNS)
    return crops, pd.DataFrame(status, columns=["video", "crops", "ok", "error"])


# ---------------------------------------------------------------- diffs


def diff_crops(
    crops: pd.DataFrame,
    crops_dir: str | Path,
    out_dir: str | Path,
    workers: int = 2,
    shard_size: int = 512,
    progress: bool = True,
) -> pd.DataFrame:
    """SSIM difference mask for each FAKE crop against its original's crop with the same key.

    Returns one row per fake crop: key, original_key, shard, mean (mask mean / 255), ok, error.
    """
    fakes = crops[crops["label"] == 1]
    where = dict(zip(crops["key"], crops["shard"]))
    reader = ShardReader(crops_dir)
    writer = ShardWriter(out_dir, shard_size)

    def load(f):
        okey = crop_key(f.original, f.frame, f.track)
        if okey not in where:
            return f, okey, None, None
        return f, okey, decode_png(reader.get(f.shard, f.key)), decode_png(reader.get(where[okey], okey))

    def work(args):
        f, okey, fake, orig = args
        if orig is None:
            return f, okey, None, "original crop missing"
        if fake.shape != orig.shape:
            return f, okey, None, f"crop sizes differ: {fake.shape} vs original {orig.shape}"
        try:
            return f, okey, diff_mask(orig, fake), ""
        except ValueError as e:  # e.g. a crop smaller than the SSIM window
            return f, okey, None, str(e)

    rows = []
    loaded = (load(f) for f in fakes.itertuples())  # shard reads stay on this thread
    for f, okey, mask, error in tqdm(prefetch_map(work, loaded, workers), total=len(fakes), desc="diffs",
                                     unit="crop", disable=not progress):
        shard = writer.add(f.key, encode_png(mask)) if mask is not None else ""
        rows.append({"key": f.key, "original_key": okey, "shard": shard,
                     "mean": float(mask.mean() / 255) if mask is not None else float("nan"),
                     "ok": mask is not None, "error": error})
    writer.close()
    reader.close()
    return pd.DataFrame(rows, columns=["key", "original_key", "shard", "mean", "ok", "error"])


def read_crop(crops_dir: str | Path, shard: str, key: str) -> np.ndarray:
    """One crop (RGB) or mask (grey) from a shard directory."""
    reader = ShardReader(crops_dir, open_shards=1)
    try:
        return decode_png(reader.get(shard, key))
    finally:
        reader.close()

