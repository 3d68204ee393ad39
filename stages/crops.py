"""DVC stages `crops` and `crops_degraded`: face crops of every video, real and fake, at its original's boxes,
with each fake crop's SSIM diff mask (not for the degraded holdout: nothing trains on it)."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.crops import CropsParams
from dfdc.preprocess.crops import crop_chunked
from dfdc.store import read_meta, write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    ap.add_argument("--faces", default="data/faces.parquet")
    ap.add_argument("--out-dir", default="data/crops")
    ap.add_argument("--out", default="data/crops.parquet")
    ap.add_argument("--status", default="data/crops_status.parquet")
    ap.add_argument("--no-masks", dest="masks", action="store_false", help="no SSIM diff masks of the fakes")
    ap.add_argument("--scheduler", default=None, help="a Dask scheduler's address (default: $DFDC_SCHEDULER): run "
                    "the chunks on that cluster (the repository and videos at the same paths on every worker)")
    args = ap.parse_args()
    p = CropsParams.load(args.params)
    crops, status, run = crop_chunked(pd.read_parquet(args.index), pd.read_parquet(args.faces), args.out_dir,
                                      margin=p.margin, workers=p.workers, chunk=p.chunk, masks=args.masks,
                                      scheduler=args.scheduler)
    faces_meta = read_meta(args.faces)
    # what cut these crops travels with them, into every checkpoint trained on them
    meta = {"detect": faces_meta.get("detect"), "crops": p.provenance(), "data": read_meta(args.index).get("data")}
    write_parquet(crops, args.out, meta=meta)
    write_parquet(status, args.status)
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


if __name__ == "__main__":
    main()
