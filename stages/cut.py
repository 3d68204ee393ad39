"""DVC stages `cut` and `cut_degraded`: the face crops (with each fake crop's SSIM diff mask; not for the degraded
holdout: nothing trains on it) and the face-track clips of every video, real and fake, at its original's boxes,
from one decode. A changed `crops` or `clips` setting redoes that output alone; the other keeps its bytes."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.clips import ClipsParams
from dfdc.config.crops import CropsParams
from dfdc.preprocess.cut import clip_settings, cut_chunked
from dfdc.store import read_meta, write_parquet
from dfdc.video import library_logs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    ap.add_argument("--faces", default="data/faces.parquet")
    ap.add_argument("--crops", default="data/crops", help="the crops' folder; its table and status go beside it "
                    "(<folder>.parquet, <folder>_status.parquet)")
    ap.add_argument("--clips", default="data/clips", help="the clips' folder, its table and status likewise")
    ap.add_argument("--no-masks", dest="masks", action="store_false", help="no SSIM diff masks of the fakes")
    ap.add_argument("--scheduler", default=None, help="a Dask scheduler's address (default: $DFDC_SCHEDULER): run "
                    "the chunks on that cluster (the repository and videos at the same paths on every worker)")
    ap.add_argument("--verbose", action="store_true", help="show FFmpeg's and OpenCV's own log lines")
    args = ap.parse_args()
    library_logs(args.verbose)
    p, c = CropsParams.load(args.params), ClipsParams.load(args.params)
    index, faces = pd.read_parquet(args.index), pd.read_parquet(args.faces)
    out = cut_chunked(index, faces, crops_dir=args.crops, clips_dir=args.clips, margin=p.margin, masks=args.masks,
                      clips=clip_settings(c), workers=p.workers, chunk=p.chunk,
                      scheduler=args.scheduler)
    # what cut them travels with them, into every checkpoint trained on them
    detect, data = read_meta(args.faces).get("detect"), read_meta(args.index).get("data")
    crops, status, run = out["crops"]
    write_parquet(crops, f"{args.crops}.parquet", meta={"detect": detect, "crops": p.provenance(), "data": data})
    write_parquet(status, f"{args.crops}_status.parquet")
    orphan = int(status["error"].eq("original has no faces").sum())
    masks = ""
    if args.masks:
        fake = crops[crops["label"] == 1]
        made = fake["mask"] != ""
        masks = (f"; {int(made.sum())} diff masks (mean difference {fake.loc[made, 'mask_mean'].mean():.3f}), "
                 f"{int((~made).sum())} fake crops without a usable original crop")
    print(f"crops: {len(crops)} crops from {int(status['ok'].sum())} of {len(status)} videos; "
          f"{orphan} fakes got no crops because their original has no face; "
          f"{int(status['error'].str.startswith('shorter').sum())} shorter than their original{masks}; {run}")
    clips, status, run = out["clips"]
    write_parquet(clips, f"{args.clips}.parquet", meta={"detect": detect, "clips": c.provenance(), "data": data})
    write_parquet(status, f"{args.clips}_status.parquet")
    print(f"clips: {len(clips)} clips of {c.window} frames from {int(status['ok'].sum())} of {len(status)} videos; "
          f"{int(status['short_tracks'].sum())} tracks shorter than a window, "
          f"{int(status['edge_clips'].sum())} clips reach past the frame edge, "
          f"{int(status['error'].str.startswith('shorter').sum())} fakes shorter than their original; {run}")


if __name__ == "__main__":
    main()
