"""DVC stage `evaluate`: metrics per model and for the ensemble on the holdout, plus plots."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from dfdc.config import ParamsError, load_section
from dfdc.evaluate import ensemble, evaluate, format_metrics_table, write_plots
from dfdc.store import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preds", default="data/preds", help="folder with one subfolder per model")
    ap.add_argument("--out", default="metrics/ensemble.json")
    ap.add_argument("--plots", default="metrics/plots")
    args = ap.parse_args()
    p = load_section(args.params, "evaluate")
    names = p.models or sorted(load_section(args.params, "train").models)
    preds = {}
    for name in names:
        path = Path(args.preds) / name / "videos.parquet"
        if not path.exists():
            raise ParamsError(f"{args.params}: evaluate.models: no predictions for {name!r} at {path}")
        preds[name] = pd.read_parquet(path)
    metrics = evaluate(preds, method=p.method, weights=p.weights or None)
    write_json(metrics, args.out)
    write_plots(preds, ensemble(preds, weights=p.weights or None, method=p.method), args.plots)
    print(format_metrics_table(metrics))


if __name__ == "__main__":
    main()
