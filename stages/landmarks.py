"""DVC stage `landmarks`: dlib's 68 points for every face crop, in the crops table's key order; a crop whose fit
fails is recorded (``dense_ok`` false, ``dense_error``) and trains on the 5-point geometry."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.landmarks import LandmarksParams
from dfdc.preprocess.landmarks import landmarks_chunked
from dfdc.store import write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--crops", default="data/crops", help="the crops' folder (its table: <folder>.parquet)")
    ap.add_argument("--faces", default="data/faces.parquet")
    ap.add_argument("--out", default="data/landmarks.parquet")
    ap.add_argument("--work-dir", default="data/landmarks", help="finished chunks (kept: a rerun resumes)")
    ap.add_argument("--scheduler", default=None, help="a Dask scheduler's address (default: $DFDC_SCHEDULER)")
    args = ap.parse_args()
    p = LandmarksParams.load(args.params)
    crops = pd.read_parquet(f"{args.crops}.parquet")
    table, run = landmarks_chunked(crops, pd.read_parquet(args.faces), args.crops, args.work_dir, workers=p.workers,
                                   model=p.model, scheduler=args.scheduler)
    write_parquet(table, args.out, meta={"landmarks": {"model": p.model or "face-recognition-models 0.3.0"}})
    failed = table.loc[~table["dense_ok"], "dense_error"].str.replace(r"\s*[(:].*$", "", regex=True).value_counts()
    why = ", ".join(f"{n} {reason}" for reason, n in failed.items()) or "none"
    print(f"landmarks: 68 points for {int(table['dense_ok'].sum())} of {len(table)} crops; "
          f"5-point fallback for {int((~table['dense_ok']).sum())} ({why}); {run}")


if __name__ == "__main__":
    main()
