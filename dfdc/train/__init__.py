"""Training: losses."""
from dfdc.train.losses import split_bce

__all__ = ["split_bce"]
