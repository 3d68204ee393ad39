"""`landmarks`: 68 dense landmarks of every face crop, chunked and resumable like the other stages.

One chunk per crops shard (the crops of a chunk of originals), so a changed crops shard redoes
its landmarks alone. Each crop gets dlib's 68 points from the detector's box in the crop; a crop
whose fit fails (unreadable, no box, or points that disagree with MTCNN's 5) is kept with
``dense_ok`` false and ``dense_error`` saying why: training then falls back to the 5-point
geometry for it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfdc.codehash import code_digest
from dfdc.faces.landmarks import (DENSE_COLUMNS, MAX_ERROR, POINTS, DensePredictor, face_boxes_in_crops,
                                  five_point_error)
from dfdc.preprocess.chunks import DONE, Chunk, ChunkStore, RunSummary, chunk_tmp, plan_chunks, run_chunks
from dfdc.preprocess.columns import LANDMARK_COLUMNS as LANDMARKS
from dfdc.store import ShardReader, decode_png, file_sha256, write_parquet

COLUMNS = ["key", "shard", "dense_ok", "dense_error", "five_error", *DENSE_COLUMNS]

_WORKER: dict[str, Any] = {}


def _init_worker(model: str | None) -> None:
    _WORKER["predictor"] = DensePredictor(model)


def dense_rows(rows: pd.DataFrame, directory: str | Path, predictor: DensePredictor) -> pd.DataFrame:
    """The landmarks table of crop ``rows`` (with ``fx1..fy2``: the detector box in the crop), in their order."""
    reader = ShardReader(directory)
    out = []
    try:
        for r in rows.to_dict("records"):
            row: dict[str, Any] = {"key": r["key"], "shard": r["shard"], "dense_ok": False, "dense_error": "",
                                   "five_error": float("nan")}
            points = np.full((POINTS, 2), np.nan, np.float32)
            box = np.array([r["fx1"], r["fy1"], r["fx2"], r["fy2"]], np.float64)
            try:
                image = decode_png(reader.get(r["shard"], r["key"]))
                image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
            except Exception as e:  # noqa: BLE001 - a crop that cannot be read is recorded, not fatal
                row["dense_error"] = f"crop unreadable: {type(e).__name__}: {e}"
            else:
                if not np.isfinite(box).all():
                    row["dense_error"] = "no detector box for this crop in the faces table"
                else:
                    points = predictor(image, box)
                    five = np.array([r[c] for c in LANDMARKS], np.float64).reshape(5, 2)
                    if np.isfinite(five).all():
                        row["five_error"] = err = five_point_error(points, five)
                        if err > MAX_ERROR:
                            row["dense_error"] = (f"the 68 points disagree with the detector's 5 ({err:.2f} eye "
                                                  f"distances apart, limit {MAX_ERROR}): likely a profile face")
                    else:
                        row["dense_error"] = "the crop has no 5-point landmarks to check the fit against"
                    row["dense_ok"] = not row["dense_error"]
            row.update(zip(DENSE_COLUMNS, points.reshape(-1).tolist()))
            out.append(row)
    finally:
        reader.close()
    table = pd.DataFrame(out, columns=COLUMNS)
    return table.astype({c: "float32" for c in DENSE_COLUMNS} | {"dense_ok": bool, "five_error": "float64"})


def _landmarks_chunk(chunk: Chunk, directory: Path) -> dict[str, Path]:
    unit = chunk.rows[0]
    table = dense_rows(unit["rows"], unit["crops_dir"], _WORKER["predictor"])
    path = chunk_tmp(directory, chunk, "parquet")
    write_parquet(table, path)
    return {"parquet": path}


def shard_digests(crops_dir: str | Path, shards: list[str]) -> dict[str, str]:
    """SHA-256 of each crops shard: from the crops' ``done.json`` record where it lists the file at its recorded
    size (the `cut` stage wrote both), else read from the file."""
    crops_dir = Path(crops_dir)
    recorded: dict[str, dict] = {}
    try:
        record = json.loads((crops_dir / DONE).read_text())
        recorded = {f: meta for c in record.get("chunks", {}).values() for f, meta in c.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        pass
    out = {}
    for s in shards:
        meta, path = recorded.get(s), crops_dir / s
        same = meta is not None and path.is_file() and path.stat().st_size == meta.get("bytes")
        out[s] = meta["sha256"] if same else file_sha256(path)
    return out


def landmarks_chunked(crops: pd.DataFrame, faces: pd.DataFrame, crops_dir: str | Path, work_dir: str | Path, *,
                      workers: int = 2, model: str | None = None, progress: bool = True,
                      scheduler: str | None = None) -> tuple[pd.DataFrame, RunSummary]:
    """The landmarks of every row of ``crops`` (shards in ``crops_dir``), in its order: one chunk per shard in
    ``work_dir`` (recorded in ``done.json``), in ``workers`` processes or on the Dask cluster at ``scheduler``."""
    crops = crops.reset_index(drop=True)
    boxes = face_boxes_in_crops(crops, faces)
    rows = crops[["key", "shard", *LANDMARKS]].assign(fx1=boxes[:, 0], fy1=boxes[:, 1], fx2=boxes[:, 2],
                                                      fy2=boxes[:, 3])
    shards = list(dict.fromkeys(rows["shard"].astype(str)))
    digests = shard_digests(crops_dir, shards)
    units = [(Path(s).stem, s, {"rows": rows[rows["shard"] == s], "crops_dir": str(crops_dir),
                                 "sha256": digests[s]}) for s in shards]
    plan = plan_chunks(units, 1, lambda us: [[u["sha256"], pd.util.hash_pandas_object(u["rows"], index=False)
                                              .sum()] for u in us])
    identity = {"stage": "landmarks", "model": Path(model).name if model else "face-recognition-models",
                "max_error": MAX_ERROR, "code": code_digest("dfdc.preprocess.landmarks", "dfdc.faces.landmarks")}
    store = ChunkStore(work_dir, identity)
    summary = run_chunks(store, plan, _landmarks_chunk, workers, desc="landmarks", initializer=_init_worker,
                         initargs=(model,), progress=progress, unit="shards", scheduler=scheduler)
    table = store.table(plan, "parquet", COLUMNS)
    order = pd.Series(range(len(crops)), index=crops["key"].astype(str))
    table = table.iloc[np.argsort(order.reindex(table["key"].astype(str)).to_numpy(), kind="stable")]
    return table.reset_index(drop=True), summary
