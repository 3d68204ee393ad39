"""DVC stage `evaluate`: metrics of each model and the ensemble on the clean and the degraded holdout,
plots, and the ensemble file that `dfdc predict` reads."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from dfdc.config.base import ParamsError
from dfdc.config.evaluate import EvaluateParams
from dfdc.config.folds import FoldsParams
from dfdc.config.train import TrainParams
from dfdc.eval.plots import write_plots
from dfdc.eval.report import evaluate, format_metrics_table
from dfdc.inference.ensemble import write_ensemble
from dfdc.store import read_meta, write_json


def _read(folder: Path, names: list[str], params: str) -> tuple[dict, dict, dict]:
    preds, frames, metas = {}, {}, {}
    for name in names:
        path = folder / name / "videos.parquet"
        if not path.exists():
            raise ParamsError(f"{params}: evaluate.models: no predictions for {name!r} at {path}")
        preds[name], metas[name] = pd.read_parquet(path), read_meta(path)
        frames[name] = pd.read_parquet(folder / name / "frames.parquet")
    return preds, frames, metas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preds", default="data/preds", help="folder with one subfolder per model")
    ap.add_argument("--degraded", default="data/preds_degraded", help="the same for the degraded holdout")
    ap.add_argument("--index", default="data/index.parquet", help="method and dataset of each video")
    ap.add_argument("--out", default="metrics/ensemble.json")
    ap.add_argument("--out-degraded", default="metrics/degraded.json")
    ap.add_argument("--plots", default="metrics/plots")
    ap.add_argument("--ensemble", default="models/ensemble.json", help="the scored ensemble, for `dfdc predict`")
    args = ap.parse_args()
    p = EvaluateParams.load(args.params)
    names = p.models or sorted(TrainParams.load(args.params).all_models())
    preds, frames, metas = _read(Path(args.preds), names, args.params)
    scoring = {(m.get("strategy"), m.get("tta")) for m in metas.values()}
    if len(scoring) != 1:
        raise ValueError(f"the models' predictions were scored differently ({sorted(map(str, scoring))}); "
                         "rerun their predict stages")
    strategy, tta = scoring.pop()
    info = pd.read_parquet(args.index, columns=["video", "original", "method", "dataset"])
    kw = {"info": info, "n_splits": p.splits, "n_boot": p.bootstrap}
    metrics, ens = evaluate(preds, frames=frames, method=p.method, weights=p.weights or None,
                            calibrate=p.calibrate, **kw)
    left_out = FoldsParams.load(args.params).leave_out
    if left_out is not None:  # the generalisation measurement: a manipulation no model trained on
        metrics["leave_out"] = {"method": left_out, **metrics.get("by_method", {}).get(left_out, {})}
    write_json(metrics, args.out)
    write_plots(preds, ens, args.plots, calibrated=ens.attrs["calibrated"])
    weights = metrics["ensemble"]["weights"]
    dpreds, dframes, _ = _read(Path(args.degraded), names, args.params)
    # each degraded video with the weights and temperature of its clean twin's split: fitted without it
    degraded, _ = evaluate(dpreds, frames=dframes, fitted=ens.attrs, **kw)
    write_json(degraded, args.out_degraded)
    members = {}
    for n in names:
        members[n] = {"checkpoint": metas[n]["checkpoint"], "sha256": metas[n]["sha256"], "weight": weights[n]}
        if strategy == "thresholds":
            source = Path(args.preds) / n / "thresholds.json"
            members[n] |= {"rules": json.loads(source.read_text())["rules"], "rules_from": source.as_posix()}
    write_ensemble(args.ensemble, members, method=p.method, strategy=strategy, tta=tta,
                   temperature=metrics["ensemble"]["temperature"] if p.calibrate else None,
                   metrics={k: metrics["ensemble"][k] for k in ("log_loss", "auc", "n")})
    print(format_metrics_table(metrics, degraded))


if __name__ == "__main__":
    main()
