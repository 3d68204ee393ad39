"""Grad-CAM over a frame model's last convolutional feature map: which region of a crop drove its score.

The feature map is found, not named: the last module output of shape
(B, C, h, w) with h * w > 1 before the logit (for timm CNNs the last stage,
before global pooling), so it works on any registered 2D model and on the
batch-norm-folded graphs the scorer runs.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from dfdc.inference.scorer import ScoringModel

_HOOKS = threading.Lock()  # one Grad-CAM pass at a time holds hooks on a model


def _last_feature_map(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B,), the last 4D spatial activation (B, C, h, w)) of one forward pass with grad."""
    maps: list[torch.Tensor] = []

    def keep(_module, _inputs, out) -> None:
        # requires_grad: only this pass's activations, not those of a scorer thread sharing the model
        if isinstance(out, torch.Tensor) and out.requires_grad and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1:
            maps.append(out)

    hooks = [m.register_forward_hook(keep) for m in net.modules() if not any(True for _ in m.children())]
    try:
        logits = net(x).logits
    finally:
        for h in hooks:
            h.remove()
    if not maps:
        raise ValueError("no spatial feature map in this model: Grad-CAM needs a convolutional stage")
    return logits, maps[-1]


def grad_cam(model: ScoringModel, crops: Sequence[np.ndarray], device: torch.device | str = "cpu") -> list[np.ndarray]:
    """One heatmap per crop, (H, W) float32 in [0, 1] at the crop's own size: where the fake logit rose.

    Each crop is fed as the scorer feeds it (resized and padded to the model's
    size); the map is weighted by the mean gradient of the logit over each channel,
    rectified, scaled to a maximum of 1 (all zeros when nothing pushed the score up),
    cut back to the crop's area and resized to it.
    """
    if model.spec.input != "frame":
        raise ValueError(f"{model.name}: Grad-CAM covers frame models; this one eats {model.spec.input}s")
    if not isinstance(model.model, torch.nn.Module):
        raise ValueError(f"{model.name}: Grad-CAM needs the torch runtime (this model runs as an ONNX graph)")
    if not crops:
        return []
    device = torch.device(device)
    net = model.model
    was_training = net.training
    net.eval()
    try:
        with _HOOKS, torch.enable_grad():
            x = torch.from_numpy(np.stack([model.resize(c) for c in crops])).to(device)
            x = model.spec.prepare(x).requires_grad_(True)  # (B, 3, S, S)
            logits, fmap = _last_feature_map(net, x)
            (grads,) = torch.autograd.grad(logits.sum(), fmap)
            cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * fmap).sum(dim=1, keepdim=True))
            cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
        cam = cam[:, 0].detach().float().cpu().numpy()
    finally:
        net.train(was_training)
    out = []
    for c, m in zip(crops, cam):
        area = model.resize(np.full(c.shape[:2] + (3,), 255, np.uint8))[..., 0] > 0  # where the crop lies
        rows, cols = np.flatnonzero(area.any(axis=1)), np.flatnonzero(area.any(axis=0))
        m = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        m = cv2.resize(m, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR)
        peak = float(m.max())
        out.append(np.clip(m / peak, 0, 1).astype(np.float32) if peak > 0 else np.zeros(c.shape[:2], np.float32))
    return out


def overlay(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The crop (RGB uint8) with the heatmap drawn over it in the 'jet' colours."""
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (crop.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).round().astype(np.uint8)
