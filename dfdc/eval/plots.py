"""Evaluation plots: ROC, reliability diagram (before and after calibration), per-model bars; CSVs for DVC."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from dfdc.eval.calibrate import expected_calibration_error, reliability
from dfdc.eval.ensemble import ENSEMBLE
from dfdc.eval.metrics import binary_metrics, check_arrays


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
    """(labels, probabilities) per model and for the ensemble, on the ensemble's videos where possible."""
    y = ens_df["label"].to_numpy()
    out = {}
    for name, df in preds.items():
        col = f"prob_{name}"
        if col in ens_df.columns:
            out[name] = (y, ens_df[col].to_numpy(dtype=float))
        else:
            out[name] = (df["label"].to_numpy(), df["prob"].to_numpy(dtype=float))
    out[ENSEMBLE] = (y, ens_df["prob"].to_numpy(dtype=float))
    return {k: check_arrays(*v) for k, v in out.items()}


def write_plots(
    preds: Mapping[str, pd.DataFrame], ens_df: pd.DataFrame, out_dir: str | Path,
    calibrated: Mapping[str, np.ndarray] | None = None,
) -> list[Path]:
    """Write roc.csv, calibration.csv (for DVC plots) and roc.png, calibration.png, models.png.

    Models are drawn on the videos of ``ens_df`` when it carries their
    ``prob_<name>`` column; ROC rows are skipped for single-class data.
    ``calibrated`` (name -> cross-fitted temperature-scaled probabilities on the
    videos of ``ens_df``) adds "<name> (calibrated)" curves to the reliability
    diagram; every curve's label gives its expected calibration error.
    """
    import matplotlib
    from sklearn.metrics import roc_curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = _curves(preds, ens_df)
    y_ens = ens_df["label"].to_numpy()
    reliability_of = dict(curves) | {f"{n} (calibrated)": check_arrays(y_ens, p) for n, p in (calibrated or {}).items()}

    roc_rows, cal_rows, metrics, ece = [], [], {}, {}
    for name, (y, p) in curves.items():
        metrics[name] = binary_metrics(y, p)
        if np.unique(y).size == 2:
            fpr, tpr, _ = roc_curve(y, p)
            roc_rows.append(pd.DataFrame({"model": name, "fpr": fpr, "tpr": tpr}))
    for name, (y, p) in reliability_of.items():
        if y.size:
            table = reliability(y, p)
            ece[name] = expected_calibration_error(y, p)
            cal_rows.append(pd.DataFrame({"model": name, "mean_predicted": table["mean_predicted"],
                                          "fraction_positive": table["fraction_positive"]}))
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
        ax.plot(g["mean_predicted"], g["fraction_positive"], "o--" if name.endswith("(calibrated)") else "o-",
                label=f"{name} (ECE {ece[name]:.3f})", lw=2.5 if name.startswith(ENSEMBLE) else 1.5)
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
