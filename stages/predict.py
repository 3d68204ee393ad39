"""DVC stages `predict@MODEL` / `predict_stacked@MODEL`: score the holdout with the model's best checkpoint,
clean and degraded, in one process.

The "thresholds" strategy's rules are fitted on the clean holdout (cross-fitted over its originals); each
degraded video is then scored with the rules its clean twin was scored with, fitted without it.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from dfdc.config.folds import FoldsParams
from dfdc.config.predict import PredictParams
from dfdc.device import pick_device
from dfdc.eval.holdout import holdout_videos, score_holdout
from dfdc.inference.scorer import from_checkpoint
from dfdc.models.checkpoint import CheckpointError
from dfdc.store import atomic_path, file_sha256, write_json, write_parquet

DEGRADED = "degraded"  # the degraded holdout's tables, in this subfolder of the output


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--inputs", required=True, help="the holdout's inputs table: crops or clips")
    ap.add_argument("--inputs-dir", required=True, help="its shards")
    ap.add_argument("--degraded", required=True, help="the same table of the degraded holdout")
    ap.add_argument("--degraded-dir", required=True, help="its shards")
    ap.add_argument("--folds", default="data/folds.parquet")
    ap.add_argument("--out-dir", required=True, help=f"gets videos.parquet, frames.parquet, thresholds.json and "
                                                     f"{DEGRADED}/ with the degraded holdout's two tables")
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
    scored, frames, fit = score_holdout(model, pd.read_parquet(args.inputs), videos, args.inputs_dir, scoring=p,
                                        device=device)
    rules = fit.rules_by_video() if fit is not None else None
    degraded, dframes, _ = score_holdout(model, pd.read_parquet(args.degraded), videos, args.degraded_dir,
                                        scoring=p, device=device, rules_by_video=rules)
    # which checkpoint and scoring made these numbers: `evaluate` writes them into the ensemble file
    meta = {"model": model.name, "checkpoint": args.checkpoint, "sha256": file_sha256(args.checkpoint),
            "strategy": p.strategy, "tta": p.tta}
    with atomic_path(args.out_dir, is_dir=True) as tmp:
        for folder, (s, f) in ((tmp, (scored, frames)), (tmp / DEGRADED, (degraded, dframes))):
            folder.mkdir(parents=True, exist_ok=True)
            write_parquet(s, folder / "videos.parquet", meta=meta)
            write_parquet(f[["key", "video", "frame", "track", "label", "prob"]], folder / "frames.parquet", meta=meta)
        write_json({"strategy": p.strategy, **(fit.to_dict() if fit else {"rules": None})}, tmp / "thresholds.json")
    how = ""
    if fit is not None:
        how = (" (rules " + str([list(r) for r in fit.rules]) + " fitted on every video ship; " +
               ("each video scored with the rules fitted on the other originals, its degraded twin too)"
                if fit.cross_fitted else "too few originals to cross-fit: both holdouts scored with the plain mean)"))
    no_face = int((scored["reason"] != "").sum())
    print(f"predict@{model.name}: {len(scored)} holdout videos ({no_face} without a face -> 0.5), {len(frames)} "
          f"{'windows' if model.spec.input == 'clip' else 'crops'}; degraded: {len(dframes)}; strategy "
          f"{p.strategy}{how}, tta {p.tta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
