"""DVC stage `detect`: MTCNN faces and tracks on the sampled frames of every real video."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.detect import DetectParams
from dfdc.faces.detector import FaceDetector
from dfdc.preprocess.detect import detect_videos
from dfdc.store import read_meta, write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    ap.add_argument("--out", default="data/faces.parquet")
    ap.add_argument("--status", default="data/detect_status.parquet")
    args = ap.parse_args()
    p = DetectParams.load(args.params)
    detector = FaceDetector.from_params(p)
    faces, status = detect_videos(pd.read_parquet(args.index), detector, every=p.every, min_track=p.min_track,
                                  max_gap=p.max_gap, min_iou=p.min_iou, workers=p.workers)
    write_parquet(faces, args.out, meta={"detect": p.provenance(), "data": read_meta(args.index).get("data")})
    write_parquet(status, args.status)
    no_face = int((status["error"] == "no face").sum())
    print(f"detect: {len(status)} real videos, {len(faces)} faces in {int(status['tracks'].sum())} tracks; "
          f"{no_face} without a face, {int((~status['ok']).sum()) - no_face} unreadable")


if __name__ == "__main__":
    main()
