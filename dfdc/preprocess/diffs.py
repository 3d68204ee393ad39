"""`diffs`: SSIM difference masks of fake crops against their original's crops, one shard per crops shard."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dfdc.codehash import code_digest
from dfdc.faces.crops import crop_key
from dfdc.masks import diff_mask
from dfdc.preprocess.chunks import DONE, Chunk, ChunkStore, RunSummary, chunk_tmp, digest, run_chunks
from dfdc.store import ShardFile, ShardReader, decode_png, encode_png, file_sha256, write_parquet

COLUMNS = ["key", "original_key", "shard", "mean", "ok", "error"]


def _diff_chunk(chunk: Chunk, directory: Path) -> dict[str, Path]:
    crops_dir, shard, fakes, where = chunk.rows
    files = {"npz": chunk_tmp(directory, chunk, "npz"), "diffs.parquet": chunk_tmp(directory, chunk, "diffs.parquet")}
    reader = ShardReader(crops_dir, open_shards=2)
    rows = []
    with ShardFile(files["npz"]) as out:
        for f in fakes:
            okey = crop_key(f["original"], f["frame"], f["track"])
            mask, error = None, ""
            if okey not in where:
                error = "original crop missing"
            else:
                fake, orig = decode_png(reader.get(f["shard"], f["key"])), decode_png(reader.get(where[okey], okey))
                if fake.shape != orig.shape:
                    error = f"crop sizes differ: {fake.shape} vs original {orig.shape}"
                else:
                    try:
                        mask = diff_mask(orig, fake)
                    except ValueError as e:  # e.g. a crop smaller than the SSIM window
                        error = str(e)
            if mask is not None:
                out.add(f["key"], encode_png(mask))
            rows.append({"key": f["key"], "original_key": okey, "shard": f"{chunk.name}.npz" if mask is not None else "",
                         "mean": float(mask.mean() / 255) if mask is not None else float("nan"),
                         "ok": mask is not None, "error": error})
    reader.close()
    write_parquet(pd.DataFrame(rows, columns=COLUMNS), files["diffs.parquet"])
    return files


def diff_chunked(crops: pd.DataFrame, crops_dir: str | Path, out_dir: str | Path, workers: int = 2,
                 progress: bool = True) -> tuple[pd.DataFrame, RunSummary]:
    """SSIM difference mask for each FAKE crop against its original's crop with the same key, resumably: one
    chunk (shard ``<chunk>.npz`` and table) per crops shard, in ``workers`` processes.

    Returns one row per fake crop (key, original_key, shard, mean = mask mean / 255, ok, error) and the
    summary. A chunk is redone when its crops shard changed (the crops stage's record of it, else its bytes).
    """
    crops_dir = Path(crops_dir)
    try:
        made = json.loads((crops_dir / DONE).read_text())["chunks"]
    except (OSError, ValueError, KeyError):
        made = {}
    where = dict(zip(crops["key"], crops["shard"]))
    plan = []
    for shard, group in crops.groupby("shard", sort=True):
        fakes = group[group["label"] == 1]
        if not len(fakes):
            continue
        records = fakes[["key", "original", "frame", "track", "shard"]].to_dict("records")
        needed = {crop_key(f["original"], f["frame"], f["track"]) for f in records}
        sources = {where[k] for k in needed if k in where}
        shards = sorted(sources | {shard})
        seen = [(made.get(s[:-4], {}).get("files", {}).get(s, {}).get("sha256") or file_sha256(crops_dir / s))
                for s in shards]
        plan.append(Chunk(Path(shard).stem, tuple(fakes["key"]), digest([shards, seen, records]),
                          (str(crops_dir), shard, records, {k: where[k] for k in needed if k in where})))
    store = ChunkStore(out_dir, {"stage": "diffs", "code": code_digest("dfdc.preprocess.diffs")})
    summary = run_chunks(store, plan, _diff_chunk, workers, desc="diffs", unit="crops", progress=progress)
    return store.table(plan, "diffs.parquet", COLUMNS), summary


def diff_crops(crops: pd.DataFrame, crops_dir: str | Path, out_dir: str | Path, workers: int = 2,
               progress: bool = True) -> pd.DataFrame:
    """:func:`diff_chunked` without its summary."""
    return diff_chunked(crops, crops_dir, out_dir, workers=workers, progress=progress)[0]
