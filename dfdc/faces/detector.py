"""MTCNN face detection (facenet-pytorch, weights shipped in the wheel).

Frames are scaled by their longer side before detection (seed 004's rule) and
boxes/landmarks are mapped back to full-resolution pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from dfdc.device import pick_device


def detector_scale(width: int, height: int) -> float:
    """Detector input scale by the longer side: <300 x2; 300-1000 x1; >1000 x0.5; >1900 x0.33."""
    longer = max(width, height)
    if longer < 300:
        return 2.0
    if longer <= 1000:
        return 1.0
    if longer <= 1900:
        return 0.5
    return 0.33


@dataclass
class Faces:
    """Faces found in one frame, in full-resolution pixel coordinates."""

    boxes: np.ndarray  # (K, 4) x1, y1, x2, y2
    scores: np.ndarray  # (K,)
    landmarks: np.ndarray  # (K, 5, 2) left eye, right eye, nose, mouth left, mouth right

    def __len__(self) -> int:
        return len(self.scores)


EMPTY = Faces(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


class ChannelsLastPool(nn.Module):
    """A max-pool that runs in channels-last memory: 10x faster than NCHW on the CPU, same values and layout.

    MTCNN's R-Net and O-Net pool NCHW tensors, which torch's CPU kernel does
    slowly (most of their time); max-pooling is exact, so only the speed changes.
    """

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous():  # (N, C, H, W) in NCHW memory
            return self.pool(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.pool(x)


class FaceDetector:
    """Batched MTCNN with the resolution rule and score / size filters.

    ``min_face_size`` is in full-resolution pixels (at least 12 at the detector's
    input); it also bounds MTCNN's image pyramid, the main cost on a CPU.
    """

    def __init__(
        self,
        device: str = "auto",
        thresholds: Sequence[float] = (0.85, 0.95, 0.95),
        min_score: float = 0.9,
        min_face_size: int = 40,
        max_faces: int = 4,
        batch_size: int = 32,
        scale: float | None = None,
    ) -> None:
        from facenet_pytorch import MTCNN

        self.device = pick_device(device)
        self.mtcnn = MTCNN(
            keep_all=True,
            device=self.device,
            thresholds=list(thresholds),
            min_face_size=20,
            post_process=False,
        )
        if self.device.type == "cpu":
            for net in (self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet):
                for name, child in net.named_children():
                    if isinstance(child, nn.MaxPool2d):
                        setattr(net, name, ChannelsLastPool(child))
        self.min_score = min_score
        self.min_face_size = min_face_size
        self.max_faces = max_faces
        self.batch_size = batch_size
        self.scale = scale

    def detect(self, frames: Sequence[np.ndarray]) -> list[Faces]:
        """Detect faces in RGB frames of one size; returns one :class:`Faces` per frame.

        Safe to call from several threads at once: nothing of the detector changes per call.
        """
        from facenet_pytorch.models.utils.detect_face import detect_face

        if len(frames) == 0:
            return []
        h, w = frames[0].shape[:2]
        s = self.scale if self.scale is not None else detector_scale(w, h)
        min_size = max(12, round(self.min_face_size * s))  # full-res pixels -> detector input
        m = self.mtcnn
        out: list[Faces] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            if s != 1.0:
                size = (max(1, round(w * s)), max(1, round(h * s)))
                interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                batch = [cv2.resize(f, size, interpolation=interp) for f in batch]
            with torch.inference_mode():
                found, points = detect_face(np.stack(batch), min_size, m.pnet, m.rnet, m.onet, m.thresholds,
                                            m.factor, m.device)
            for b, lm in zip(found, points):
                b, lm = np.asarray(b), np.asarray(lm)
                if len(b) == 0:
                    out.append(EMPTY)
                    continue
                order = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]  # largest first, as MTCNN.detect
                out.append(self._filter(b[order, :4], b[order, 4], lm[order], s, w, h))
        return out

    def _filter(self, boxes, probs, points, s: float, w: int, h: int) -> Faces:
        if boxes is None or len(boxes) == 0:
            return EMPTY
        boxes = np.asarray(boxes, np.float32) / s
        probs = np.asarray(probs, np.float32)
        points = np.asarray(points, np.float32) / s
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        size = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (probs >= self.min_score) & (size >= self.min_face_size)
        order = np.argsort(-probs[keep])[: self.max_faces]
        return Faces(boxes[keep][order], probs[keep][order], points[keep][order])
