"""Video-level evaluation: DFDC log loss and friends, ensembling, plots.

Prediction tables have one row per video with columns ``video``, ``label``
(0 real, 1 fake), ``prob`` (P(fake)) and ``fold``.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.model_selection import KFold, StratifiedKFold

ENSEMBLE = "ensemble"
METHODS = ("equal", "given", "fitted")
REQUIRED = ("video", "label", "prob", "fold")
DEFAULT_CLIP = (1e-15, 1 - 1e-15)


def _arrays(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.size} vs {p.size}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite and in [0, 1]")
    return y.astype(int), p


def log_loss(y: ArrayLike, p: ArrayLike, clip: tuple[float, float] = DEFAULT_CLIP) -> float:
    """DFDC log loss ``-mean(y log p + (1 - y) log(1 - p))`` on clipped probabilities; NaN if empty."""
    y, p = _arrays(y, p)
    if y.size == 0:
        return math.nan
    p = np.clip(p, clip[0], clip[1])
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def equal_error_rate(y: ArrayLike, p: ArrayLike) -> float:
    """Error rate where FPR equals FNR (1 - TPR), linearly interpolated on the ROC; NaN for one class."""
    y, p = _arrays(y, p)
    if np.unique(y).size < 2:
        return math.nan
    fpr, tpr, _ = roc_curve(y, p)
    gap = (1 - tpr) - fpr
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def binary_metrics(y: ArrayLike, p: ArrayLike) -> dict[str, float | int]:
    """Log loss, AUC, AP, EER, accuracy at 0.5 (fake if p >= 0.5), per-class log loss and counts.

    Ranking metrics (auc, ap, eer) are NaN unless both classes are present.
    """
    y, p = _arrays(y, p)
    n_fake = int(y.sum())
    n_real = int(y.size - n_fake)
    both = n_real > 0 and n_fake > 0
    return {
        "log_loss": log_loss(y, p),
        "auc": float(roc_auc_score(y, p)) if both else math.nan,
        "ap": float(average_precision_score(y, p)) if both else math.nan,
        "eer": equal_error_rate(y, p),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))) if y.size else math.nan,
        "log_loss_real": log_loss(y[y == 0], p[y == 0]),
        "log_loss_fake": log_loss(y[y == 1], p[y == 1]),
        "n": int(y.size),
        "n_real": n_real,
        "n_fake": n_fake,
    }


def fit_weights(y: ArrayLike, probs: ArrayLike) -> np.ndarray:
    """Simplex weights (non-negative, summing to 1) minimising the log loss of ``probs @ w``.

    ``probs`` has one column per model.
    """
    y = np.asarray(y, dtype=float).ravel()
    probs = np.clip(np.asarray(probs, dtype=float), *DEFAULT_CLIP)
    m = probs.shape[1]
    if m == 1:
        return np.ones(1)

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        q = np.clip(probs @ w, *DEFAULT_CLIP)
        loss = -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))
        dq = -(y / q - (1 - y) / (1 - q)) / y.size
        return float(loss), probs.T @ dq

    res = minimize(
        loss_and_grad, np.full(m, 1.0 / m), jac=True, method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"maxiter": 200, "ftol": 1e-10},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum() if w.sum() > 0 else np.full(m, 1.0 / m)


def _check_table(name: str, df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"predictions of {name!r} lack columns {missing}")
    if df["video"].duplicated().any():
        raise ValueError(f"predictions of {name!r} repeat videos")
    _arrays(df["label"], df["prob"])


def _join(preds: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, int]:
    if not preds:
        raise ValueError("no predictions to ensemble")
    if ENSEMBLE in preds:
        raise ValueError(f"{ENSEMBLE!r} is reserved and cannot name a model")
    names = list(preds)
    for name in names:
        _check_table(name, preds[name])
    first = names[0]
    out = preds[first][["video", "label", "fold", "prob"]].rename(columns={"prob": f"prob_{first}"})
    for name in names[1:]:
        other = preds[name][["video", "label", "prob"]].rename(
            columns={"prob": f"prob_{name}", "label": f"label_{name}"})
        out = out.merge(other, on="video", how="inner")
        bad = int((out["label"] != out[f"label_{name}"]).sum())
        if bad:
            raise ValueError(f"labels of {name!r} disagree with {first!r} on {bad} videos")
        out = out.drop(columns=f"label_{name}")
    if out.empty:
        raise ValueError("no video is predicted by every model")
    union = set().union(*(set(df["video"]) for df in preds.values()))
    out = out.sort_values("video", kind="stable").reset_index(drop=True)
    out["label"] = out["label"].astype(int)
    out["fold"] = out["fold"].astype(int)
    return out, len(union) - len(out)


def _given_weights(names: list[str], weights: Mapping[str, float] | None) -> np.ndarray:
    if weights is None:
        raise ValueError("method='given' needs weights")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights name unknown models {unknown}")
    w = []
    for name in names:
        if name not in weights:
            raise ValueError(f"no weight for model {name!r}")
        v = float(weights[name])
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"weight of model {name!r} must be finite and non-negative, got {v}")
        w.append(v)
    w = np.asarray(w)
    if w.sum() <= 0:
        raise ValueError("weights sum to zero")
    return w / w.sum()


def _splitter(y: np.ndarray, n_splits: int, seed: int):
    if min(np.bincount(y, minlength=2)) >= n_splits:
        return StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(y, y)
    return KFold(n_splits, shuffle=True, random_state=seed).split(y)


def ensemble(
    preds: Mapping[str, pd.DataFrame],
    weights: Mapping[str, float] | None = None,
    method: str = "equal",
    *,
    n_splits: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Weighted mean of the models' probabilities over the videos every model predicts.

    ``method`` is "equal", "given" (``weights``, normalised) or "fitted": simplex
    weights minimising log loss, cross-fitted over ``n_splits`` (2..5) video
    splits so each video is scored with weights fitted on the other videos.
    Returns columns video, label, fold, prob, prob_<model>; ``attrs`` holds
    ``weights`` (for "fitted": fitted on all videos, informational), ``method``,
    ``dropped`` (videos missing from some model) and, for "fitted",
    ``cross_fitted``, ``split_weights`` and ``split_videos``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if weights is not None and method != "given":
        raise ValueError("weights are only used with method='given'")
    joined, dropped = _join(preds)
    names = list(preds)
    cols = [f"prob_{n}" for n in names]
    probs = joined[cols].to_numpy(dtype=float)
    y = joined["label"].to_numpy()
    attrs: dict = {"method": method, "dropped": int(dropped)}

    if method == "fitted":
        if not 2 <= n_splits <= 5:
            raise ValueError(f"n_splits must be in 2..5, got {n_splits}")
        if len(joined) < n_splits:
            raise ValueError(f"cannot cross-fit {len(joined)} videos over {n_splits} splits")
        prob = np.empty(len(joined))
        split_weights, split_videos = [], []
        for fit_idx, score_idx in _splitter(y, n_splits, seed):
            w_split = fit_weights(y[fit_idx], probs[fit_idx])
            prob[score_idx] = probs[score_idx] @ w_split
            split_weights.append(dict(zip(names, map(float, w_split))))
            split_videos.append(joined["video"].iloc[score_idx].tolist())
        w = fit_weights(y, probs)
        attrs.update(cross_fitted=True, split_weights=split_weights, split_videos=split_videos)
    else:
        w = np.full(len(names), 1.0 / len(names)) if method == "equal" else _given_weights(names, weights)
        prob = probs @ w

    out = joined[["video", "label", "fold"]].copy()
    out["prob"] = np.clip(prob, 0.0, 1.0)
    out[cols] = probs
    out.attrs.update(attrs, weights=dict(zip(names, map(float, w))))
    return out


def evaluate(
    preds: Mapping[str, pd.DataFrame],
    method: str = "equal",
    weights: Mapping[str, float] | None = None,
) -> dict:
    """Metrics per model and for the ensemble, all on the videos every model predicts."""
    ens = ensemble(preds, weights=weights, method=method)
    y = ens["label"].to_numpy()
    models = {name: binary_metrics(y, ens[f"prob_{name}"]) for name in preds}
    summary = binary_metrics(y, ens["prob"])
    summary.update(
        method=method,
        weights=dict(ens.attrs["weights"]),
        dropped=int(ens.attrs["dropped"]),
        cross_fitted=bool(ens.attrs.get("cross_fitted", False)),
    )
    return {"models": models, "ensemble": summary}


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _curves(preds: Mapping[str, pd.DataFrame], ens_df: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    y = ens_df["label"].to_numpy()
    out = {}
    for name, df in preds.items():
        col = f"prob_{name}"
        if col in ens_df.columns:
            out[name] = (y, ens_df[col].to_numpy(dtype=float))
        else:
            out[name] = (df["label"].to_numpy(), df["prob"].to_numpy(dtype=float))
    out[ENSEMBLE] = (y, ens_df["prob"].to_numpy(dtype=float))
    return {k: _arrays(*v) for k, v in out.items()}


def write_plots(
    preds: Mapping[str, pd.DataFrame], ens_df: pd.DataFrame, out_dir: str | Path
) -> list[Path]:
    """Write roc.csv, calibration.csv (for DVC plots) and roc.png, calibration.png, models.png.

    Models are drawn on the videos of ``ens_df`` when it carries their
    ``prob_<name>`` column; ROC rows are skipped for single-class data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = _curves(preds, ens_df)

    roc_rows, cal_rows, metrics = [], [], {}
    for name, (y, p) in curves.items():
        metrics[name] = binary_metrics(y, p)
        if np.unique(y).size == 2:
            fpr, tpr, _ = roc_curve(y, p)
            roc_rows.append(pd.DataFrame({"model": name, "fpr": fpr, "tpr": tpr}))
        if y.size:
            frac, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform", pos_label=1)
            cal_rows.append(pd.DataFrame({"model": name, "mean_predicted": mean_pred, "fraction_positive": frac}))
    roc = pd.concat(roc_rows, ignore_index=True) if roc_rows else pd.DataFrame(columns=["model", "fpr", "tpr"])
    cal = (pd.concat(cal_rows, ignore_index=True) if cal_rows
           else pd.DataFrame(columns=["model", "mean_predicted", "fraction_positive"]))

    paths = [out_dir / n for n in ("roc.csv", "calibration.csv", "roc.png", "calibration.png", "models.png")]
    _atomic_write(paths[0], lambda t: roc.to_csv(t, index=False))
    _atomic_write(paths[1], lambda t: cal.to_csv(t, index=False))

    def save(fig, path: Path) -> None:
        try:
            _atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=100))
        finally:
            plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, g in roc.groupby("model", sort=False):
        auc = metrics[name]["auc"]
        ax.plot(g["fpr"], g["tpr"], label=f"{name} (AUC {auc:.3f})", lw=2.5 if name == ENSEMBLE else 1.5)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1))
    if not roc.empty:
        ax.legend(loc="lower right", fontsize="small")
    save(fig, paths[2])

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    for name, g in cal.groupby("model", sort=False):
        ax.plot(g["mean_predicted"], g["fraction_positive"], "o-", label=name,
                lw=2.5 if name == ENSEMBLE else 1.5)
    ax.set(xlabel="mean predicted P(fake)", ylabel="fraction of fakes", title="Reliability diagram",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    save(fig, paths[3])

    names = list(metrics)
    x = np.arange(len(names))
    colors = ["tab:orange" if n == ENSEMBLE else "tab:blue" for n in names]
    fig, (ax_ll, ax_auc) = plt.subplots(1, 2, figsize=(max(6, 1.2 * len(names) + 3), 4))
    ax_ll.bar(x, [metrics[n]["log_loss"] for n in names], color=colors)
    ax_ll.set(title="log loss (lower is better)", xticks=x)
    ax_ll.set_xticklabels(names, rotation=30, ha="right")
    ax_auc.bar(x, [np.nan_to_num(metrics[n]["auc"]) for n in names], color=colors)
    ax_auc.set(title="AUC (higher is better)", xticks=x, ylim=(0, 1))
    ax_auc.set_xticklabels(names, rotation=30, ha="right")
    fig.tight_layout()
    save(fig, paths[4])
    return paths


TABLE_COLUMNS = (
    ("log_loss", "log_loss"), ("auc", "auc"), ("ap", "ap"), ("eer", "eer"), ("acc", "accuracy"),
    ("ll_real", "log_loss_real"), ("ll_fake", "log_loss_fake"), ("n", "n"),
)


def format_metrics_table(metrics: Mapping) -> str:
    """Plain-text table of :func:`evaluate` output: one row per model, then "ensemble"."""
    rows = list(metrics.get("models", {}).items())
    if ENSEMBLE in metrics:
        rows.append((ENSEMBLE, metrics[ENSEMBLE]))

    def cell(key: str, value) -> str:
        if value is None:
            return "-"
        if key == "n":
            return str(int(value))
        return "nan" if isinstance(value, float) and math.isnan(value) else f"{float(value):.4f}"

    header = ["model", *(h for h, _ in TABLE_COLUMNS)]
    body = [[name, *(cell(k, m.get(k)) for _, k in TABLE_COLUMNS)] for name, m in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    if ENSEMBLE in metrics and metrics[ENSEMBLE].get("weights"):
        w = ", ".join(f"{k}={v:.3f}" for k, v in metrics[ENSEMBLE]["weights"].items())
        out.append(f"ensemble ({metrics[ENSEMBLE].get('method', '?')}): {w}")
    return "\n".join(out)
