"""DVC stage `detect`: MTCNN faces and tracks on the sampled frames of every real video."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.detect import DetectParams
from dfdc.preprocess.detect import detect_chunked
from dfdc.store import read_meta, write_parquet
from dfdc.video import library_logs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    ap.add_argument("--out", default="data/faces.parquet")
    ap.add_argument("--status", default="data/detect_status.parquet")
    ap.add_argument("--work-dir", default="data/detect", help="finished chunks (kept: a rerun resumes)")
    ap.add_argument("--scheduler", default=None, help="a Dask scheduler's address (default: $DFDC_SCHEDULER): run "
                    "the chunks on that cluster (the repository and videos at the same paths on every worker)")
    ap.add_argument("--verbose", action="store_true", help="show FFmpeg's and OpenCV's own log lines")
    args = ap.parse_args()
    library_logs(args.verbose)
    p = DetectParams.load(args.params)
    faces, status, run = detect_chunked(pd.read_parquet(args.index), p, args.work_dir, scheduler=args.scheduler)
    write_parquet(faces, args.out, meta={"detect": p.provenance(), "data": read_meta(args.index).get("data")})
    write_parquet(status, args.status)
    no_face = int((status["error"] == "no face").sum())
    print(f"detect: {len(status)} real videos, {len(faces)} faces in {int(status['tracks'].sum())} tracks; "
          f"{no_face} without a face, {int((~status['ok']).sum()) - no_face} unreadable; {run}")


if __name__ == "__main__":
    main()
