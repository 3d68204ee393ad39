"""Evaluation: metrics, cross-fitting, ensembles, calibration, threshold rules, plots and reports."""
