"""DVC stage `detect`: MTCNN faces and tracks on the sampled frames of every real video."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config import load_section
from dfdc.faces.detector import FaceDetector
from dfdc.preprocess import detect_videos
from dfdc.store import write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    ap.add_argument("--out", default="data/faces.parquet")
    ap.add_argument("--status", default="data/detect_status.parquet")
    args = ap.parse_args()
    p = load_section(args.params, "detect")
    detector = FaceDetector(device=p.device, thresholds=p.thresholds, min_score=p.min_score,
                            min_face_size=p.min_face_size, max_faces=p.max_faces, batch_size=p.batch_size)
    faces, status = detect_videos(pd.read_parquet(args.index), detector, every=p.every, min_track=p.min_track,
                                  max_gap=p.max_gap, min_iou=p.min_iou, workers=p.workers)
    write_parquet(faces, args.out)
    write_parquet(status, args.status)
    no_face = int((status["error"] == "no face").sum())
    print(f"detect: {len(status)} real videos, {len(faces)} faces in {int(status['tracks'].sum())} tracks; "
          f"{no_face} without a face, {int((~status['ok']).sum()) - no_face} unreadable")


if __name__ == "__main__":
    main()
