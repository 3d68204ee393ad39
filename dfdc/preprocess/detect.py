"""`detect`: MTCNN faces on the sampled frames of every real video, linked into tracks."""
from __future__ import annotations

import logging

import pandas as pd
from tqdm import tqdm

from dfdc.faces.tracks import drop_short_tracks, link_tracks
from dfdc.parallel import prefetch_map
from dfdc.preprocess.columns import FACE_COLUMNS
from dfdc.video import VideoError, read_frames, sample_indices

log = logging.getLogger("dfdc.preprocess")


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
