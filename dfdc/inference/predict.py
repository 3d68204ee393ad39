"""Score face crops with a model and aggregate frame scores into video scores.

The holdout stage (`predict@MODEL`) and `dfdc predict` share these functions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from dfdc.data.augment import val_transforms
from dfdc.data.dataset import CropDataset
from dfdc.inference.aggregate import aggregate_tracks
from dfdc.models import create_model

NO_FACE = 0.5


@torch.inference_mode()
def predict_frames(model: torch.nn.Module, loader: DataLoader, device: torch.device, tta: bool = False) -> np.ndarray:
    """P(fake) for every item of the loader, in dataset order; ``tta`` averages with the hflip."""
    model.eval()
    out = np.zeros(len(loader.dataset), np.float32)
    amp = device.type == "cuda"
    for x, _, idx in loader:
        x = x.to(device, non_blocking=True)  # (B, 3, H, W)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = model(x).float()
            if tta:
                logits = (logits + model(torch.flip(x, dims=[3])).float()) / 2
        out[idx.numpy()] = torch.sigmoid(logits).cpu().numpy()
    return out


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from a checkpoint dict; returns (model in eval mode, checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    p = ckpt["params"]
    model = create_model(p["arch"], drop_rate=p["drop_rate"], drop_path_rate=p["drop_path_rate"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def score_crops(
    model: torch.nn.Module,
    table: pd.DataFrame,
    crops_dir: str | Path,
    input_size: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    tta: bool = False,
) -> np.ndarray:
    """P(fake) per crop row of ``table`` (model input size and normalisation from ``model.spec``)."""
    if len(table) == 0:
        return np.zeros(0, np.float32)
    ds = CropDataset(table.reset_index(drop=True), crops_dir, val_transforms(input_size),
                     model.spec.mean, model.spec.std)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    return predict_frames(model, loader, torch.device(device), tta=tta)


def video_scores(videos: pd.DataFrame, frames: pd.DataFrame, strategy: str, fallback: float = NO_FACE) -> pd.DataFrame:
    """One row per video of ``videos``: prob from ``frames`` (video, track, prob), n_frames, reason.

    Each face track is aggregated with ``strategy`` and the most fake track
    decides. A video with no scored frame gets ``fallback`` and the reason "no face".
    """
    groups = dict(tuple(frames.groupby("video"))) if len(frames) else {}
    rows = []
    for v in videos.itertuples():
        g = groups.get(v.video)
        if g is None:
            rows.append({"prob": float(fallback), "n_frames": 0, "reason": "no face"})
        else:
            rows.append({"prob": aggregate_tracks(g["prob"], g["track"], strategy, fallback=fallback),
                         "n_frames": len(g), "reason": ""})
    return videos.reset_index(drop=True).assign(**pd.DataFrame(rows, index=range(len(rows))))
