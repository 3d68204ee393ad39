"""DVC stage `evaluate`: metrics per model and for the ensemble on the holdout, plots, and the ensemble file."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from dfdc.config.base import ParamsError
from dfdc.config.evaluate import EvaluateParams
from dfdc.config.train import TrainParams
from dfdc.evaluate import ensemble, evaluate, format_metrics_table, write_plots
from dfdc.inference.ensemble import write_ensemble
from dfdc.store import read_meta, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preds", default="data/preds", help="folder with one subfolder per model")
    ap.add_argument("--out", default="metrics/ensemble.json")
    ap.add_argument("--plots", default="metrics/plots")
    ap.add_argument("--ensemble", default="models/ensemble.json", help="the scored ensemble, for `dfdc predict`")
    args = ap.parse_args()
    p = EvaluateParams.load(args.params)
    names = p.models or sorted(TrainParams.load(args.params).all_models())
    preds, metas = {}, {}
    for name in names:
        path = Path(args.preds) / name / "videos.parquet"
        if not path.exists():
            raise ParamsError(f"{args.params}: evaluate.models: no predictions for {name!r} at {path}")
        preds[name], metas[name] = pd.read_parquet(path), read_meta(path)
    scoring = {(m.get("strategy"), m.get("tta")) for m in metas.values()}
    if len(scoring) != 1:
        raise ValueError(f"the models' predictions were scored differently ({sorted(map(str, scoring))}); "
                         "rerun their predict stages")
    strategy, tta = scoring.pop()
    metrics = evaluate(preds, method=p.method, weights=p.weights or None)
    write_json(metrics, args.out)
    write_plots(preds, ensemble(preds, weights=p.weights or None, method=p.method), args.plots)
    weights = metrics["ensemble"]["weights"]
    write_ensemble(args.ensemble, {n: {"checkpoint": metas[n]["checkpoint"], "sha256": metas[n]["sha256"],
                                       "weight": weights[n]} for n in names},
                   method=p.method, strategy=strategy, tta=tta,
                   metrics={k: metrics["ensemble"][k] for k in ("log_loss", "auc", "n")})
    print(format_metrics_table(metrics))


if __name__ == "__main__":
    main()
