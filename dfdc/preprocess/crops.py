"""`crops`: face crops of every video, real and fake, at its original's boxes, in PNG shards, and the SSIM
difference mask of each fake crop against its original's crop (the 1st place's diff masks), beside them."""
from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from dfdc.codehash import code_digest
from dfdc.faces.crops import crop_box, crop_key, cut
from dfdc.masks import diff_mask
from dfdc.parallel import prefetch_map
from dfdc.preprocess.chunks import Chunk, ChunkStore, RunSummary, chunk_tmp, file_identity, plan_chunks, run_chunks
from dfdc.preprocess.columns import CROP_COLUMNS, FACE_COLUMNS, LANDMARK_COLUMNS, MASK_COLUMNS
from dfdc.store import ShardFile, ShardReader, decode_png, encode_png, write_parquet
from dfdc.preprocess.degrade import read_video_frames
from dfdc.video import VideoError

log = logging.getLogger("dfdc.preprocess")

STATUS_COLUMNS = ["video", "crops", "ok", "error"]
MASKS = "masks.npz"  # <chunk>.masks.npz: the chunk's fake crops' diff masks, under their crops' keys


def _crop_one(job) -> tuple[str, list[tuple[dict, np.ndarray]], str]:
    """(video, [(crop row, RGB crop)], error) of one video at its original's boxes."""
    row, source, boxes, margin = job
    if not row.ok:
        return row.video, [], f"not ok in index: {row.error}"
    if boxes is None:
        return row.video, [], "original has no faces" if source != row.video else "no face"
    wanted = sorted(boxes["frame"].unique())
    try:
        frames, _ = read_video_frames(row, wanted)
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
        out.append((meta, cut(frame, box)))
    missing = len(wanted) - sum(1 for i in wanted if i in frames)
    error = f"shorter than its original: {missing} of {len(wanted)} sampled frames missing" if missing else ""
    return row.video, out, error


def mask_or_reason(original: np.ndarray | None, fake: np.ndarray) -> tuple[np.ndarray | None, str]:
    """A fake crop's SSIM diff mask against its original's crop, or None and why there is none."""
    if original is None:
        return None, "original crop missing"
    if original.shape != fake.shape:
        return None, f"crop sizes differ: {fake.shape} vs original {original.shape}"
    try:
        return diff_mask(original, fake), ""
    except ValueError as e:  # e.g. a crop smaller than the SSIM window
        return None, str(e)


def _crop_chunk(chunk: Chunk, directory: Path) -> dict[str, Path]:
    margin = chunk.rows[0]["margin"] if chunk.rows else 0.3
    masks = bool(chunk.rows[0]["masks"]) if chunk.rows else True
    shard = f"{chunk.name}.npz"
    files = {"npz": chunk_tmp(directory, chunk, "npz"), "crops.parquet": chunk_tmp(directory, chunk, "crops.parquet"),
             "status.parquet": chunk_tmp(directory, chunk, "status.parquet")}
    if masks:
        files[MASKS] = chunk_tmp(directory, chunk, MASKS)
    rows, status = [], []
    originals: dict[str, np.ndarray] = {}  # the crops of the unit's real video (it comes before its fakes)
    jobs = [(SimpleNamespace(**v), unit["source"], unit["boxes"], margin)
            for unit in chunk.rows for v in unit["videos"]]
    with ShardFile(files["npz"]) as out, (ShardFile(files[MASKS]) if masks else nullcontext()) as mask_out:
        for (row, source, _, _), (video, crops, error) in zip(jobs, prefetch_map(_crop_one, jobs, 1)):
            if row.video == source:
                originals = {meta["key"]: crop for meta, crop in crops}
            for meta, crop in crops:
                out.add(meta["key"], encode_png(crop))
                meta["shard"] = shard
                if masks:
                    mask, why = (None, "") if row.video == source else \
                        mask_or_reason(originals.get(crop_key(source, meta["frame"], meta["track"])), crop)
                    if mask is not None:
                        mask_out.add(meta["key"], encode_png(mask))
                    meta |= {"mask": f"{chunk.name}.{MASKS}" if mask is not None else "",
                             "mask_mean": float(mask.mean() / 255) if mask is not None else float("nan"),
                             "mask_error": why}
                rows.append(meta)
            if error:
                log.warning("crops: %s: %s", video, error)
            status.append({"video": video, "crops": len(crops), "ok": bool(crops), "error": error})
    write_parquet(pd.DataFrame(rows, columns=CROP_COLUMNS + (MASK_COLUMNS if masks else [])), files["crops.parquet"])
    write_parquet(pd.DataFrame(status, columns=STATUS_COLUMNS), files["status.parquet"])
    return files


def source_units(index: pd.DataFrame, faces: pd.DataFrame) -> list[dict]:
    """Every REAL video with its FAKES (a real is its own original), by original, each with the original's
    face rows (``boxes``, None without faces); fakes of an original missing from the index form their own unit."""
    videos = index[index["label"].isin([0, 1])].copy()
    videos["source"] = videos["original"].where(videos["label"] == 1, videos["video"])
    videos = videos.sort_values(["source", "label", "video"])
    by_source = dict(tuple(faces.groupby("video"))) if len(faces) else {}
    units = []
    for source, group in videos.groupby("source", sort=True):
        records = group.to_dict("records")
        part = next((r.get("part") for r in records if r["label"] == 0), records[0].get("part"))
        units.append({"source": source, "part": part, "videos": records, "boxes": by_source.get(source)})
    return units


def unit_inputs(units: list[dict], face_columns: list[str]) -> list:
    """What a chunk of :func:`source_units` reads: each video's file and index state, its original's faces."""
    return [[u["source"], [[v["video"], *file_identity(v["path"]), v["label"], v["ok"], v.get("degradation")]
                           for v in u["videos"]],
             None if u["boxes"] is None else u["boxes"][face_columns].to_numpy().tolist()] for u in units]


def crop_chunked(
    index: pd.DataFrame,
    faces: pd.DataFrame,
    out_dir: str | Path,
    margin: float = 0.3,
    workers: int = 2,
    chunk: int = 64,
    masks: bool = True,
    progress: bool = True,
    scheduler: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, RunSummary]:
    """Cut crops for every REAL and FAKE video at its ORIGINAL's boxes into ``out_dir``, resumably: chunks of
    ``chunk`` originals (with their fakes) per part, one PNG shard ``<chunk>.npz`` and its tables each, in
    ``workers`` processes. ``masks``: also each fake crop's SSIM diff mask against its original's crop
    (``<chunk>.masks.npz``; columns :data:`MASK_COLUMNS`). ``scheduler``: a Dask scheduler to run the chunks on
(:func:`~dfdc.preprocess.chunks.run_chunks`). Returns (crops, status, summary)."""
    units = source_units(index, faces)
    for u in units:
        u |= {"margin": margin, "masks": masks}
    plan = plan_chunks(((u["part"], u["source"], u) for u in units), chunk,
                       lambda us: unit_inputs(us, FACE_COLUMNS))
    store = ChunkStore(out_dir, {"stage": "crops", "params": {"margin": margin, "chunk": chunk, "masks": masks},
                                 "code": code_digest("dfdc.preprocess.crops")})
    summary = run_chunks(store, plan, _crop_chunk, workers, desc="crops", unit="originals", progress=progress,
                         scheduler=scheduler)
    columns = CROP_COLUMNS + (MASK_COLUMNS if masks else [])
    return store.table(plan, "crops.parquet", columns), store.table(plan, "status.parquet", STATUS_COLUMNS), summary


def crop_videos(index: pd.DataFrame, faces: pd.DataFrame, out_dir: str | Path, **kwargs: Any
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`crop_chunked` without its summary: (crops, status)."""
    return crop_chunked(index, faces, out_dir, **kwargs)[:2]


def read_crop(crops_dir: str | Path, shard: str, key: str) -> np.ndarray:
    """One crop (RGB) or mask (grey) from a shard directory."""
    reader = ShardReader(crops_dir, open_shards=1)
    try:
        return decode_png(reader.get(shard, key))
    finally:
        reader.close()
