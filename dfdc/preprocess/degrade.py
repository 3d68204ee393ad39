"""`degrade`: the degraded holdout, as the 15th place built its validation set.

Each original draws one degradation (frame-level JPEG, a downscale, half the
frame rate, or none) in the configured shares; its fakes take the same one, so
their crops still come from the original's boxes, moved as the degradation
moves them (scaled for a downscale, frame f -> f / 2 at half the frame rate).

All three are frame-level, so no degraded video is written: a degraded video is
its source file plus its ``degradation``, and
:func:`dfdc.preprocess.frames.decode_video_frames` applies it to exactly the
frames `cut` reads (frame f at half the frame rate is source frame 2f). The
`degrade` stage itself reads no video.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from dfdc.preprocess.columns import LANDMARK_COLUMNS
from dfdc.video import VideoError

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
    """Frame size after ``d``: a downscale's sides times ``scale`` (even, as before), others unchanged."""
    if d.kind == "downscale":
        return _even(width * scale), _even(height * scale)
    return width, height


def degrade_frame(frame: np.ndarray, d: Degradation, size: tuple[int, int]) -> np.ndarray:
    """One frame degraded by ``d``: a JPEG round trip at its quality, or a resize (AREA) to ``size``."""
    if d.kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, d.quality])
        if not ok:
            raise VideoError(f"JPEG encoding failed at quality {d.quality}")
        frame = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if (frame.shape[1], frame.shape[0]) != size:
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return frame


def parse_degradation(text: str) -> Degradation:
    """The :class:`Degradation` that :meth:`Degradation.describe` wrote as ``text``."""
    if text.startswith("jpeg q="):
        return Degradation("jpeg", int(text.removeprefix("jpeg q=")))
    if text not in KINDS:
        raise ValueError(f"unknown degradation {text!r} (valid: jpeg q=N, {', '.join(KINDS[1:])})")
    return Degradation(text)


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


def degrade_holdout(index: pd.DataFrame, videos: Sequence[str], *, shares: Mapping[str, float],
                    jpeg_quality: Sequence[int], scale: float,
                    seed: int) -> tuple[pd.DataFrame, dict[str, Degradation]]:
    """The degraded holdout's index rows and draws, reading no video.

    Each row keeps every column of ``index`` (``path`` still names the source
    file) with the frames, fps, width and height of the degraded video, plus
    ``degradation`` (:meth:`Degradation.describe`), which
    :func:`dfdc.preprocess.frames.decode_video_frames` applies to the frames it is asked for.
    """
    rows = index[index["video"].isin(set(videos))].reset_index(drop=True)
    originals = [o if isinstance(o, str) and o else v for v, o in zip(rows["video"], rows["original"])]
    assigned_orig = assign_degradations(originals, shares, jpeg_quality, seed)
    assigned = {v: assigned_orig[o] for v, o in zip(rows["video"], originals)}
    out = rows.copy()
    sizes = [degraded_size(int(w), int(h), assigned[v], scale) if ok else (int(w), int(h))
             for v, w, h, ok in zip(rows["video"], rows["width"], rows["height"], rows["ok"])]
    half = [assigned[v].kind == "half_fps" for v in rows["video"]]
    out["width"] = [w for w, _ in sizes]
    out["height"] = [h for _, h in sizes]
    out["frames"] = [(int(n) + 1) // 2 if h and n > 0 else n for n, h in zip(rows["frames"], half)]
    out["fps"] = [f / 2 if h else f for f, h in zip(rows["fps"], half)]
    out["degradation"] = [assigned[v].describe() for v in out["video"]]
    return out, assigned
