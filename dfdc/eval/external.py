"""Cross-dataset scoring: a labelled set the models never saw, scored through `dfdc predict`'s path."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

from dfdc.config.evaluate import EvaluateParams
from dfdc.eval.report import evaluate

LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


def read_labels(root: str | Path, labels: str | Path) -> pd.DataFrame:
    """A labels CSV (``filename,label`` with label 0/1 or REAL/FAKE; optional method, original) as videos of ``root``."""
    root, labels = Path(root), Path(labels)
    if not labels.is_file():
        raise FileNotFoundError(f"labels file not found: {labels}")
    with open(labels, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"filename", "label"} <= set(rows[0]):
        raise ValueError(f"{labels}: a labels CSV needs the columns filename,label (0/1 or REAL/FAKE)")
    out = []
    for i, r in enumerate(rows, start=2):
        label = LABELS.get(str(r["label"]).strip().lower())
        if label is None:
            raise ValueError(f"{labels}: line {i}: label {r['label']!r} is not 0, 1, REAL or FAKE")
        out.append({"video": r["filename"], "path": (root / r["filename"]).as_posix(), "label": label,
                    "original": r.get("original") or None, "method": r.get("method") or None,
                    "dataset": r.get("dataset") or root.name})
    return pd.DataFrame(out)


def labelled_videos(root: str | Path, labels: str | Path | None = None) -> pd.DataFrame:
    """video, path, label, original, method, dataset of a labelled set: a labels CSV, else the DFDC or FF++ layout."""
    if labels is not None:
        return read_labels(root, labels)
    from dfdc.datasets.index import build_index

    try:
        index = build_index(root, workers=2, progress=False)
    except ValueError as e:
        raise ValueError(f"{e}; to score a plain folder, pass --labels CSV (filename,label)") from None
    index = index[index["label"].isin([0, 1])]
    if index.empty:
        raise ValueError(f"{root}: no labelled video found (labels must be REAL or FAKE)")
    return index[["video", "path", "label", "original", "method", "dataset"]].reset_index(drop=True)


def score_folder(videos: pd.DataFrame, scoring: Any, **predict_kw: Any) -> tuple[dict, dict, list]:
    """Score ``videos`` with a loaded ensemble (:class:`dfdc.cli.Scoring`) as `dfdc predict` does.

    Returns (per-model video tables, per-model crop tables (clip windows for clip models), the Results).
    """
    from dfdc.inference.aggregate import NO_FACE
    from dfdc.inference.video import predict_videos

    results = predict_videos([Path(p) for p in videos["path"]], scoring, **predict_kw)
    preds, frames = {}, {}
    for m in scoring.models:
        preds[m.name] = videos[["video", "label", "original"]].assign(
            prob=[r.model_probs.get(m.name, NO_FACE) for r in results], fold=0,
            reason=[r.reason for r in results])
        if m.spec.input == "clip":  # one row per clip window
            rows = [{"key": f"{v}:{w['frame']}:{w['track']}", "video": v, "label": int(y), "prob": w["prob"]}
                    for v, y, r in zip(videos["video"], videos["label"], results) for w in r.windows
                    if w["model"] == m.name]
        else:
            rows = [{"key": f"{v}:{f['frame']}:{f['track']}", "video": v, "label": int(y),
                     "prob": f["model_probs"][m.name]}
                    for v, y, r in zip(videos["video"], videos["label"], results) for f in r.faces]
        frames[m.name] = pd.DataFrame(rows, columns=["key", "video", "label", "prob"])
    return preds, frames, results


def evaluate_folder(root: str | Path, scoring: Any, *, labels: str | Path | None = None, n_boot: int = 1000,
                    splits: int = 2, **predict_kw: Any) -> tuple[dict, pd.DataFrame, list]:
    """Metrics of the shipped ensemble on a labelled set: (document, ensemble table, results).

    The ensemble is scored as shipped: its weights, its temperature when it has one,
    and the submission's bounds [0.01, 0.99]; nothing is fitted on this set
    (the "calibration" section says what temperature scaling fitted here would do).
    """
    videos = labelled_videos(root, labels)
    preds, frames, results = score_folder(videos, scoring, **predict_kw)
    weights = {m.name: m.weight for m in scoring.models}
    params = EvaluateParams(method="given", weights=weights, splits=splits, bootstrap=n_boot)
    doc, ens = evaluate(preds, frames=frames, info=videos, params=params, temperature=scoring.settings.temperature,
                        bounds=scoring.settings.bounds)
    by_video = dict(zip(videos["video"], results))
    ens["reason"] = [by_video[v].reason for v in ens["video"]]
    doc["scored"] = {"root": str(root), "videos": len(videos), "unscored": int(sum(1 for r in results if r.reason)),
                     "strategy": scoring.settings.strategy, "tta": scoring.settings.tta}
    return doc, ens, results


def write_evaluation(doc: dict, ens: Any, results: list, out_dir: str | Path) -> Path:
    """metrics.json, videos.csv (one row per video) and plots/ of a scored labelled set, under ``out_dir``."""
    from dfdc.eval.plots import write_plots
    from dfdc.store import atomic_path, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(doc, out_dir / "metrics.json")
    cols = [c for c in ens.columns if c in ("video", "label", "prob", "reason") or c.startswith("prob_")]
    with atomic_path(out_dir / "videos.csv") as tmp:
        ens[cols].to_csv(tmp, index=False)
    preds = {c.removeprefix("prob_"): ens[["video", "label", c]].rename(columns={c: "prob"})
             for c in cols if c.startswith("prob_")}
    write_plots(preds, ens, out_dir / "plots", calibrated=ens.attrs.get("calibrated"))
    return out_dir / "metrics.json"
