"""DVC stages `train@MODEL` / `train_stacked@MODEL`: train one model entry on every fold but the holdout.

An entry with ``nproc`` > 1 relaunches this command under torchrun with that many processes on this
machine (DDP, one GPU each). Run under torchrun yourself (several machines: torchrun's ``--nnodes``,
``--node_rank`` and ``--rdzv_*`` flags), the stage sees torchrun's environment, does not relaunch, and
trains on torchrun's world.
"""
from __future__ import annotations

import argparse
import logging
import sys

import pandas as pd

from dfdc.config.base import ParamsError
from dfdc.config.folds import FoldsParams
from dfdc.config.predict import PredictParams
from dfdc.config.train import TrainParams
from dfdc.folds import unseen_videos
from dfdc.models import checkpoint
from dfdc.store import read_meta, write_json
from dfdc.train import dist
from dfdc.train.data import uses_dense_landmarks
from dfdc.train.loop import TrainJob, train_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, help="a key of train.models or train.stacked")
    ap.add_argument("--inputs", required=True, help="the table of what the model reads: crops or clips")
    ap.add_argument("--inputs-dir", required=True, help="its shards")
    ap.add_argument("--folds", default="data/folds.parquet")
    ap.add_argument("--landmarks", help="the landmarks stage's 68 points of the crops (entries with face_region: "
                    "hull that black out half faces or self-blend)")
    ap.add_argument("--backbone", help="checkpoint of the model named by backbone_from (train.stacked)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--live-dir", required=True)
    args = ap.parse_args()
    train = TrainParams.load(args.params)
    entries = train.all_models()
    if args.model not in entries:
        raise ParamsError(f"{args.params}: train: no model {args.model!r} "
                          f"(defined: {', '.join(sorted(entries)) or 'none'})")
    p = entries[args.model]
    if bool(p.backbone_from) != bool(args.backbone):
        raise ParamsError(f"{args.params}: train.{train.group_of(args.model)}.{args.model}: backbone_from is "
                          f"{p.backbone_from!r} but --backbone is {args.backbone!r}; dvc.yaml passes one for "
                          "train.stacked entries only")
    if p.nproc > 1 and not dist.under_torchrun():
        return dist.relaunch(p.nproc, sys.argv)
    ctx = dist.setup(train.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, format="%(message)s")
    try:
        return _train(args, train, ctx)
    finally:
        dist.teardown()


def _train(args: argparse.Namespace, train: TrainParams, ctx: dist.Ctx) -> int:
    """Train the entry on this rank; rank 0 writes the metrics and reports."""
    p = train.all_models()[args.model]
    if ctx.world != p.nproc and ctx.is_main:
        print(f"train@{args.model}: {ctx.world} processes (torchrun's world; the entry's nproc is {p.nproc})",
              flush=True)
    try:
        backbone = checkpoint.load(args.backbone) if args.backbone else None
    except checkpoint.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folds_p = FoldsParams.load(args.params)
    folds = pd.read_parquet(args.folds)
    try:
        unseen = unseen_videos(folds, folds_p.leave_out)
    except ValueError as e:
        raise ParamsError(f"{args.params}: folds.leave_out: {e}") from None
    meta = read_meta(args.inputs)
    job = TrainJob(args.model, p, pd.read_parquet(args.inputs), folds, args.inputs_dir, args.out_dir,
                   holdout=folds_p.holdout, leave_out=folds_p.leave_out, scoring=PredictParams.load(args.params),
                   preprocess={k: v for k, v in meta.items() if k != "data"}, data_info=meta.get("data"),
                   backbone=backbone, live_dir=args.live_dir, device=train.device,
                   landmarks=pd.read_parquet(args.landmarks) if args.landmarks and uses_dense_landmarks(p) else None)
    result = train_model(job)
    if ctx.is_main:
        write_json(result, args.metrics)
        b = result["best"]
        left = f"; {folds_p.leave_out!r} left out ({len(unseen)} fake videos)" if folds_p.leave_out else ""
        print(f"train@{args.model}: best epoch {b['epoch']}, val log loss {b['val_log_loss']:.4f}, "
              f"auc {b['val_auc']:.3f} ({result['train_items']} train / {result['val_items']} holdout "
              f"{p.inputs}{left})")
    dist.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
