"""DVC stage `folds`: leak-free folds (a fake shares its original's fold)."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.folds import FoldsParams
from dfdc.folds import assign_folds, with_methods
from dfdc.store import write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    ap.add_argument("--out", default="data/folds.parquet")
    args = ap.parse_args()
    p = FoldsParams.load(args.params)
    index = pd.read_parquet(args.index)
    folds = with_methods(assign_folds(index, k=p.k, by=p.group, seed=p.seed), index)
    write_parquet(folds, args.out)
    sizes = folds.groupby("fold").size().to_dict()
    print(f"folds: {len(folds)} videos in {p.k} folds {sizes}, {folds['group'].nunique()} groups, "
          f"holdout fold {p.holdout}; no original crosses folds")


if __name__ == "__main__":
    main()
