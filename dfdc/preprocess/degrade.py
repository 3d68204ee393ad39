"""`degrade`: a degraded copy of the holdout videos, as the 15th place built its validation set.

Each original draws one degradation (frame-level JPEG, a downscale, half the
frame rate, or none) in the configured shares; its fakes take the same one, so
their crops still come from the original's boxes, moved as the degradation
moves them (scaled for a downscale, frame f -> f / 2 at half the frame rate).
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from dfdc.parallel import prefetch_map
from dfdc.preprocess.columns import LANDMARK_COLUMNS
from dfdc.video import VideoError, iter_frames, probe, write_video

log = logging.getLogger("dfdc.preprocess")

KINDS = ("jpeg", "downscale", "half_fps", "none")


@dataclass(frozen=True)
class Degradation:
    kind: str  # one of KINDS
    quality: int = 0  # JPEG quality (jpeg only)

    def describe(self) -> str:
        """A short name, e.g. 'jpeg q=42'."""
        return f"jpeg q={self.quality}" if self.kind == "jpeg" else self.kind


def _order_key(name: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{name}".encode()).digest()


def assign_degradations(originals: Sequence[str], shares: Mapping[str, float], jpeg_quality: Sequence[int],
                        seed: int = 0) -> dict[str, Degradation]:
    """One degradation per original, in exactly the given shares (largest remainder), reproducible for ``seed``.

    Originals are ordered by a hash of the seed and their name and dealt out in
    that order; each JPEG original draws its quality in ``jpeg_quality`` (low, high).
    """
    names = sorted(set(originals), key=lambda n: _order_key(n, seed))
    kinds = [k for k in KINDS if shares.get(k, 0) > 0]
    total = sum(shares[k] for k in kinds)
    exact = [shares[k] / total * len(names) for k in kinds]
    counts = [int(e) for e in exact]
    for i in sorted(range(len(kinds)), key=lambda i: exact[i] - counts[i], reverse=True)[:len(names) - sum(counts)]:
        counts[i] += 1
    out, start = {}, 0
    lo, hi = int(jpeg_quality[0]), int(jpeg_quality[1])
    for kind, n in zip(kinds, counts):
        for name in names[start:start + n]:
            q = 0
            if kind == "jpeg":
                q = lo + int.from_bytes(_order_key(name, seed + 1)[:4], "little") % (hi - lo + 1)
            out[name] = Degradation(kind, q)
        start += n
    return out


def _even(v: float) -> int:
    return max(2, int(round(v / 2)) * 2)


def degraded_size(width: int, height: int, d: Degradation, scale: float) -> tuple[int, int]:
    """Frame size after ``d`` (even sides, as yuv420p needs)."""
    if d.kind == "downscale":
        return _even(width * scale), _even(height * scale)
    return _even(width), _even(height)


def degrade_frames(frames: Iterator[np.ndarray], d: Degradation, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The degraded frame stream: JPEG round trip, resize (AREA) or every other frame; sides made even."""
    for i, frame in enumerate(frames):
        if d.kind == "half_fps" and i % 2:
            continue
        if d.kind == "jpeg":
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, d.quality])
            if not ok:
                raise VideoError(f"JPEG encoding failed at quality {d.quality}")
            frame = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        if (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        yield frame


def degrade_video(src: str | Path, dst: str | Path, d: Degradation, *, scale: float = 0.25,
                  crf: int = 0) -> dict:
    """Write the degraded copy of ``src`` at ``dst``; returns its frames, fps, width, height.

    "none" copies the file. The others decode every frame once and re-encode with
    x264 at ``crf`` (0: lossless, so only the degradation changes the pixels).
    """
    info = probe(src, verify=False)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if d.kind == "none":
        shutil.copyfile(src, dst)
        return {"frames": info.frames, "fps": info.fps, "width": info.width, "height": info.height}
    size = degraded_size(info.width, info.height, d, scale)
    fps = info.fps / 2 if d.kind == "half_fps" else info.fps
    count = {"n": 0}

    def counted() -> Iterator[np.ndarray]:
        for f in degrade_frames(iter_frames(src), d, size):
            count["n"] += 1
            yield f

    write_video(dst, counted(), fps=fps, crf=crf)
    return {"frames": count["n"], "fps": fps, "width": size[0], "height": size[1]}


def degrade_faces(faces: pd.DataFrame, index: pd.DataFrame, assigned: Mapping[str, Degradation],
                  sizes: Mapping[str, tuple[int, int]]) -> pd.DataFrame:
    """The originals' face rows moved into their degraded videos (boxes and landmarks scaled, frames halved).

    At half the frame rate frame f becomes f // 2: a face found on an odd frame
    lands on the kept frame just before it, unless that frame has its own box
    for the same track, which wins.
    """
    before = index.set_index("video")[["width", "height"]]
    parts = []
    for video, g in faces.groupby("video", sort=False):
        d = assigned.get(video)
        if d is None or video not in sizes:
            continue
        g = g.copy()
        if d.kind == "half_fps":
            g = g.sort_values(["track", "frame"], kind="stable")
            g["frame"] = g["frame"] // 2
            g = g.drop_duplicates(["frame", "track"], keep="first").sort_index()
        w0, h0 = before.loc[video, "width"], before.loc[video, "height"]
        sx, sy = sizes[video][0] / w0, sizes[video][1] / h0
        if (sx, sy) != (1.0, 1.0):
            for c in ("x1", "x2", *[c for c in LANDMARK_COLUMNS if c.startswith("lx")]):
                g[c] = g[c] * sx
            for c in ("y1", "y2", *[c for c in LANDMARK_COLUMNS if c.startswith("ly")]):
                g[c] = g[c] * sy
        parts.append(g)
    return pd.concat(parts, ignore_index=True) if parts else faces.iloc[:0].copy()


def degrade_holdout(index: pd.DataFrame, videos: Sequence[str], out_dir: str | Path, *,
                    shares: Mapping[str, float], jpeg_quality: Sequence[int], scale: float, crf: int, seed: int,
                    workers: int = 2, progress: bool = True,
                    recorded_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict[str, Degradation]]:
    """Degraded copies of ``videos`` under ``out_dir`` (same relative names); their index rows and the draws.

    The index rows keep every column of ``index`` with path (under ``recorded_dir``,
    default ``out_dir``: where the copies will lie), frames, fps, width and
    height of the copy, plus ``degradation``; a video that cannot be read or written
    keeps its row with ok False and the error, and the others go on.
    """
    out_dir = Path(out_dir)
    rows = index[index["video"].isin(set(videos))].reset_index(drop=True)
    originals = [o if isinstance(o, str) and o else v for v, o in zip(rows["video"], rows["original"])]
    assigned_orig = assign_degradations(originals, shares, jpeg_quality, seed)
    assigned = {v: assigned_orig[o] for v, o in zip(rows["video"], originals)}

    def one(row) -> dict:
        d = assigned[row.video]
        dst = out_dir / row.video
        if not row.ok:
            return {"ok": False, "error": f"not ok in index: {row.error}"}
        try:
            return {**degrade_video(row.path, dst, d, scale=scale, crf=crf), "ok": True, "error": ""}
        except (VideoError, OSError, ValueError) as e:
            log.warning("%s: cannot degrade (%s): %s", row.video, d.describe(), e)
            return {"ok": False, "error": f"degrade {d.describe()}: {e}"}

    results = []
    bar = tqdm(total=len(rows), desc="degrade", unit="video", disable=not progress)
    for r in prefetch_map(one, list(rows.itertuples()), workers):
        results.append(r)
        bar.update(1)
    bar.close()
    out = rows.copy()
    for col in ("frames", "fps", "width", "height", "ok", "error"):
        out[col] = [r.get(col, getattr(row, col)) for r, row in zip(results, rows.itertuples())]
    out["path"] = [(Path(recorded_dir or out_dir) / v).as_posix() for v in out["video"]]
    out["degradation"] = [assigned[v].describe() for v in out["video"]]
    return out, assigned
