"""The `dfdc` command: tools that run outside the DVC stages."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _cmd_sample(args: argparse.Namespace) -> int:
    from dfdc.datasets.sample import make_sample

    reals = max(1, round(args.videos / (1 + args.fakes_per_real)))
    parts = min(args.parts, reals)
    s = make_sample(args.out, seed=args.seed, parts=parts, reals_per_part=math.ceil(reals / parts),
                    fakes_per_real=args.fakes_per_real)
    print(f"sample: {s.reals} real + {s.fakes} fake videos in {s.parts} parts -> {args.out}")
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from dfdc.datasets.index import write_manifest

    n = write_manifest(args.root, args.out)
    print(f"manifest: {n} videos under {args.root} -> {args.out}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    import pandas as pd

    from dfdc.datasets.index import summarize_index

    index = Path(args.index)
    if index.exists():
        print(summarize_index(pd.read_parquet(index)))
    else:
        print(f"{index}: not built yet (run `dvc repro`)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from dfdc.bench import bench_preprocess, format_table

    roots = args.roots or [r for r in ("data/sample", "../shared/data/ffpp") if Path(r).is_dir()]
    if not roots:
        raise FileNotFoundError("no dataset to benchmark: pass a root (e.g. data/sample after `dvc repro`)")
    rows = []
    for root in roots:
        print(f"bench {args.what}: {root} ...", flush=True)
        rows.append(bench_preprocess(root, every=args.every, workers=args.workers))
    print(format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dfdc", description="Deepfake-detection pipeline tools.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="build the sample dataset (DFDC layout) outside DVC")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--videos", type=int, default=36, help="about how many videos in all (default 36)")
    p.add_argument("--fakes-per-real", type=int, default=2)
    p.add_argument("--parts", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("manifest", help="list a dataset's videos (size, mtime) so DVC tracks a small file")
    p.add_argument("root")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=_cmd_manifest)

    p = sub.add_parser("bench", help="benchmark a part of the pipeline against its baseline")
    p.add_argument("what", choices=["preprocess"])
    p.add_argument("roots", nargs="*", help="dataset roots (default: data/sample and ../shared/data/ffpp)")
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("summary", help="print what the pipeline has produced")
    p.add_argument("--index", default="data/index.parquet")
    p.set_defaults(func=_cmd_summary)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dfdc` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
