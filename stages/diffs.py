"""DVC stage `diffs`: SSIM difference masks of fake crops against their original's crops."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.diffs import DiffsParams
from dfdc.preprocess.diffs import diff_crops
from dfdc.store import atomic_path, write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--crops", default="data/crops.parquet")
    ap.add_argument("--crops-dir", default="data/crops")
    ap.add_argument("--out-dir", default="data/diffs")
    ap.add_argument("--out", default="data/diffs.parquet")
    args = ap.parse_args()
    p = DiffsParams.load(args.params)
    with atomic_path(args.out_dir, is_dir=True) as tmp:
        diffs = diff_crops(pd.read_parquet(args.crops), args.crops_dir, tmp, workers=p.workers)
    write_parquet(diffs, args.out)
    print(f"diffs: {int(diffs['ok'].sum())} masks, {int((~diffs['ok']).sum())} fake crops without a usable "
          f"original crop; mean difference {diffs['mean'].mean():.3f}")


if __name__ == "__main__":
    main()
