"""DVC stage `predict@MODEL`: score every holdout video with the model's best checkpoint."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from dfdc.config.folds import FoldsParams
from dfdc.config.predict import PredictParams
from dfdc.device import pick_device
from dfdc.inference.holdout import holdout_videos, score_holdout
from dfdc.inference.scorer import from_checkpoint
from dfdc.store import atomic_path, file_sha256, write_json, write_parquet
from dfdc.train.checkpoint import CheckpointError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--crops", default="data/crops.parquet")
    ap.add_argument("--crops-dir", default="data/crops")
    ap.add_argument("--folds", default="data/folds.parquet")
    ap.add_argument("--out-dir", required=True, help="gets videos.parquet, frames.parquet and thresholds.json")
    ap.add_argument("--rules-from", help="thresholds.json of the clean holdout: strategy 'thresholds' scores each "
                                         "video with the rules fitted without it there, instead of fitting anew")
    args = ap.parse_args()
    p = PredictParams.load(args.params)
    holdout = FoldsParams.load(args.params).holdout
    device = pick_device(p.device)
    try:
        model = from_checkpoint(args.checkpoint, device)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    given = None
    if args.rules_from and p.strategy == "thresholds" and model.spec.input == "frame":  # clip models: no rules
        from dfdc.eval.thresholds import read_fit

        _, given = read_fit(json.loads(Path(args.rules_from).read_text()), args.rules_from)
    videos = holdout_videos(pd.read_parquet(args.folds), holdout)
    scored, frames, fit = score_holdout(model, pd.read_parquet(args.crops), videos, args.crops_dir,
                                        strategy=p.strategy, tta=p.tta, batch_size=p.batch_size, device=device,
                                        levels=p.thresholds.levels, splits=p.thresholds.splits,
                                        rules_by_video=given)
    # which checkpoint and scoring made these numbers: `evaluate` writes them into the ensemble file
    meta = {"model": model.name, "checkpoint": args.checkpoint, "sha256": file_sha256(args.checkpoint),
            "strategy": p.strategy, "tta": p.tta}
    with atomic_path(args.out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        write_parquet(scored, tmp / "videos.parquet", meta=meta)
        write_parquet(frames[["key", "video", "frame", "track", "label", "prob"]], tmp / "frames.parquet", meta=meta)
        write_json({"strategy": p.strategy, **(fit.to_dict() if fit else {"rules": None})}, tmp / "thresholds.json")
    rules = ""
    if fit is not None:
        how = ("each video scored with the rules fitted on the other originals" if fit.cross_fitted else
               "too few originals to cross-fit: the holdout scored with the plain mean")
        rules = f" (rules {[list(r) for r in fit.rules]} fitted on every video ship; {how})"
    elif given is not None:
        rules = f" (the rules fitted without each video in {args.rules_from})"
    print(f"predict@{model.name}: {len(scored)} holdout videos ({int((scored['reason'] != '').sum())} without "
          f"a face -> 0.5), {len(frames)} frames, strategy {p.strategy}{rules}, tta {p.tta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
