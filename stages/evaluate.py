"""DVC stage `evaluate`: metrics of each model and the ensemble on the clean and the degraded holdout,
plots, and the ensemble file that `dfdc predict` reads.

`metrics/summary.json` holds the headline numbers (DVC's metrics: `dvc exp show`, `dvc metrics diff`);
`metrics/details/{clean,degraded}.json` every table (`dvc metrics show --targets FILE`). All three are
small and kept in git, so any clone diffs against any commit without a DVC remote.
"""
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
from dfdc.eval.report import evaluate, format_metrics_table, headline
from dfdc.inference.ensemble import write_ensemble
from dfdc.store import read_meta, write_json

DEGRADED = "degraded"  # each model's degraded-holdout tables, in this subfolder of its predictions


def _read(folder: Path, names: list[str], params: str, degraded: bool = False) -> tuple[dict, dict, dict]:
    preds, frames, metas = {}, {}, {}
    for name in names:
        where = folder / name / DEGRADED if degraded else folder / name
        path = where / "videos.parquet"
        if not path.exists():
            raise ParamsError(f"{params}: evaluate.models: no predictions for {name!r} at {path}")
        preds[name], metas[name] = pd.read_parquet(path), read_meta(path)
        frames[name] = pd.read_parquet(where / "frames.parquet")
    return preds, frames, metas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preds", default="data/preds", help=f"one folder per model (the degraded holdout in its "
                                                           f"{DEGRADED}/)")
    ap.add_argument("--index", default="data/index.parquet", help="method and dataset of each video")
    ap.add_argument("--summary", default="metrics/summary.json")
    ap.add_argument("--details", default="metrics/details", help="gets clean.json and degraded.json")
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
    metrics, ens = evaluate(preds, frames=frames, info=info, params=p)
    left_out = FoldsParams.load(args.params).leave_out
    if left_out is not None:  # the generalisation measurement: a manipulation no model trained on
        metrics["leave_out"] = {"method": left_out, **metrics.get("by_method", {}).get(left_out, {})}
    write_plots(preds, ens, args.plots, calibrated=ens.attrs["calibrated"])
    dpreds, dframes, _ = _read(Path(args.preds), names, args.params, degraded=True)
    # each degraded video with the weights and temperature of its clean twin's split: fitted without it
    degraded, _ = evaluate(dpreds, frames=dframes, info=info, params=p, fitted=ens.attrs)
    write_json(metrics, Path(args.details) / "clean.json")
    write_json(degraded, Path(args.details) / "degraded.json")
    write_json(headline(metrics, degraded), args.summary, sort_keys=False)
    members = {}
    for n in names:
        members[n] = {"checkpoint": metas[n]["checkpoint"], "sha256": metas[n]["sha256"],
                      "weight": metrics["ensemble"]["weights"][n]}
        if strategy == "thresholds":
            source = Path(args.preds) / n / "thresholds.json"
            members[n] |= {"rules": json.loads(source.read_text())["rules"], "rules_from": source.as_posix()}
    write_ensemble(args.ensemble, members, method=p.method, strategy=strategy, tta=tta,
                   temperature=metrics["ensemble"]["temperature"] if p.calibrate else None,
                   metrics={k: metrics["ensemble"][k] for k in ("log_loss", "auc", "n")})
    print(format_metrics_table(metrics, degraded))


if __name__ == "__main__":
    main()
