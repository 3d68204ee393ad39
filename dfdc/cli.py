"""The `dfdc` command: tools that run outside the DVC stages."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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
    import json

    import pandas as pd

    from dfdc.datasets.index import summarize_index
    from dfdc.evaluate import format_metrics_table

    index, metrics = Path(args.index), Path(args.metrics)
    if not index.exists():
        print(f"{index}: not built yet (run `dvc repro`)")
        return 0
    print(summarize_index(pd.read_parquet(index)))
    if metrics.exists():
        print(f"holdout metrics ({metrics}):")
        print(format_metrics_table(json.loads(metrics.read_text())))
    else:
        print(f"{metrics}: not built yet (run `dvc repro`)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from dfdc.bench import bench_predict, bench_preprocess, format_predict_table, format_table

    roots = args.roots or [r for r in ("data/sample", "../shared/data/ffpp") if Path(r).is_dir()]
    if not roots:
        raise FileNotFoundError("no dataset to benchmark: pass a root (e.g. data/sample after `dvc repro`)")
    checkpoints = resolve_models(args.models, args.models_dir) if args.what == "predict" else []
    scoring_defaults(args)
    if args.what == "predict" and not args.models:
        checkpoints = checkpoints[:1]  # one small model, as the goal is stated
    rows = []
    for root in roots:
        print(f"bench {args.what}: {root} ...", flush=True)
        if args.what == "preprocess":
            rows.append(bench_preprocess(root, every=args.every, workers=args.workers))
        else:
            rows.append(bench_predict(root, checkpoints, frames=args.frames, detect_every=args.detect_every,
                                      tta=args.tta, workers=args.workers, device=args.device))
    print(format_table(rows) if args.what == "preprocess" else format_predict_table(rows))
    return 0


def scoring_defaults(args: argparse.Namespace) -> None:
    """Fill ``--strategy`` and ``--tta`` left unset from the params file's `predict` section (how `evaluate` scored)."""
    from dfdc.config import PredictParams, load_section

    p = load_section(args.params, "predict") if Path(args.params).is_file() else PredictParams()
    if getattr(args, "strategy", "") is None:
        args.strategy = p.strategy
    if args.tta is None:
        args.tta = p.tta


def resolve_models(names: list[str] | None, models_dir: str | Path = "models") -> list[Path]:
    """Checkpoint paths for ``--models``: files as given, names as MODELS_DIR/NAME/best.pt (default: all)."""
    models_dir = Path(models_dir)
    available = sorted(p.parent.name for p in models_dir.glob("*/best.pt"))
    if not names:
        if not available:
            raise FileNotFoundError(f"no trained model in {models_dir}/*/best.pt: run `dvc repro` or pass --models")
        return [models_dir / n / "best.pt" for n in available]
    out = []
    for name in names:
        path = Path(name) if Path(name).suffix in (".pt", ".pth") else models_dir / name / "best.pt"
        if not path.is_file():
            raise FileNotFoundError(f"model {name!r} not found at {path} (available: {', '.join(available) or 'none'})")
        out.append(path)
    return out


def _cmd_predict(args: argparse.Namespace) -> int:
    import time

    from dfdc.device import pick_device
    from dfdc.faces.detector import FaceDetector
    from dfdc.inference.video import list_inputs, load_ensemble, predict_videos, write_report, write_submission

    files = list_inputs(args.videos_dir)
    checkpoints = resolve_models(args.models, args.models_dir)
    scoring_defaults(args)
    device = pick_device(args.device)
    t0 = time.perf_counter()
    models = load_ensemble(checkpoints, device)
    detector = FaceDetector(device=str(device))
    results = predict_videos(files, models, detector, frames=args.frames, detect_every=args.detect_every,
                             strategy=args.strategy, tta=args.tta, workers=args.workers, device=device,
                             thumbs=args.report is not None)
    write_submission(results, args.out)
    if args.report:
        for r in results:
            write_report(r, args.report)
    dt = time.perf_counter() - t0
    fallback = sum(1 for r in results if r.reason)
    print(f"predict: {len(results)} files in {dt:.1f} s ({len(results) / dt:.2f} videos/s) with "
          f"{len(models)} model(s) on {device}, strategy {args.strategy}, tta {args.tta}; {fallback} scored 0.5 "
          f"(unreadable or no face) -> {args.out}")
    return 0


def _scoring_flags(p: argparse.ArgumentParser, strategy: bool = True) -> None:
    if strategy:
        p.add_argument("--strategy", choices=["mean", "confident", "weighted"],
                       help="how frame scores make a video score (default: predict.strategy in --params)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction,
                   help="average each crop with its horizontal flip (default: predict.tta in --params)")
    p.add_argument("--params", default="params.yaml",
                   help="params file whose `predict` section gives the defaults above (default params.yaml; "
                        "when absent: confident, no TTA)")


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

    p = sub.add_parser("predict", help="score a folder of videos with the trained ensemble")
    p.add_argument("videos_dir")
    p.add_argument("-o", "--out", default="submission.csv", help="CSV with filename,label (default submission.csv)")
    p.add_argument("--models", nargs="+", help="model names under --models-dir or checkpoint files (default: all)")
    p.add_argument("--models-dir", default="models")
    p.add_argument("--frames", type=_positive, default=32, help="frames sampled evenly per video (default 32)")
    p.add_argument("--detect-every", type=_positive, default=10, metavar="N",
                   help="run the face detector on the first and last sampled frames and about one every N video "
                        "frames between, and carry the face tracks to the other sampled frames (default 10; "
                        "1: detect on every sampled frame)")
    _scoring_flags(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--workers", type=int, default=2, help="videos scored at once, one thread each (default 2)")
    p.add_argument("--report", metavar="DIR", help="write a JSON and a PNG per video here")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bench", help="benchmark a part of the pipeline against its baseline")
    p.add_argument("what", choices=["preprocess", "predict"])
    p.add_argument("roots", nargs="*", help="dataset roots (default: data/sample and ../shared/data/ffpp)")
    p.add_argument("--every", type=_positive, default=10, help="preprocess: detect every N-th frame")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--models", nargs="+", help="predict: model names or checkpoint files (default: first one)")
    p.add_argument("--models-dir", default="models")
    p.add_argument("--frames", type=_positive, default=32, help="predict: frames per video")
    p.add_argument("--detect-every", type=_positive, default=10, metavar="N",
                   help="predict: detect about every N video frames (1: every sampled frame)")
    _scoring_flags(p, strategy=False)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("summary", help="print what the pipeline has produced")
    p.add_argument("--index", default="data/index.parquet")
    p.add_argument("--metrics", default="metrics/ensemble.json")
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
