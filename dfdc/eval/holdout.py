"""Scoring of the holdout fold from stored crops: `predict@MODEL` and validation during training."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dfdc.config.predict import PredictParams
from dfdc.eval.thresholds import fit_thresholds
from dfdc.folds import unseen_videos
from dfdc.inference.aggregate import Rule, aggregate_tracks, for_input, video_scores
from dfdc.inference.scorer import ScoringModel, score_table


def holdout_videos(folds: pd.DataFrame, holdout: int, leave_out: str | None = None) -> pd.DataFrame:
    """The labelled videos of fold ``holdout``: video, label, fold, original.

    ``leave_out``: without the fakes of that manipulation (model selection must not look at them).
    """
    cols = [c for c in ("video", "label", "fold", "original") if c in folds.columns]
    keep = (folds["fold"] == holdout) & folds["label"].isin([0, 1]) & ~folds["video"].isin(
        unseen_videos(folds, leave_out))
    return folds[keep][cols]


def holdout_rows(inputs: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``inputs`` (crops or clips) of ``videos``, in table order, as :func:`score_holdout` scores them."""
    return inputs[inputs["video"].isin(videos["video"])].reset_index(drop=True)


def score_holdout(model: ScoringModel, inputs: pd.DataFrame, videos: pd.DataFrame, directory: str | Path, *,
                  scoring: PredictParams, device: torch.device | str,
                  rules_by_video: Mapping[str, Sequence[Rule]] | None = None, probs: np.ndarray | None = None):
    """(video scores, crop scores, threshold fit or None) of ``videos`` from their stored inputs.

    ``probs``: the scores of :func:`holdout_rows`, scored elsewhere with the same settings (training
    under DDP scores a share of them on each rank); None scores them here.

    Each video's crops are scored by the scorer (``scoring``: the `predict` section's TTA and batch
    size) and aggregated per face track with its ``strategy`` (clip models: the mean of the windows,
    :func:`~dfdc.inference.aggregate.for_input`;
    the most fake track decides); a video without crops gets 0.5
    and the reason "no face". The "thresholds" strategy is fitted here, cross-fitted
    over ``scoring.thresholds.splits`` splits of the originals (:func:`dfdc.eval.thresholds.fit_thresholds`),
    unless ``rules_by_video`` gives each video its rules (fitted elsewhere).
    """
    rows = holdout_rows(inputs, videos)
    if probs is None:
        probs = score_table([model], rows, directory, tta=scoring.tta, batch_size=scoring.batch_size,
                            device=device)[model.name]
    elif len(probs) != len(rows):
        raise ValueError(f"{len(probs)} scores for the {len(rows)} holdout rows")
    rows["prob"] = probs
    frames = rows[["video", "frame", "track", "prob"]]
    strategy, min_len = for_input(model.spec.input, scoring.strategy)
    scored = video_scores(videos, frames, "mean" if strategy == "thresholds" else strategy, min_len=min_len)
    fit = None
    if strategy == "thresholds" and rules_by_video is not None:
        missing = sorted(set(scored["video"]) - set(rules_by_video))
        if missing:
            raise ValueError(f"no fitted rules for {len(missing)} video(s), e.g. {missing[0]}: the rules come from "
                             "another set of videos")
        groups = dict(tuple(frames.groupby("video")))
        scored["prob"] = [aggregate_tracks(groups[v]["prob"], groups[v]["track"], strategy, rules=rules_by_video[v])
                          if v in groups else p for v, p in zip(scored["video"], scored["prob"])]
    elif strategy == "thresholds":
        fit = fit_thresholds(scored, frames, levels=scoring.thresholds.levels, n_splits=scoring.thresholds.splits)
        scored["prob"] = fit.prob
        scored = scored.assign(**fit.columns(scored["video"]))
    return scored, rows, fit
