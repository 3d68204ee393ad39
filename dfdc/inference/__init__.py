"""Inference: the one scorer, video-level aggregation, and scoring of raw videos."""
