"""`cut`: the face crops (with the fakes' diff masks) and the face-track clips of every video, from one decode.

Both outputs are chunked over the same plan (originals with their fakes, per
part) and each keeps its own record (``done.json``): a chunk is decoded only for
the outputs that lack it, so a clip setting redoes the clips and leaves every
byte of the crops as it was (and DVC then reruns nothing that reads only crops),
and the other way round. Each video is decoded once, selectively, for the
frames its crops and its clips need (:func:`dfdc.preprocess.frames.feed_frames`).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from dfdc.codehash import code_digest
from dfdc.config.clips import ClipsParams
from dfdc.parallel import prefetch_map
from dfdc.preprocess.chunks import Chunk, ChunkStore, RunSummary, plan_chunks, run_chunks
from dfdc.preprocess.clips import CLIP_COLUMNS, STATUS_COLUMNS as CLIP_STATUS, ClipCut, ClipShard, clip_fps, clip_jobs
from dfdc.preprocess.columns import CROP_COLUMNS, FACE_COLUMNS, MASK_COLUMNS
from dfdc.preprocess.crops import STATUS_COLUMNS as CROP_STATUS, CropCut, CropShard, source_units, unit_inputs
from dfdc.preprocess.frames import feed_frames


def clip_settings(p: ClipsParams | None = None) -> dict[str, Any]:
    """The settings that shape the clips (window, stride, per_track, size, margin, codec, crf) of ``p``
    (default: the `clips` section's defaults)."""
    p = p or ClipsParams()
    return p.provenance() | {"per_track": p.per_track}


def _cut_video(job: tuple) -> tuple[Any, Any]:
    """(crops result, clips result) of one video, from one decode (None for an output not asked for)."""
    crop, clip = job
    error = feed_frames(crop.row if crop is not None else clip.job, [c for c in (crop, clip) if c is not None])
    return (crop.result(error) if crop is not None else None), (clip.result(error) if clip is not None else None)


def _cut_chunk(chunk: Chunk, dirs: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """The chunk's files of the outputs in ``dirs`` (crops, clips or both)."""
    opts = chunk.rows[0]["opts"]
    crops = CropShard(chunk, dirs["crops"], opts["masks"]) if "crops" in dirs else None
    clips = ClipShard(chunk, dirs["clips"], opts["clips"]["codec"]) if "clips" in dirs else None
    jobs, sources = [], []
    c = opts["clips"]
    for unit in chunk.rows:
        for v, (job, fps) in zip(unit["videos"], clip_jobs(unit, c)):
            row = SimpleNamespace(**v)
            jobs.append((CropCut(row, unit["source"], unit["boxes"], opts["margin"]) if crops else None,
                         ClipCut(job, c["window"], c["stride"], c["size"], c["codec"], c["crf"], fps) if clips
                         else None))
            sources.append(unit["source"])
    for source, (crop, clip) in zip(sources, prefetch_map(_cut_video, jobs, 1)):
        if crops:
            crops.add(source, crop)
        if clips:
            clips.add(clip)
    return {**({"crops": crops.close()} if crops else {}), **({"clips": clips.close()} if clips else {})}


def cut_chunked(
    index: pd.DataFrame,
    faces: pd.DataFrame,
    *,
    crops_dir: str | Path | None = None,
    clips_dir: str | Path | None = None,
    margin: float = 0.3,
    masks: bool = True,
    clips: dict[str, Any] | None = None,
    workers: int = 2,
    chunk: int = 64,
    progress: bool = True,
    scheduler: str | None = None,
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, RunSummary]]:
    """Crops (into ``crops_dir``, at ``margin``; ``masks``: the fakes' SSIM diff masks) and clips (into
    ``clips_dir``, with ``clips``: window, stride, per_track, size, margin, codec, crf) of every REAL and FAKE
    video at its ORIGINAL's boxes, resumably: chunks of ``chunk`` originals (with their fakes) per part, one
    shard and its tables each per output, in ``workers`` processes or on the Dask cluster at ``scheduler``.
    Either directory may be None (that output is not made). Returns {"crops" / "clips": (table, status,
    summary)}."""
    c = {**clip_settings(), **(clips or {})}
    if c["codec"] not in ("mp4", "png"):
        raise ValueError(f"codec must be mp4 or png, got {c['codec']!r}")
    units = source_units(index, faces)
    for u in units:
        u |= {"opts": {"margin": margin, "masks": masks, "clips": c}, "fps": clip_fps(u)}
    plan = plan_chunks(((u["part"], u["source"], u) for u in units), chunk,
                       lambda us: [unit_inputs(us, FACE_COLUMNS), [u["fps"] for u in us]])
    code = code_digest("dfdc.preprocess.cut")
    stores = {}
    if crops_dir is not None:
        stores["crops"] = ChunkStore(crops_dir, {"stage": "crops", "params": {"margin": margin, "chunk": chunk,
                                                                             "masks": masks}, "code": code})
    if clips_dir is not None:
        stores["clips"] = ChunkStore(clips_dir, {"stage": "clips", "params": {**c, "chunk": chunk}, "code": code})
    if not stores:
        raise ValueError("cut: neither crops_dir nor clips_dir given")
    desc = " and ".join(stores)
    summaries = run_chunks(stores, plan, _cut_chunk, workers, desc=desc, unit="originals", progress=progress,
                           scheduler=scheduler)
    out = {}
    if "crops" in stores:
        columns = CROP_COLUMNS + (MASK_COLUMNS if masks else [])
        out["crops"] = (stores["crops"].table(plan, "crops.parquet", columns),
                        stores["crops"].table(plan, "status.parquet", CROP_STATUS), summaries["crops"])
    if "clips" in stores:
        out["clips"] = (stores["clips"].table(plan, "clips.parquet", CLIP_COLUMNS),
                        stores["clips"].table(plan, "status.parquet", CLIP_STATUS), summaries["clips"])
    return out


def crop_chunked(index: pd.DataFrame, faces: pd.DataFrame, out_dir: str | Path, margin: float = 0.3,
                 workers: int = 2, chunk: int = 64, masks: bool = True, progress: bool = True,
                 scheduler: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, RunSummary]:
    """:func:`cut_chunked` of the crops alone: (crops, status, summary)."""
    return cut_chunked(index, faces, crops_dir=out_dir, margin=margin, masks=masks, workers=workers, chunk=chunk,
                       progress=progress, scheduler=scheduler)["crops"]


def crop_videos(index: pd.DataFrame, faces: pd.DataFrame, out_dir: str | Path, **kwargs: Any
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`crop_chunked` without its summary: (crops, status)."""
    return crop_chunked(index, faces, out_dir, **kwargs)[:2]


def clip_chunked(index: pd.DataFrame, faces: pd.DataFrame, out_dir: str | Path, *, workers: int = 2,
                 chunk: int = 64, progress: bool = True, scheduler: str | None = None,
                 **clips: Any) -> tuple[pd.DataFrame, pd.DataFrame, RunSummary]:
    """:func:`cut_chunked` of the clips alone (``clips``: window, stride, per_track, size, margin, codec,
    crf): (clips, status, summary). MP4 clips are one stored item each (the encoded bytes); PNG clips store
    frame ``t`` of clip ``key`` under ``f"{key}#{t}"``, all in the chunk's shard."""
    unknown = sorted(set(clips) - set(clip_settings()))
    if unknown:
        raise TypeError(f"clip_chunked: unknown setting {unknown[0]!r}")
    return cut_chunked(index, faces, clips_dir=out_dir, clips=clips, workers=workers, chunk=chunk,
                       progress=progress, scheduler=scheduler)["clips"]


def clip_videos(index: pd.DataFrame, faces: pd.DataFrame, out_dir: str | Path, **kwargs: Any
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`clip_chunked` without its summary: (clips, status)."""
    return clip_chunked(index, faces, out_dir, **kwargs)[:2]
