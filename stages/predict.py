"""DVC stage `predict@MODEL`: score every holdout video with the model's best checkpoint."""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from dfdc.config.folds import FoldsParams
from dfdc.config.predict import PredictParams
from dfdc.device import pick_device
from dfdc.inference.holdout import holdout_videos, score_holdout
from dfdc.inference.scorer import from_checkpoint
from dfdc.store import atomic_path, file_sha256, write_parquet
from dfdc.train.checkpoint import CheckpointError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--crops", default="data/crops.parquet")
    ap.add_argument("--crops-dir", default="data/crops")
    ap.add_argument("--folds", default="data/folds.parquet")
    ap.add_argument("--out-dir", required=True, help="gets videos.parquet and frames.parquet")
    args = ap.parse_args()
    p = PredictParams.load(args.params)
    holdout = FoldsParams.load(args.params).holdout
    device = pick_device(p.device)
    try:
        model = from_checkpoint(args.checkpoint, device)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    videos = holdout_videos(pd.read_parquet(args.folds), holdout)
    scored, frames = score_holdout(model, pd.read_parquet(args.crops), videos, args.crops_dir, strategy=p.strategy,
                                   tta=p.tta, batch_size=p.batch_size, device=device)
    # which checkpoint and scoring made these numbers: `evaluate` writes them into the ensemble file
    meta = {"model": model.name, "checkpoint": args.checkpoint, "sha256": file_sha256(args.checkpoint),
            "strategy": p.strategy, "tta": p.tta}
    with atomic_path(args.out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        write_parquet(scored, tmp / "videos.parquet", meta=meta)
        write_parquet(frames[["key", "video", "frame", "track", "label", "prob"]], tmp / "frames.parquet", meta=meta)
    print(f"predict@{model.name}: {len(scored)} holdout videos ({int((scored['reason'] != '').sum())} without "
          f"a face -> 0.5), {len(frames)} frames, strategy {p.strategy}, tta {p.tta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
