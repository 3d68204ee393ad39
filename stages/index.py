"""DVC stage: index the dataset under ``data.root`` into ``data/index.parquet``."""
from __future__ import annotations

import argparse
import logging
import sys

from dfdc import store
from dfdc.config.data import DataParams
from dfdc.config.index import IndexParams
from dfdc.datasets.index import build_index, index_meta, summarize_index
from dfdc.video import library_logs


def main(argv: list[str] | None = None) -> int:
    """Build the index and write it as parquet; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/index.parquet")
    ap.add_argument("--verbose", action="store_true", help="show FFmpeg's and OpenCV's own log lines")
    args = ap.parse_args(argv)
    library_logs(args.verbose)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        data = DataParams.load(args.params)
        idx = IndexParams.load(args.params)
        df = build_index(data.root, workers=idx.workers)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    store.write_parquet(df, args.out, meta=index_meta(df, data.root))
    print(summarize_index(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
