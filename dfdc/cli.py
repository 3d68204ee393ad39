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


def _cmd_exp_args(args: argparse.Namespace) -> int:
    from dfdc.presets import exp_args

    print(exp_args(args.preset, args.params))
    return 0


def _cmd_deps(args: argparse.Namespace) -> int:
    from dfdc.deps import check_or_write

    stale = check_or_write(args.dvc_yaml, write=args.write)
    if not stale:
        print(f"deps: every stage's code deps in {args.dvc_yaml} are the modules it imports")
        return 0
    if args.write:
        print(f"deps: wrote the code deps of {', '.join(stale)} in {args.dvc_yaml}")
        return 0
    print(f"deps: the code deps of {', '.join(stale)} in {args.dvc_yaml} are not the modules they import; "
          "run `dfdc deps --write`", file=sys.stderr)
    return 1


SUMMARY_BEGIN, SUMMARY_END = "<!-- dfdc summary: begin -->", "<!-- dfdc summary: end -->"


def _summary(index: Path, metrics: Path, degraded: Path) -> str:
    import json

    import pandas as pd

    from dfdc.datasets.index import summarize_index
    from dfdc.eval.report import format_metrics_table

    if not index.exists():
        return f"{index}: not built yet (run `dvc repro`)"
    lines = [summarize_index(pd.read_parquet(index))]
    if metrics.exists():
        lines.append(f"holdout metrics ({metrics}{', ' + str(degraded) if degraded.exists() else ''}):")
        lines.append(format_metrics_table(json.loads(metrics.read_text()),
                                          json.loads(degraded.read_text()) if degraded.exists() else None))
    else:
        lines.append(f"{metrics}: not built yet (run `dvc repro`)")
    return "\n".join(lines)


def _cmd_summary(args: argparse.Namespace) -> int:
    text = _summary(Path(args.index), Path(args.metrics), Path(args.degraded))
    print(text)
    if args.write:
        page = Path(args.write)
        doc = page.read_text() if page.exists() else ""
        if SUMMARY_BEGIN not in doc or SUMMARY_END not in doc:
            raise ValueError(f"{page}: no {SUMMARY_BEGIN} ... {SUMMARY_END} block to write the summary into")
        head, rest = doc.split(SUMMARY_BEGIN, 1)
        page.write_text(f"{head}{SUMMARY_BEGIN}\n```\n{text}\n```\n{SUMMARY_END}{rest.split(SUMMARY_END, 1)[1]}")
        print(f"summary: written into {page}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from dfdc.bench import bench_predict, bench_preprocess, format_predict_table, format_table

    if args.what == "clip-models":
        from dfdc.bench import bench_clip_models, format_clip_models_table

        print(format_clip_models_table(bench_clip_models()))
        return 0
    if args.what == "landmarks":
        from dfdc.bench import bench_landmarks, format_landmarks_table

        crops = Path(args.roots[0]) if args.roots else Path("data/crops.parquet")
        print(format_landmarks_table(bench_landmarks(crops, crops.parent / "faces.parquet",
                                                     crops.parent / "index.parquet")))
        return 0
    if args.what == "scale":
        from dfdc.bench_scale import bench_scale, format_scale

        result = bench_scale(args.n or [200, 1000], hd_reals=args.hd, workers=args.workers, work=args.work,
                             cores=args.cores)
        print(format_scale(result))
        if args.json:
            from dfdc.store import write_json

            write_json(result, args.json)
        return 0
    roots = args.roots or [r for r in ("data/sample", "../shared/data/ffpp") if Path(r).is_dir()]
    if not roots:
        raise FileNotFoundError("no dataset to benchmark: pass a root (e.g. data/sample after `dvc repro`)")
    rows = []
    if args.what == "preprocess":
        detect, crops = _preprocess_sections(args.params)
        every = args.every or detect.every
        for root in roots:
            print(f"bench preprocess: {root} ...", flush=True)
            rows.append(bench_preprocess(root, every=every, margin=crops.margin, detect=detect,
                                         workers=args.workers))
        print(format_table(rows))
        return 0
    if args.what == "clips":
        from dfdc.bench import bench_clips, format_clips_table
        from dfdc.config.clips import ClipsParams

        detect, _ = _preprocess_sections(args.params)
        clips = ClipsParams.load(args.params) if Path(args.params).is_file() else ClipsParams()
        for root in roots:
            print(f"bench clips: {root} ...", flush=True)
            rows.append(bench_clips(root, clips, detect, workers=args.workers))
        print(format_clips_table(rows))
        return 0
    from dfdc.bench import bench_runtimes, format_runtimes_table

    runtimes = [args.runtime] if args.runtime else ["torch", "onnx"]
    loaded = {}
    for runtime in runtimes:
        args.runtime = runtime
        loaded[runtime] = load_scoring(args, first_only=not args.models and not args.bundle)
        for root in roots:
            print(f"bench predict: {root} ({runtime}) ...", flush=True)
            rows.append(bench_predict(root, loaded[runtime], workers=args.workers) | {"runtime": runtime})
    print(format_predict_table(rows))
    if len(loaded) == 2:
        print(format_runtimes_table(bench_runtimes(loaded["torch"].models, loaded["onnx"].models)))
    return 0


def _preprocess_sections(params: str | Path):
    from dfdc.config.crops import CropsParams
    from dfdc.config.detect import DetectParams

    if Path(params).is_file():
        return DetectParams.load(params), CropsParams.load(params)
    return DetectParams(), CropsParams()


def load_scoring(args: argparse.Namespace, first_only: bool = False):
    """The ensemble and settings the flags in ``args`` choose (:func:`dfdc.inference.load.load_scoring`)."""
    from dfdc.inference.load import load_scoring as load

    flags = {k: getattr(args, k, None) for k in ("thresholds", "min_score", "min_face_size", "max_faces", "min_iou",
                                                  "max_gap", "margin", "strategy", "tta", "frames", "detect_every",
                                                  "clip_windows")}
    return load(models=args.models, ensemble_file=args.ensemble, models_dir=args.models_dir, bundle=args.bundle,
                device=args.device, params=args.params, flags=flags, first_only=first_only,
                runtime=getattr(args, "runtime", "torch"))


def _cmd_predict(args: argparse.Namespace) -> int:
    import time

    from dfdc.api import Detector
    from dfdc.inference.video import list_inputs, write_report, write_submission

    inputs = list_inputs(args.videos_dir)
    t0 = time.perf_counter()
    detector = Detector(load_scoring(args))
    scoring = detector.scoring
    for note in scoring.notes:
        print(note, file=sys.stderr)
    s = scoring.settings
    results = list(detector.score_many(inputs.files, workers=args.workers, explain=args.report is not None,
                                       progress=True))
    write_submission(results, args.out)
    if args.report:
        for r in results:
            write_report(r, args.report)
    dt = time.perf_counter() - t0
    fallback = sum(1 for r in results if r.reason)
    partial = sum(1 for r in results if r.note)
    skipped = inputs.skipped()
    print(f"predict: {len(results)} files in {dt:.1f} s ({len(results) / dt:.2f} files/s) with "
          f"{len(scoring.models)} model(s) ({', '.join(m.name for m in scoring.models)}; {scoring.source}) on "
          f"{scoring.device}, strategy {s.strategy}, tta {s.tta}"
          f"{f', temperature {s.temperature:.3f}' if s.temperature else ''}; {s.describe()}; {fallback} scored 0.5 "
          f"(unreadable or no face)"
          f"{f'; {partial} without their clip models (too short for a clip)' if partial else ''}"
          f"{'; ' + skipped if skipped else ''} -> {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dfdc.eval.external import evaluate_folder, write_evaluation
    from dfdc.eval.report import format_metrics_table

    scoring = load_scoring(args)
    for note in scoring.notes:
        print(note, file=sys.stderr)
    out_dir = Path(args.out_dir or Path("evaluations") / Path(args.videos_root).resolve().name)
    doc, ens, results = evaluate_folder(args.videos_root, scoring, labels=args.labels, n_boot=args.bootstrap,
                                        workers=args.workers)
    path = write_evaluation(doc, ens, results, out_dir)
    print(format_metrics_table(doc))
    s = doc["scored"]
    print(f"evaluate: {s['videos']} labelled videos under {args.videos_root} with {len(scoring.models)} model(s) "
          f"({scoring.source}), strategy {s['strategy']}; {s['unscored']} scored 0.5 (unreadable or no face) -> {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from dfdc.inference.bundle import write_bundle

    manifest = write_bundle(args.out, ensemble_file=args.ensemble, models=args.models, models_dir=args.models_dir,
                            onnx=args.onnx)
    members = manifest["members"]
    onnx = ""
    if args.onnx:
        failed = [m["name"] for m in members if "error" in (m["onnx"] or {})]
        onnx = f", ONNX graphs for {len(members) - len(failed)} of {len(members)}" + \
            (f" (torch only: {', '.join(failed)})" if failed else "")
    size = Path(args.out).stat().st_size / 2**20
    trained = ", ".join(f"{k} {v}" for k, v in manifest["trained_on"].items()) or "not recorded"
    print(f"export: {len(members)} model(s) ({', '.join(m['name'] for m in members)}; "
          f"{manifest['ensemble']['method']} weights){onnx}, trained on {trained} -> {args.out} ({size:.1f} MiB)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from dfdc.serve.app import serve

    return serve(args.bundle, host=args.host, port=args.port, device=args.device, runtime=args.runtime,
                 max_upload_mb=args.max_upload_mb, queue=args.queue)


def _scoring_flags(p: argparse.ArgumentParser, strategy: bool = True) -> None:
    p.add_argument("--bundle", metavar="FILE", help="a detector bundle written by `dfdc export` (instead of the "
                                                    "models folder)")
    p.add_argument("--models", nargs="+", help="model names under --models-dir or checkpoint files, equal weights "
                                               "(default: the ensemble that `evaluate` scored)")
    p.add_argument("--models-dir", default="models")
    p.add_argument("--ensemble", metavar="FILE",
                   help="ensemble file written by `evaluate` (default: MODELS_DIR/ensemble.json when present, "
                        "else every MODELS_DIR/*/best.pt with equal weights)")
    if strategy:
        p.add_argument("--strategy", choices=["mean", "confident", "weighted", "thresholds"],
                       help="how frame scores make a video score (default: as `evaluate` scored the ensemble, "
                            "else predict.strategy in --params)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction,
                   help="average each crop with its horizontal flip (default: as `evaluate` scored, "
                        "else predict.tta in --params)")
    g = p.add_argument_group("detector and crops (default: the settings the models were trained with)")
    g.add_argument("--thresholds", type=_unit, nargs=3, metavar="T", help="MTCNN P/R/O-net thresholds")
    g.add_argument("--min-score", type=_unit, help="lowest face score kept")
    g.add_argument("--min-face-size", type=_positive, help="smallest face kept, pixels")
    g.add_argument("--max-faces", type=_positive, help="most faces kept per frame")
    g.add_argument("--min-iou", type=_unit, help="track linking: IoU of boxes grown 2x")
    g.add_argument("--max-gap", type=_non_negative, help="track linking: detected frames a track may miss")
    g.add_argument("--margin", type=_non_negative_float, help="crop margin, fraction of the box each side")
    p.add_argument("--params", default="params.yaml",
                   help="params file for what neither the flags, the ensemble file nor the checkpoints say "
                        "(default params.yaml; when absent: the defaults)")


def _unit(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dfdc", description="Deepfake-detection pipeline tools.")
    ap.add_argument("-v", "--verbose", action="store_true", help="show FFmpeg's and OpenCV's own log lines")
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

    p = sub.add_parser("predict", help="score a folder of videos and still images with the trained ensemble")
    p.add_argument("videos_dir")
    p.add_argument("-o", "--out", default="submission.csv", help="CSV with filename,label (default submission.csv)")
    p.add_argument("--frames", type=_positive, default=32, help="frames sampled evenly per video (default 32)")
    p.add_argument("--detect-every", type=_positive, default=10, metavar="N",
                   help="run the face detector on the first and last sampled frames and about one every N video "
                        "frames between, and carry the face tracks to the other sampled frames (default 10; "
                        "1: detect on every sampled frame)")
    p.add_argument("--clip-windows", type=_positive, default=10, metavar="N",
                   help="clip models: windows of consecutive frames per face track, evenly spaced (default 10)")
    _scoring_flags(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--workers", type=int, default=2, help="videos scored at once, one thread each (default 2)")
    p.add_argument("--report", metavar="DIR", help="write a JSON and a PNG per video here")
    p.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                   help="onnx: run the models as ONNX graphs through onnxruntime on the CPU (default torch; "
                        "see `dfdc bench predict`)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="write the evaluated ensemble as one bundle file to hand to others "
                                      "(`dfdc predict --bundle`, `dfdc serve`, `Detector.load`)")
    p.add_argument("-o", "--out", default="models/detector.dfdc", help="the bundle (default models/detector.dfdc)")
    p.add_argument("--models", nargs="+", help="model names under --models-dir or checkpoint files, equal weights "
                                               "(default: the ensemble that `evaluate` scored)")
    p.add_argument("--models-dir", default="models")
    p.add_argument("--ensemble", metavar="FILE", help="ensemble file written by `evaluate` "
                                                      "(default MODELS_DIR/ensemble.json)")
    p.add_argument("--onnx", action="store_true", help="also store each model's ONNX graph (`--runtime onnx`)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("serve", help="score uploads over HTTP: a JSON API and a web page")
    p.add_argument("bundle", help="a bundle written by `dfdc export`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    p.add_argument("--max-upload-mb", type=_positive, default=200, help="largest upload accepted (default 200)")
    p.add_argument("--queue", type=_positive, default=10,
                   help="uploads held at once, scoring and waiting; more get 503 (default 10)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("evaluate", help="score a labelled set the models never saw (DFDC or FF++ layout, or a "
                                         "folder with --labels) and write its metrics and plots")
    p.add_argument("videos_root")
    p.add_argument("--labels", metavar="CSV", help="filename,label (0/1 or REAL/FAKE) for a plain folder; optional "
                                                   "columns method, original, dataset")
    p.add_argument("--out-dir", help="gets metrics.json, videos.csv and plots/ (default evaluations/ROOT_NAME)")
    p.add_argument("--frames", type=_positive, default=32, help="frames sampled evenly per video (default 32)")
    p.add_argument("--detect-every", type=_positive, default=10, metavar="N")
    p.add_argument("--bootstrap", type=_non_negative, default=1000, help="resamples for the 95%% intervals")
    _scoring_flags(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("bench", help="benchmark a part of the pipeline against its baseline")
    p.add_argument("what", choices=["preprocess", "clips", "clip-models", "predict", "scale",
                                           "landmarks"])
    p.add_argument("roots", nargs="*", help="dataset roots (default: data/sample and ../shared/data/ffpp); "
                                            "landmarks: a crops table (default data/crops.parquet)")
    p.add_argument("--every", type=_positive, help="preprocess: detect every N-th frame (default: detect.every)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--frames", type=_positive, default=32, help="predict: frames per video")
    p.add_argument("--detect-every", type=_positive, default=10, metavar="N",
                   help="predict: detect about every N video frames (1: every sampled frame)")
    _scoring_flags(p, strategy=False)
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", choices=["torch", "onnx"],
                   help="predict: this runtime only (default: both, and the models alone on each)")
    p.add_argument("--n", type=_positive, action="append", help="scale: videos to generate (repeat; default 200, 1000)")
    p.add_argument("--hd", type=int, default=2, help="scale: real 1080p 10 s videos (two fakes each) for the "
                                                     "per-video cost at DFDC size (0: none)")
    p.add_argument("--cores", type=_positive, default=16, help="scale: processes of the DFDC extrapolation")
    p.add_argument("--work", help="scale: keep the generated datasets and projects here (default: a temporary dir)")
    p.add_argument("--json", help="scale: also write the measurements to this JSON file")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("exp-args", help="the `dvc exp run -S` arguments that apply a preset (eval \"dvc exp run -n "
                                        "NAME $(dfdc exp-args PRESET)\")")
    p.add_argument("preset", help="a preset file (presets/*.yaml)")
    p.add_argument("--params", default="params.yaml", help="the params file it applies to (default params.yaml)")
    p.set_defaults(func=_cmd_exp_args)

    p = sub.add_parser("deps", help="check (or --write) every stage's code deps in dvc.yaml against the modules it "
                                    "imports")
    p.add_argument("--write", action="store_true", help="rewrite the stale deps lists")
    p.add_argument("--dvc-yaml", default="dvc.yaml")
    p.set_defaults(func=_cmd_deps)

    p = sub.add_parser("summary", help="print what the pipeline has produced")
    p.add_argument("--index", default="data/index.parquet")
    p.add_argument("--metrics", default="metrics/details/clean.json")
    p.add_argument("--degraded", default="metrics/details/degraded.json")
    p.add_argument("--write", metavar="PAGE", help="also write it into PAGE between its dfdc summary markers "
                                                   "(docs/results.md)")
    p.set_defaults(func=_cmd_summary)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dfdc` command."""
    args = build_parser().parse_args(argv)
    from dfdc.video import library_logs

    library_logs(args.verbose)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
