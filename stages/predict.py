"""DVC stage `predict@MODEL`: score every holdout video with the model's best checkpoint."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config import load_section
from dfdc.device import pick_device
from dfdc.inference.predict import load_checkpoint, score_crops, video_scores
from dfdc.store import atomic_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--crops", default="data/crops.parquet")
    ap.add_argument("--crops-dir", default="data/crops")
    ap.add_argument("--folds", default="data/folds.parquet")
    ap.add_argument("--out-dir", required=True, help="gets videos.parquet and frames.parquet")
    args = ap.parse_args()
    p = load_section(args.params, "predict")
    holdout = load_section(args.params, "folds").holdout
    device = pick_device(p.device)
    model, ckpt = load_checkpoint(args.checkpoint, device=str(device))
    folds = pd.read_parquet(args.folds)
    videos = folds[(folds["fold"] == holdout) & folds["label"].isin([0, 1])][["video", "label", "fold"]]
    crops = pd.read_parquet(args.crops)
    frames = crops[crops["video"].isin(videos["video"])].reset_index(drop=True)
    frames["prob"] = score_crops(model, frames, args.crops_dir, ckpt["params"]["input_size"],
                                 batch_size=p.batch_size, device=device, tta=p.tta)
    scored = video_scores(videos, frames[["video", "frame", "track", "prob"]], p.strategy)
    with atomic_path(args.out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        scored.to_parquet(tmp / "videos.parquet", index=False)
        frames[["key", "video", "frame", "track", "label", "prob"]].to_parquet(tmp / "frames.parquet", index=False)
    print(f"predict@{ckpt['name']}: {len(scored)} holdout videos ({int((scored['reason'] != '').sum())} without "
          f"a face -> 0.5), {len(frames)} frames, strategy {p.strategy}, tta {p.tta}")


if __name__ == "__main__":
    main()
