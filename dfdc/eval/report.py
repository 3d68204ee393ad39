"""The evaluation document: video- and frame-level metrics per model and for the ensemble, with intervals,
per manipulation method and source dataset, and the numbers of temperature scaling before and after.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dfdc.config.evaluate import EvaluateParams
from dfdc.eval.calibrate import expected_calibration_error, fit_temperature
from dfdc.eval.crossfit import group_splits, video_groups
from dfdc.eval.ensemble import (
    ENSEMBLE,
    METHODS,
    NO_SCORE,
    cross_fit_weights,
    ensemble,
    fit_weights,
    model_scores,
    scores,
)
from dfdc.eval.metrics import binary_metrics, log_loss, per_group, per_method, with_ci
from dfdc.inference.combine import apply_temperature


def _groups(preds: Mapping[str, pd.DataFrame], info: pd.DataFrame | None) -> dict[str, str]:
    """video -> cross-fitting group (its original), from the prediction tables or ``info``."""
    for table in [*preds.values(), info]:
        if table is not None and "original" in table.columns:
            return dict(zip(table["video"].astype(str), video_groups(table["video"], table["original"])))
    return {}


def _frame_table(frames: Mapping[str, pd.DataFrame], videos: pd.Series,
                 weights: Mapping[str, float]) -> tuple[pd.DataFrame | None, dict[str, pd.DataFrame]]:
    """(the ensemble's rows, each model's own rows) of the crops (clip windows) scored on ``videos``.

    The ensemble's table has one row per crop that every model of the largest group scoring the
    same crops scored (clip models score windows, keyed apart): key, video, label, prob_<model>,
    prob (their scores combined as the videos' are). Each model's own rows are key, video, label, prob_<model>.
    """
    own = {name: f.loc[f["video"].isin(videos), ["key", "video", "label", "prob"]].rename(
        columns={"prob": f"prob_{name}"}) for name, f in frames.items()}
    groups: dict[frozenset, list[str]] = {}
    for name, part in own.items():
        groups.setdefault(frozenset(part["key"]), []).append(name)
    shared = max(groups.values(), key=len, default=[])
    out = None
    for name in shared:
        part = own[name]
        out = part if out is None else out.merge(part.drop(columns=["video", "label"]), on="key", how="inner")
    if out is None or out.empty:
        return None, own
    out["prob"] = scores(out[[f"prob_{n}" for n in shared]].to_numpy(dtype=float), [weights[n] for n in shared])
    return out.reset_index(drop=True), own


def _breakdowns(table: pd.DataFrame, info: pd.DataFrame | None, columns: dict[str, str],
                groups: Mapping[str, str] | None = None, n_boot: int = 0, seed: int = 0) -> dict[str, dict]:
    if info is None:
        return {}
    keep = [c for c in ("method", "dataset") if c in info.columns]
    t = table.merge(info[["video", *keep]].drop_duplicates("video"), on="video", how="left")
    out = {}
    if "method" in keep:
        if groups is not None and n_boot > 0:
            t = t.assign(_group=[groups.get(v, v) for v in t["video"].astype(str)])
            out["by_method"] = per_method(t, columns, n_boot=n_boot, groups="_group", seed=seed)
        else:
            out["by_method"] = per_method(t, columns)
    if "dataset" in keep:
        out["by_dataset"] = per_group(t, "dataset", columns)
    return out


def _splits_and_views(preds: Mapping[str, pd.DataFrame], ens: pd.DataFrame, keys: list[str], n_splits: int,
                      seed: int) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """Cross-fitting splits of the ensemble's videos and, per split, every video's model scores as the values
    fitted without that split made them (NaN where a model did not score a video); None when the videos
    cannot be split.

    Models whose thresholds were cross-fitted (``split`` and ``prob_fit{k}`` columns) fix the splits, so
    the weights and temperatures fitted later follow the same ones.
    """
    names = list(preds)
    order = ens["video"]
    plain = model_scores(ens, names)
    carried = [n for n in names if "split" in preds[n].columns]
    if carried:
        split = {n: preds[n].set_index("video").reindex(order) for n in carried}
        first = split[carried[0]]["split"].to_numpy()
        if any((split[n]["split"].to_numpy() != first).any() for n in carried):
            raise ValueError("the models' thresholds were cross-fitted on different splits of the holdout; "
                             "give every model the same predict.thresholds.splits")
        parts = [np.flatnonzero(first == k) for k in range(int(np.nanmax(first)) + 1)]
        views = [np.column_stack([split[n][f"prob_fit{k}"].to_numpy(dtype=float) if n in split else plain[:, j]
                                  for j, n in enumerate(names)]) for k in range(len(parts))]
        return parts, [np.where(np.isnan(plain), np.nan, v) for v in views]
    if len(set(keys)) < n_splits:
        return None
    parts = group_splits(keys, n_splits, seed)
    return parts, [plain] * len(parts)


def _nested_temperature(y: np.ndarray, views: list[np.ndarray], scores: np.ndarray, parts: list[np.ndarray]):
    """Split k's ``scores`` scaled by the temperature fitted on the other splits' ``views[k]``."""
    out = np.empty_like(scores)
    temps = []
    for view, part in zip(views, parts):
        rest = np.setdiff1d(np.arange(len(y)), part)
        t = fit_temperature(y[rest], view[rest])
        out[part] = apply_temperature(scores[part], t)
        temps.append(t)
    return out, temps


def _calibration(y: np.ndarray, before: np.ndarray, after: np.ndarray, temps: list[float], shipped: float) -> dict:
    return {"temperature": shipped, "split_temperatures": temps,
            "ece_before": expected_calibration_error(y, before), "ece_after": expected_calibration_error(y, after),
            "log_loss_before": log_loss(y, before), "log_loss_after": log_loss(y, after)}


@dataclass
class _Weighted:
    """The ensemble's scores under its weights: cross-fitted where weights were fitted or carried."""

    prob: np.ndarray  # (videos,)
    shipped: np.ndarray  # the weights that ship (fitted on every video)
    split_weights: list[np.ndarray]  # the weights each cross-fitting split was scored with


def _weighted(y: np.ndarray, probs: np.ndarray, split, ens: pd.DataFrame, names: list[str], method: str,
              fitted: Mapping[str, Any] | None) -> _Weighted:
    """Step 1: the weights, fitted (cross-fitted over ``split``), given or equal (``ens``'s), or the clean
    holdout's split by split (``fitted``: a video of no clean split gets what ships)."""
    shipped = np.array([ens.attrs["weights"][n] for n in names])
    if method == "fitted":  # the caller made sure the videos can be split
        prob, split_w = cross_fit_weights(y, split[1], split[0])
        return _Weighted(prob, fit_weights(y, probs), split_w)
    if fitted is not None:
        where = {v: k for k, vs in enumerate(fitted["split_videos"]) for v in vs}
        split_w = [np.array([w[n] for n in names]) for w in fitted["split_weights"]]
        shipped = np.array([fitted["weights"][n] for n in names])
        temps = fitted.get("split_temperatures") or []
        prob = np.empty(len(ens))
        for i, v in enumerate(ens["video"]):
            k = where.get(v)
            prob[i] = scores(probs[i:i + 1], shipped if k is None else split_w[k],
                             temps[k] if temps and k is not None else None)[0]
        return _Weighted(prob, shipped, [])
    return _Weighted(scores(probs, shipped), shipped, [shipped] * (len(split[0]) if split is not None else 0))


def _calibrations(y: np.ndarray, probs: np.ndarray, split, weighted: _Weighted, ens_prob: np.ndarray,
                  names: list[str], temperature: float | None) -> tuple[dict, dict, list[float]]:
    """Step 2: temperature scaling of every model and of the ensemble, cross-fitted: (the "calibration"
    section, name -> scores after scaling, the ensemble's split temperatures)."""
    if split is None:
        return {}, {}, []
    parts, views = split
    calibration, calibrated = {}, {}
    plain = np.nan_to_num(probs, nan=NO_SCORE)
    for j, n in enumerate(names):
        after, temps = _nested_temperature(y, [np.nan_to_num(v[:, j], nan=NO_SCORE) for v in views], plain[:, j],
                                           parts)
        calibration[n] = _calibration(y, plain[:, j], after, temps, fit_temperature(y, plain[:, j]))
        calibrated[n] = after
    ens_views = ([scores(v, w, temperature) for v, w in zip(views, weighted.split_weights)]
                 if weighted.split_weights else [ens_prob] * len(parts))
    after, temps = _nested_temperature(y, ens_views, ens_prob, parts)
    calibration[ENSEMBLE] = _calibration(y, ens_prob, after, temps, fit_temperature(y, ens_prob))
    calibrated[ENSEMBLE] = after
    return calibration, calibrated, temps


def _metrics(ens: pd.DataFrame, names: list[str], keys: list[str], n_boot: int, seed: int,
             frames: Mapping[str, pd.DataFrame] | None, info: pd.DataFrame | None,
             groups: Mapping[str, str]) -> dict[str, Any]:
    """Step 3: video-level metrics with intervals per model and for the ensemble, frame-level metrics, and
    both per manipulation method and source dataset."""
    y = ens["label"].to_numpy()
    doc: dict[str, Any] = {"models": {n: with_ci(y, ens[f"prob_{n}"], keys, n_boot=n_boot, seed=seed)
                                      for n in names},
                           ENSEMBLE: with_ci(y, ens["prob"], keys, n_boot=n_boot, seed=seed)}
    columns = {n: f"prob_{n}" for n in names} | {ENSEMBLE: "prob"}
    video_parts, frame_parts = _breakdowns(ens, info, columns, groups, n_boot, seed), {}
    if frames:  # raw crop (window) scores: a video-level temperature does not apply to them
        ft, own = _frame_table(frames, ens["video"], ens.attrs["weights"])
        doc["frame"] = {}
        for name, col in columns.items():
            table = own.get(name, ft)
            if table is None or table.empty:
                continue
            doc["frame"][name] = binary_metrics(table["label"], table[col])
            for key, part in _breakdowns(table, info, {name: col}).items():
                for group, m in part.items():
                    frame_parts.setdefault(key, {}).setdefault(group, {}).update(m)
    for key, part in video_parts.items():
        doc[key] = {group: {"video": m, **({"frame": frame_parts[key][group]}
                                           if group in frame_parts.get(key, {}) else {})}
                    for group, m in part.items()}
    return doc


def evaluate(
    preds: Mapping[str, pd.DataFrame],
    *,
    frames: Mapping[str, pd.DataFrame] | None = None,
    info: pd.DataFrame | None = None,
    params: EvaluateParams | None = None,
    fitted: Mapping[str, Any] | None = None,
    temperature: float | None = None,
    bounds: tuple[float, float] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every metric of one scored set, and the ensemble table it was computed on.

    ``preds``: per model, video rows (video, label, prob, fold; ``reason`` when it could not score
    a video; ``original`` keeps a fake with its original in one cross-fitting split;
    ``split``/``prob_fit{k}`` from cross-fitted thresholds). ``frames``: per model, crop rows
    (key, video, label, prob) for frame-level metrics. ``info``: video, method, dataset for the
    breakdowns. ``params`` (the `evaluate` section): the weights (``method``, ``weights``), the
    cross-fitting ``splits``, ``calibrate`` and the ``bootstrap`` resamples.

    Fitted steps are cross-fitted as one chain: split k is scored with weights
    (``method: fitted``) and temperatures fitted on the other splits' scores as split k's fit
    made them, so no video's label reaches its own score. ``calibrate`` scores the ensemble
    with its cross-fitted temperature. ``fitted`` (the clean holdout's ``split_videos``,
    ``split_weights`` and ``split_temperatures`` attrs) scores each video with the weights and
    temperature of its split on the clean holdout (its degraded twin); ``method`` and
    ``calibrate`` then do not apply. ``temperature`` applies a fixed one (a shipped ensemble)
    and ``bounds`` bounds the ensemble's scores as a submission does. Temperature scaling of
    every model and of the ensemble is reported under "calibration" either way. The table's
    ``attrs`` hold ``weights`` (fitted on every video: what ships), ``split_*`` and
    ``calibrated`` (name -> cross-fitted temperature-scaled scores, for the reliability diagram).
    """
    p = params or EvaluateParams()
    if p.method not in (*METHODS, "fitted"):
        raise ValueError(f"method must be one of {(*METHODS, 'fitted')}, got {p.method!r}")
    seed = 0
    names = list(preds)
    groups = _groups(preds, info)
    ens = ensemble(preds, weights=p.weights if p.method == "given" else None,
                   method="given" if p.method == "given" else "equal")
    y = ens["label"].to_numpy()
    keys = [groups.get(v, v) for v in ens["video"].astype(str)]
    probs = model_scores(ens, names)
    split = _splits_and_views(preds, ens, keys, p.splits, seed) if np.unique(y).size == 2 else None
    if p.method == "fitted" and split is None:
        raise ValueError(f"cannot cross-fit weights on {len(ens)} videos ({len(set(keys))} originals) "
                         f"over {p.splits} splits")
    weighted = _weighted(y, probs, split, ens, names, p.method, fitted)
    prob = weighted.prob if temperature is None else apply_temperature(weighted.prob, temperature)
    ens["prob"] = np.clip(prob, 0.0, 1.0)
    ens.attrs["weights"] = dict(zip(names, map(float, weighted.shipped)))
    calibration, calibrated, ens_temps = _calibrations(y, probs, split, weighted, ens["prob"].to_numpy(), names,
                                                       temperature)
    calibrate = p.calibrate and fitted is None
    if calibrate:
        if ENSEMBLE not in calibrated:
            raise ValueError(f"cannot cross-fit a temperature on {len(ens)} videos ({len(set(keys))} originals, "
                             f"{np.unique(y).size} classes) over {p.splits} splits")
        ens["prob"] = calibrated[ENSEMBLE]
    if bounds is not None:
        ens["prob"] = ens["prob"].clip(*bounds)
    doc = _metrics(ens, names, keys, p.bootstrap, seed, frames, info, groups)
    doc[ENSEMBLE] |= {"method": p.method, "weights": ens.attrs["weights"], "partial": int(ens.attrs["partial"]),
                      "cross_fitted": p.method == "fitted", "calibrated": calibrate,
                      "temperature": calibration[ENSEMBLE]["temperature"] if calibrate else temperature}
    doc["calibration"] = calibration
    ens.attrs.update(method=p.method, calibrated=calibrated,
                     split_videos=[ens["video"].iloc[part].tolist() for part in split[0]] if split else [],
                     split_weights=[dict(zip(names, map(float, w))) for w in weighted.split_weights],
                     split_temperatures=ens_temps if calibrate else [])
    return doc, ens


def headline(doc: Mapping, degraded: Mapping | None = None) -> dict[str, dict[str, float]]:
    """The few numbers `dvc exp show` and `dvc metrics diff` show by default: the ensemble's and each model's
    video log loss and AUC, clean and degraded, then their 95% intervals (ensemble first, keys in that order);
    with a left-out manipulation, each model's log loss and AUC on it (``leave_out``)."""
    rows = {ENSEMBLE: doc[ENSEMBLE], **doc.get("models", {})}
    drows = {ENSEMBLE: degraded.get(ENSEMBLE, {}), **degraded.get("models", {})} if degraded else {}
    out: dict[str, dict[str, float]] = {}
    for name, m in rows.items():
        d = drows.get(name, {})
        sets = [("", m)] + ([("degraded_", d)] if d else [])
        row = {f"{pre}{k}": m_[k] for pre, m_ in sets for k in ("log_loss", "auc") if k in m_}
        row |= {f"{pre}{k}_{end}": m_[f"{k}_{end}"] for pre, m_ in sets for k in ("log_loss", "auc")
                for end in ("lo", "hi") if f"{k}_{end}" in m_}
        out[name] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    left = (doc.get("leave_out") or {}).get("video") or {}
    if left:  # the left-out manipulation's fakes against every real: what the generalisation runs compare
        out["leave_out"] = {name: {k: m[k] for k in ("log_loss", "auc") if k in m} for name, m in left.items()}
    return out


def _cell(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if key in ("n", "n_real", "n_fake"):
        return str(int(value))
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{float(value):.4f}"


def _ci(m: Mapping, key: str) -> str:
    lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
    if lo is None or hi is None or math.isnan(lo):
        return _cell(m.get(key))
    return f"{_cell(m.get(key))} [{lo:.3f}, {hi:.3f}]"


def _grid(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]


def format_metrics_table(doc: Mapping, degraded: Mapping | None = None) -> str:
    """Plain-text tables of an evaluation document: video level with 95% intervals and frame level,
    per method, clean against degraded, and calibration."""
    rows = [*doc.get("models", {}).items(), *([(ENSEMBLE, doc[ENSEMBLE])] if ENSEMBLE in doc else [])]
    frame = doc.get("frame", {})
    header = ["model", "log_loss [95% CI]", "auc [95% CI]", "ap", "eer", "acc", "ll_real", "ll_fake",
              "frame_auc", "frame_ll", "n"]
    body = [[name, _ci(m, "log_loss"), _ci(m, "auc"), _cell(m.get("ap")), _cell(m.get("eer")),
             _cell(m.get("accuracy")), _cell(m.get("log_loss_real")), _cell(m.get("log_loss_fake")),
             _cell(frame.get(name, {}).get("auc")), _cell(frame.get(name, {}).get("log_loss")),
             _cell(m.get("n"), "n")] for name, m in rows]
    out = ["video level (frame_*: every scored crop, or window of a clip model; the ensemble's: the crops its "
           "frame models share)", *_grid(header, body)]
    ens = doc.get(ENSEMBLE, {})
    if ens.get("weights"):
        w = ", ".join(f"{k}={v:.3f}" for k, v in ens["weights"].items())
        t = f"; temperature {ens['temperature']:.3f}" if ens.get("temperature") else ""
        out.append(f"ensemble ({ens.get('method', '?')}{', calibrated' if ens.get('calibrated') else ''}): {w}{t}")
    names = [name for name, _ in rows]
    for key, title in (("by_method", "per manipulation method (its fakes against every real)"),
                       ("by_dataset", "per source dataset")):
        part = doc.get(key, {})
        if not part or (key == "by_dataset" and len(part) < 2):
            continue
        body = [[group, *(f"{_cell(v['video'][n]['auc'])} / {_cell(v['video'][n]['log_loss'])}" for n in names),
                 _cell(v["video"][names[-1]]["n"], "n")] for group, v in part.items()]
        out += ["", f"{title}: video auc / log loss", *_grid([key.removeprefix("by_"), *names, "n"], body)]
    left = doc.get("leave_out")
    if left and left.get("video"):
        body = [[n, _ci(m, "log_loss"), _ci(m, "auc"), f"{m.get('n_real')} / {m.get('n_fake')}"]
                for n, m in left["video"].items()]
        out += ["", f"left-out manipulation {left['method']!r} (no model trained on it or chose an epoch by it): "
                "its holdout fakes against every holdout real",
                *_grid(["model", "log_loss [95% CI]", "auc [95% CI]", "real / fake videos"], body)]
    if degraded:
        drows = {**degraded.get("models", {}), ENSEMBLE: degraded.get(ENSEMBLE, {})}
        body = [[n, _cell(m.get("log_loss")), _cell(drows.get(n, {}).get("log_loss")), _cell(m.get("auc")),
                 _cell(drows.get(n, {}).get("auc"))] for n, m in rows]
        out += ["", "clean against degraded holdout (one of JPEG, downscale, half fps or none per original)",
                *_grid(["model", "ll_clean", "ll_degraded", "auc_clean", "auc_degraded"], body)]
    cal = doc.get("calibration", {})
    if cal:
        body = [[n, f"{c['temperature']:.3f}", _cell(c["ece_before"]), _cell(c["ece_after"]),
                 _cell(c["log_loss_before"]), _cell(c["log_loss_after"])] for n, c in cal.items()]
        out += ["", "temperature scaling, cross-fitted (evaluate.calibrate switches it on for the ensemble)",
                *_grid(["model", "T", "ece_before", "ece_after", "ll_before", "ll_after"], body)]
    return "\n".join(out)
