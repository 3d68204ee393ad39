"""DVC stage `degrade`: the degraded holdout's index (each video's source file and its degradation) and face boxes,
for `crops_degraded` and `clips_degraded`, which degrade the frames they read."""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import pandas as pd

from dfdc.config.degrade import DegradeParams
from dfdc.config.folds import FoldsParams
from dfdc.preprocess.degrade import degrade_faces, degrade_holdout
from dfdc.store import atomic_path, read_meta, write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    ap.add_argument("--faces", default="data/faces.parquet")
    ap.add_argument("--folds", default="data/folds.parquet")
    ap.add_argument("--out-dir", default="data/degraded", help="gets index.parquet and faces.parquet")
    args = ap.parse_args()
    p = DegradeParams.load(args.params)
    holdout = FoldsParams.load(args.params).holdout
    index, folds = pd.read_parquet(args.index), pd.read_parquet(args.folds)
    videos = folds.loc[(folds["fold"] == holdout) & folds["label"].isin([0, 1]), "video"]
    out_dir = Path(args.out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        rows, assigned = degrade_holdout(index, videos, shares=p.shares, jpeg_quality=p.jpeg_quality, scale=p.scale,
                                         seed=p.seed)
        sizes = {r.video: (int(r.width), int(r.height)) for r in rows.itertuples() if r.ok}
        faces = degrade_faces(pd.read_parquet(args.faces), index, assigned, sizes)
        write_parquet(rows, tmp / "index.parquet", meta=read_meta(args.index))
        write_parquet(faces, tmp / "faces.parquet", meta=read_meta(args.faces))
    kinds = Counter(d.kind for v, d in assigned.items() if v in set(rows.loc[rows["label"] == 0, "video"]))
    print(f"degrade: {int(rows['ok'].sum())} of {len(rows)} holdout videos to degrade as they are read; originals drew "
          + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + f"; {len(faces)} face boxes moved along")


if __name__ == "__main__":
    main()
