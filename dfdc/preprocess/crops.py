"""`crops`: face crops of every video, real and fake, at its original's boxes, in PNG shards."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dfdc.faces.crops import crop_box, crop_key, cut
from dfdc.parallel import prefetch_map
from dfdc.preprocess.columns import CROP_COLUMNS, LANDMARK_COLUMNS
from dfdc.store import ShardReader, ShardWriter, decode_png, encode_png
from dfdc.video import VideoError, read_frames

log = logging.getLogger("dfdc.preprocess")


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


def read_crop(crops_dir: str | Path, shard: str, key: str) -> np.ndarray:
    """One crop (RGB) or mask (grey) from a shard directory."""
    reader = ShardReader(crops_dir, open_shards=1)
    try:
        return decode_png(reader.get(shard, key))
    finally:
        reader.close()
