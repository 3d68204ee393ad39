"""`detect`: MTCNN faces on the sampled frames of every real video, linked into tracks."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from dfdc.codehash import code_digest
from dfdc.device import pick_device
from dfdc.faces.tracks import drop_short_tracks, link_tracks
from dfdc.parallel import prefetch_map
from dfdc.preprocess.chunks import Chunk, ChunkStore, RunSummary, chunk_tmp, file_identity, plan_chunks, run_chunks
from dfdc.preprocess.columns import FACE_COLUMNS
from dfdc.store import write_parquet
from dfdc.video import VideoError, read_frames, sample_indices

log = logging.getLogger("dfdc.preprocess")

STATUS_COLUMNS = ["video", "frames_sampled", "faces", "tracks", "ok", "error"]


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


def detect_rows(
    reals: pd.DataFrame,
    detector,
    every: int = 10,
    min_track: int = 3,
    max_gap: int = 2,
    min_iou: float = 0.3,
    workers: int = 2,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detect faces on every ``every``-th frame of each video of ``reals`` (in its order), link them into
    tracks; ``workers`` threads decode ahead of the detector.

    Tracks seen in fewer than ``min_track`` sampled frames are dropped (one-frame
    false faces). Returns (faces, status): faces has FACE_COLUMNS in full-resolution
    pixels; status has one row per video.
    """
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
    return faces, pd.DataFrame(status, columns=STATUS_COLUMNS)


def detect_videos(index: pd.DataFrame, detector, **kwargs: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`detect_rows` on every REAL video of ``index``, in video order, in this process."""
    return detect_rows(index[index["label"] == 0].sort_values("video"), detector, **kwargs)


_WORKER: dict[str, Any] = {}


def _init_worker(params: dict, threads: int | None) -> None:
    from dfdc.config.detect import DetectParams
    from dfdc.faces.detector import FaceDetector

    if threads is not None:
        torch.set_num_threads(threads)
    p = DetectParams(**params)
    _WORKER.update(params=p, detector=FaceDetector.from_params(p))


def _detect_chunk(chunk: Chunk, directory: Path) -> dict[str, Path]:
    p = _WORKER["params"]
    faces, status = detect_rows(pd.DataFrame(chunk.rows), _WORKER["detector"], every=p.every,
                                min_track=p.min_track, max_gap=p.max_gap, min_iou=p.min_iou, workers=1,
                                progress=False)
    files = {"faces.parquet": chunk_tmp(directory, chunk, "faces.parquet"),
             "status.parquet": chunk_tmp(directory, chunk, "status.parquet")}
    write_parquet(faces, files["faces.parquet"])
    write_parquet(status, files["status.parquet"])
    return files


def detect_chunked(index: pd.DataFrame, p, work_dir: str | Path, progress: bool = True,
                   scheduler: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, RunSummary]:
    """The `detect` stage's work, resumable: chunks of ``p.chunk`` real videos per part, each in
    ``work_dir`` (``<chunk>.faces.parquet``, ``<chunk>.status.parquet``, recorded in ``done.json``), in
    ``p.workers`` processes (one MTCNN and one torch thread each on the CPU), or on the Dask cluster at
``scheduler`` (on CUDA each chunk asks for a worker with the resource ``GPU``). Returns (faces, status, summary)."""
    import dataclasses

    device = pick_device(p.device)
    reals = index[index["label"] == 0].sort_values("video")
    plan = plan_chunks(((r["part"] if "part" in r else None, r["video"], r) for r in reals.to_dict("records")),
                       p.chunk, lambda rows: [[r["video"], *file_identity(r["path"]), r["frames"], r["ok"]]
                                              for r in rows])
    identity = {"stage": "detect", "params": {**p.provenance(), "chunk": p.chunk}, "device": device.type,
                "code": code_digest("dfdc.preprocess.detect", "dfdc.faces.detector")}
    store = ChunkStore(work_dir, identity)
    params = dataclasses.asdict(p)
    summary = run_chunks(store, plan, _detect_chunk, p.workers, desc="detect",
                         initializer=_init_worker, initargs=(params, 1 if p.workers > 0 and device.type == "cpu"
                                                             else None),
                         mp_context="spawn" if device.type == "cuda" else "fork", progress=progress,
                         scheduler=scheduler, resources={"GPU": 1} if device.type == "cuda" else None)
    faces = store.table(plan, "faces.parquet", FACE_COLUMNS)
    status = store.table(plan, "status.parquet", STATUS_COLUMNS)
    return faces.astype({"frame": "int32", "face": "int16", "track": "int16"}), status, summary
