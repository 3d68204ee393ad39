"""DVC stage `evaluate_external@NAME`: the shipped ensemble on a labelled set named in `evaluate.external`."""
from __future__ import annotations

import argparse
import sys

from dfdc.config.base import ParamsError
from dfdc.config.evaluate import EvaluateParams
from dfdc.eval.external import evaluate_folder, write_evaluation
from dfdc.inference.load import load_scoring
from dfdc.eval.report import format_metrics_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--name", required=True, help="the key in evaluate.external")
    ap.add_argument("--ensemble", default="models/ensemble.json")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    p = EvaluateParams.load(args.params)
    if args.name not in p.external:
        raise ParamsError(f"{args.params}: evaluate.external.{args.name}: no such labelled set "
                          f"(named: {', '.join(sorted(p.external)) or 'none'})")
    root = p.external[args.name]
    scoring = load_scoring(ensemble_file=args.ensemble, params=args.params)
    doc, ens, results = evaluate_folder(root, scoring, n_boot=p.bootstrap, splits=p.splits)
    write_evaluation(doc, ens, results, args.out_dir)
    print(format_metrics_table(doc))
    print(f"evaluate_external@{args.name}: {len(ens)} videos of {root}, {doc['scored']['unscored']} unscored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
