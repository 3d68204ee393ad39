"""DVC stage `train@MODEL`: train one model of `train.models` on every fold but the holdout."""
from __future__ import annotations

import argparse
import logging

import pandas as pd

from dfdc.config import ParamsError, load_section
from dfdc.store import write_json
from dfdc.train.loop import train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, help="a key of train.models")
    ap.add_argument("--crops", default="data/crops.parquet")
    ap.add_argument("--crops-dir", default="data/crops")
    ap.add_argument("--folds", default="data/folds.parquet")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--live-dir", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train = load_section(args.params, "train")
    if args.model not in train.models:
        raise ParamsError(f"{args.params}: train.models.{args.model}: no such model "
                          f"(defined: {', '.join(sorted(train.models))})")
    holdout = load_section(args.params, "folds").holdout
    result = train_model(args.model, train.models[args.model], pd.read_parquet(args.crops),
                         pd.read_parquet(args.folds), args.crops_dir, args.out_dir, holdout=holdout,
                         device=train.device, live_dir=args.live_dir)
    write_json(result, args.metrics)
    b = result["best"]
    print(f"train@{args.model}: best epoch {b['epoch']}, val log loss {b['val_log_loss']:.4f}, "
          f"auc {b['val_auc']:.3f} ({result['train_crops']} train / {result['val_crops']} holdout crops)")


if __name__ == "__main__":
    main()
