"""Scoring of the holdout fold from stored crops: `predict@MODEL` and validation during training."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from dfdc.inference.aggregate import video_scores
from dfdc.inference.scorer import ScoringModel, score_table


def holdout_videos(folds: pd.DataFrame, holdout: int) -> pd.DataFrame:
    """The labelled videos of fold ``holdout``: video, label, fold."""
    return folds[(folds["fold"] == holdout) & folds["label"].isin([0, 1])][["video", "label", "fold"]]


def score_holdout(model: ScoringModel, inputs: pd.DataFrame, videos: pd.DataFrame, directory: str | Path, *,
                  strategy: str, tta: bool, batch_size: int,
                  device: torch.device | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(video scores, crop scores) of ``videos`` from their stored inputs, as `dfdc predict` aggregates.

    Each video's crops are scored by the scorer and aggregated per face track with
    ``strategy`` (the most fake track decides); a video without crops gets 0.5
    and the reason "no face".
    """
    rows = inputs[inputs["video"].isin(videos["video"])].reset_index(drop=True)
    rows["prob"] = score_table([model], rows, directory, tta=tta, batch_size=batch_size, device=device)[model.name]
    return video_scores(videos, rows[["video", "frame", "track", "prob"]], strategy), rows
