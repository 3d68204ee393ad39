"""dfdc: a reproducible deepfake-detection pipeline."""

__version__ = "0.1.0"
