"""Device choice shared by detection, training and inference."""
from __future__ import annotations

import torch


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when present, else cpu; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
