"""Inference: video-level aggregation of frame probabilities."""
from dfdc.inference.aggregate import AGGREGATORS, aggregate, confidence_weighted, confident_strategy, mean_strategy

__all__ = ["AGGREGATORS", "aggregate", "confidence_weighted", "confident_strategy", "mean_strategy"]
