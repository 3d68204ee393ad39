"""DVC stage `diffs`: SSIM difference masks of fake crops against their original's crops."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.diffs import DiffsParams
from dfdc.preprocess.diffs import diff_chunked
from dfdc.store import write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--crops", default="data/crops.parquet")
    ap.add_argument("--crops-dir", default="data/crops")
    ap.add_argument("--out-dir", default="data/diffs")
    ap.add_argument("--out", default="data/diffs.parquet")
    args = ap.parse_args()
    p = DiffsParams.load(args.params)
    diffs, run = diff_chunked(pd.read_parquet(args.crops), args.crops_dir, args.out_dir, workers=p.workers)
    write_parquet(diffs, args.out)
    print(f"diffs: {int(diffs['ok'].sum())} masks, {int((~diffs['ok']).sum())} fake crops without a usable "
          f"original crop; mean difference {diffs['mean'].mean():.3f}; {run}")


if __name__ == "__main__":
    main()
