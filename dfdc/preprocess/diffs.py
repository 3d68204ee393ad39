"""`diffs`: SSIM difference masks of fake crops against their original's crops."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm import tqdm

from dfdc.faces.crops import crop_key
from dfdc.masks import diff_mask
from dfdc.parallel import prefetch_map
from dfdc.store import ShardReader, ShardWriter, decode_png, encode_png


def diff_crops(
    crops: pd.DataFrame,
    crops_dir: str | Path,
    out_dir: str | Path,
    workers: int = 2,
    shard_size: int = 512,
    progress: bool = True,
) -> pd.DataFrame:
    """SSIM difference mask for each FAKE crop against its original's crop with the same key.

    Returns one row per fake crop: key, original_key, shard, mean (mask mean / 255), ok, error.
    """
    fakes = crops[crops["label"] == 1]
    where = dict(zip(crops["key"], crops["shard"]))
    reader = ShardReader(crops_dir)
    writer = ShardWriter(out_dir, shard_size)

    def load(f):
        okey = crop_key(f.original, f.frame, f.track)
        if okey not in where:
            return f, okey, None, None
        return f, okey, decode_png(reader.get(f.shard, f.key)), decode_png(reader.get(where[okey], okey))

    def work(args):
        f, okey, fake, orig = args
        if orig is None:
            return f, okey, None, "original crop missing"
        if fake.shape != orig.shape:
            return f, okey, None, f"crop sizes differ: {fake.shape} vs original {orig.shape}"
        try:
            return f, okey, diff_mask(orig, fake), ""
        except ValueError as e:  # e.g. a crop smaller than the SSIM window
            return f, okey, None, str(e)

    rows = []
    loaded = (load(f) for f in fakes.itertuples())  # shard reads stay on this thread
    for f, okey, mask, error in tqdm(prefetch_map(work, loaded, workers), total=len(fakes), desc="diffs",
                                     unit="crop", disable=not progress):
        shard = writer.add(f.key, encode_png(mask)) if mask is not None else ""
        rows.append({"key": f.key, "original_key": okey, "shard": shard,
                     "mean": float(mask.mean() / 255) if mask is not None else float("nan"),
                     "ok": mask is not None, "error": error})
    writer.close()
    reader.close()
    return pd.DataFrame(rows, columns=["key", "original_key", "shard", "mean", "ok", "error"])
