"""Face crops of every video, real and fake, at its original's boxes, in PNG shards, and the SSIM difference
mask of each fake crop against its original's crop (the 1st place's diff masks), beside them; the `cut` stage
(:mod:`dfdc.preprocess.cut`) makes them from the same decode as the clips."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfdc.faces.crops import crop_box, crop_key, cut
from dfdc.masks import diff_mask
from dfdc.preprocess.chunks import Chunk, chunk_tmp, file_identity
from dfdc.preprocess.columns import CROP_COLUMNS, LANDMARK_COLUMNS, MASK_COLUMNS
from dfdc.store import ShardFile, ShardReader, decode_png, encode_png, write_parquet

log = logging.getLogger("dfdc.preprocess")

STATUS_COLUMNS = ["video", "crops", "ok", "error"]
MASKS = "masks.npz"  # <chunk>.masks.npz: the chunk's fake crops' diff masks, under their crops' keys


class CropCut:
    """One video's crops at its original's boxes, cut from its frames as they are decoded (:func:`feed_frames`)."""

    def __init__(self, row: Any, source: str, boxes: pd.DataFrame | None, margin: float) -> None:
        self.row, self.source, self.margin = row, source, margin
        self.reason = ""
        if not row.ok:
            self.reason = f"not ok in index: {row.error}"
        elif boxes is None:
            self.reason = "original has no faces" if source != row.video else "no face"
        self.boxes = [] if self.reason else list(boxes.itertuples())
        self.need = {int(f.frame) for f in self.boxes}
        self._seen: set[int] = set()
        self._cut: dict[int, tuple[dict, np.ndarray]] = {}

    def take(self, index: int, frame: np.ndarray) -> None:
        """Cut the crops of frame ``index``."""
        self._seen.add(index)
        h, w = frame.shape[:2]
        for pos, f in enumerate(self.boxes):
            if f.frame != index:
                continue
            box = crop_box(np.array([f.x1, f.y1, f.x2, f.y2]), w, h, self.margin)
            lm = np.array([getattr(f, c) for c in LANDMARK_COLUMNS]).reshape(5, 2) - box[:2]
            video = self.row.video
            meta = {"key": crop_key(video, f.frame, f.track), "video": video, "original": self.source,
                    "frame": int(f.frame), "track": int(f.track), "label": int(self.row.label),
                    "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3], "score": float(f.score),
                    **dict(zip(LANDMARK_COLUMNS, lm.reshape(-1).tolist()))}
            self._cut[pos] = (meta, cut(frame, box))

    def result(self, error: str = "") -> tuple[str, list[tuple[dict, np.ndarray]], str]:
        """(video, [(crop row, RGB crop)] in box order, why some or all are missing); ``error``: why the
        decode failed."""
        if self.reason or error:
            return self.row.video, [], self.reason or error
        missing = len(self.need - self._seen)
        why = f"shorter than its original: {missing} of {len(self.need)} sampled frames missing" if missing else ""
        return self.row.video, [self._cut[p] for p in sorted(self._cut)], why


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


class CropShard:
    """A chunk's crops shard (``<chunk>.npz``), its diff masks (``<chunk>.masks.npz``) and tables, filled one
    video at a time in unit order (a real before its fakes)."""

    def __init__(self, chunk: Chunk, directory: Path, masks: bool) -> None:
        self.chunk, self.masks = chunk, masks
        self.files = {"npz": chunk_tmp(directory, chunk, "npz"),
                      "crops.parquet": chunk_tmp(directory, chunk, "crops.parquet"),
                      "status.parquet": chunk_tmp(directory, chunk, "status.parquet")}
        if masks:
            self.files[MASKS] = chunk_tmp(directory, chunk, MASKS)
        self.rows: list[dict] = []
        self.status: list[dict] = []
        self.originals: dict[str, np.ndarray] = {}  # the crops of the unit's real video (it comes before its fakes)
        self.out = ShardFile(self.files["npz"])
        self.mask_out = ShardFile(self.files[MASKS]) if masks else None

    def add(self, source: str, result: tuple[str, list[tuple[dict, np.ndarray]], str]) -> None:
        """One video's :meth:`CropCut.result`."""
        video, crops, error = result
        if video == source:
            self.originals = {meta["key"]: crop for meta, crop in crops}
        for meta, crop in crops:
            self.out.add(meta["key"], encode_png(crop))
            meta["shard"] = f"{self.chunk.name}.npz"
            if self.masks:
                mask, why = (None, "") if video == source else \
                    mask_or_reason(self.originals.get(crop_key(source, meta["frame"], meta["track"])), crop)
                if mask is not None:
                    self.mask_out.add(meta["key"], encode_png(mask))
                meta |= {"mask": f"{self.chunk.name}.{MASKS}" if mask is not None else "",
                         "mask_mean": float(mask.mean() / 255) if mask is not None else float("nan"),
                         "mask_error": why}
            self.rows.append(meta)
        if error:
            log.warning("crops: %s: %s", video, error)
        self.status.append({"video": video, "crops": len(crops), "ok": bool(crops), "error": error})

    def close(self) -> dict[str, Path]:
        """Finish the files; returns them (suffix -> temporary path) for the chunk's record."""
        self.out.close()
        if self.mask_out is not None:
            self.mask_out.close()
        write_parquet(pd.DataFrame(self.rows, columns=CROP_COLUMNS + (MASK_COLUMNS if self.masks else [])),
                      self.files["crops.parquet"])
        write_parquet(pd.DataFrame(self.status, columns=STATUS_COLUMNS), self.files["status.parquet"])
        return self.files


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


def read_crop(crops_dir: str | Path, shard: str, key: str) -> np.ndarray:
    """One crop (RGB) or mask (grey) from a shard directory."""
    reader = ShardReader(crops_dir, open_shards=1)
    try:
        return decode_png(reader.get(shard, key))
    finally:
        reader.close()
