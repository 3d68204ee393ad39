"""DVC stage `clips`: face-track clips of every video, real and fake, at its original's tracks."""
from __future__ import annotations

import argparse

import pandas as pd

from dfdc.config.clips import ClipsParams
from dfdc.preprocess.clips import clip_chunked
from dfdc.store import read_meta, write_parquet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--index", default="data/index.parquet")
    ap.add_argument("--faces", default="data/faces.parquet")
    ap.add_argument("--out-dir", default="data/clips")
    ap.add_argument("--out", default="data/clips.parquet")
    ap.add_argument("--status", default="data/clips_status.parquet")
    ap.add_argument("--scheduler", default=None, help="a Dask scheduler's address (default: $DFDC_SCHEDULER): run "
                    "the chunks on that cluster (the repository and videos at the same paths on every worker)")
    args = ap.parse_args()
    p = ClipsParams.load(args.params)
    clips, status, run = clip_chunked(pd.read_parquet(args.index), pd.read_parquet(args.faces), args.out_dir,
                                      window=p.window, stride=p.stride, per_track=p.per_track, size=p.size,
                                      margin=p.margin, codec=p.codec, crf=p.crf, workers=p.workers, chunk=p.chunk,
                                      scheduler=args.scheduler)
    meta = {"detect": read_meta(args.faces).get("detect"), "clips": p.provenance(),
            "data": read_meta(args.index).get("data")}
    write_parquet(clips, args.out, meta=meta)
    write_parquet(status, args.status)
    print(f"clips: {len(clips)} clips of {p.window} frames from {int(status['ok'].sum())} of {len(status)} videos; "
          f"{int(status['short_tracks'].sum())} tracks shorter than a window, "
          f"{int(status['edge_clips'].sum())} clips reach past the frame edge, "
          f"{int(status['error'].str.startswith('shorter').sum())} fakes shorter than their original; {run}")


if __name__ == "__main__":
    main()
