"""MTCNN face detection (facenet-pytorch, weights shipped in the wheel).

Frames are scaled by their longer side before detection (the 1st place's rule) and
boxes/landmarks are mapped back to full-resolution pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np
import torch
from numba import njit
from torch import nn

from dfdc.device import pick_device

if TYPE_CHECKING:
    from dfdc.config.detect import DetectParams


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


def summed_area(images: np.ndarray) -> np.ndarray:
    """(B, H + 1, W + 1, C) summed-area tables of a (B, H, W, C) uint8 batch, zero first row and column."""
    depth = cv2.CV_32S if images.shape[1] * images.shape[2] * 255 < 2**31 else cv2.CV_64F
    return np.stack([cv2.integral(im, sdepth=depth) for im in images])


@njit(cache=True, nogil=True)
def _area_kernel(table, image, y0, y1, x0, x1, out):  # pragma: no cover - compiled
    n_out, out_h, out_w, c = out.shape
    for n in range(n_out):
        t = table[image[n]]
        hh, ww = y1[n] - y0[n], x1[n] - x0[n]
        for i in range(out_h):
            ys = y0[n] + i * hh // out_h
            ye = y0[n] + ((i + 1) * hh + out_h - 1) // out_h
            kh = np.float32(ye - ys)
            for j in range(out_w):
                xs = x0[n] + j * ww // out_w
                xe = x0[n] + ((j + 1) * ww + out_w - 1) // out_w
                kw = np.float32(xe - xs)
                for k in range(c):
                    total = np.float32(t[ye, xe, k] - t[ys, xe, k] - t[ye, xs, k] + t[ys, xs, k])
                    out[n, i, j, k] = total / kh / kw


def area_resize(table: np.ndarray, image: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray,
                x1: np.ndarray, out_h: int, out_w: int) -> torch.Tensor:
    """Regions [y0:y1, x0:x1] of the ``image``-th images, area-resized to (out_h, out_w), all at once.

    ``table`` comes from :func:`summed_area`; the other arrays hold one int64
    per region. Each output pixel is the mean of the same input pixels as in
    ``F.interpolate(region, mode="area")`` (adaptive average pooling), computed
    the same way, so the values are bit-identical to resizing the regions one by
    one. Returns (N, C, out_h, out_w) float32 (channels-last in memory).
    """
    out = np.empty((len(image), out_h, out_w, table.shape[3]), np.float32)
    _area_kernel(table, image, y0, y1, x0, x1, out)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _refine(table: np.ndarray, boxes: torch.Tensor, image_inds: torch.Tensor, net: nn.Module, size: int,
            w: int, h: int) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Run R-Net or O-Net on the boxes' crops: (boxes, image indices, net outputs).

    Boxes whose crop is empty (outside the image) are dropped; the outputs are
    None when no box is left (the nets cannot take an empty batch).
    """
    from facenet_pytorch.models.utils.detect_face import pad

    y, ey, x, ex = (v.astype(np.int64) for v in pad(boxes, w, h))
    ok = (ey > y - 1) & (ex > x - 1)
    keep = torch.from_numpy(ok).to(boxes.device)
    boxes, image_inds = boxes[keep], image_inds[keep]
    if not ok.any():
        return boxes, image_inds, None
    crops = area_resize(table, image_inds.cpu().numpy(), y[ok] - 1, ey[ok], x[ok] - 1, ex[ok], size, size)
    crops = (crops.to(boxes.device) - 127.5) * 0.0078125
    outs = [net(crops[i : i + 512]) for i in range(0, len(crops), 512)]
    return boxes, image_inds, tuple(torch.cat(v) for v in zip(*outs))


def mtcnn_cascade(imgs: np.ndarray, min_size: int, mtcnn, device: torch.device) -> list[tuple[np.ndarray, np.ndarray]]:
    """MTCNN's three stages on a (B, H, W, 3) uint8 batch: per image (boxes (K, 5) with score, landmarks (K, 5, 2)).

    The same computation as facenet-pytorch's ``detect_face`` (its networks,
    thresholds, pyramid, NMS and box helpers), but every resize (the pyramid and
    the R-Net / O-Net crops) is read off summed-area tables in one vectorised
    step instead of one interpolate call per box, which was about 40% of the
    time on a CPU. The inputs are the same values; a box whose crop is empty is dropped.
    """
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, generateBoundingBox, rerec
    from torchvision.ops import batched_nms

    pnet, rnet, onet, thr, factor = mtcnn.pnet, mtcnn.rnet, mtcnn.onet, mtcnn.thresholds, mtcnn.factor
    n, h, w = imgs.shape[:3]
    none = [(np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)) for _ in range(n)]
    table = summed_area(imgs)
    zeros = np.zeros(n, np.int64)
    everything = np.arange(n), zeros, np.full(n, h), zeros, np.full(n, w)
    scales, m = [], 12.0 / min_size
    side = min(h, w) * m
    while side >= 12:
        scales.append(m)
        m, side = m * factor, side * factor
    boxes, image_inds = [], []
    for scale in scales:
        x = area_resize(table, *everything, int(h * scale + 1), int(w * scale + 1)).to(device)
        reg, probs = pnet((x - 127.5) * 0.0078125)
        b, i = generateBoundingBox(reg, probs[:, 1], scale, thr[0])
        keep = batched_nms(b[:, :4], b[:, 4], i, 0.5)
        boxes.append(b[keep])
        image_inds.append(i[keep])
    if not scales:  # image smaller than the smallest face
        return none
    boxes, image_inds = torch.cat(boxes), torch.cat(image_inds)
    keep = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[keep], image_inds[keep]
    if not len(boxes):
        return none
    size = (boxes[:, 2:4] - boxes[:, 0:2])  # (K, 2): box width, height
    boxes = rerec(torch.cat([boxes[:, :4] + boxes[:, 5:9] * size.repeat(1, 2), boxes[:, 4:5]], dim=1))
    boxes, image_inds, out = _refine(table, boxes, image_inds, rnet, 24, w, h)
    if out is None:
        return none
    reg, prob = out
    ok = prob[:, 1] > thr[1]
    boxes = torch.cat([boxes[ok, :4], prob[ok, 1:2]], dim=1)
    image_inds, reg = image_inds[ok], reg[ok]
    keep = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes = rerec(bbreg(boxes[keep], reg[keep]))
    image_inds = image_inds[keep]
    if not len(boxes):
        return none
    boxes, image_inds, out = _refine(table, boxes, image_inds, onet, 48, w, h)
    if out is None:
        return none
    reg, marks, prob = out
    ok = prob[:, 1] > thr[2]
    boxes = torch.cat([boxes[ok, :4], prob[ok, 1:2]], dim=1)
    image_inds, reg, marks = image_inds[ok], reg[ok], marks[ok]
    wh = boxes[:, 2:4] - boxes[:, 0:2] + 1  # (K, 2)
    points = torch.stack([wh[:, None, 0] * marks[:, :5] + boxes[:, None, 0] - 1,
                          wh[:, None, 1] * marks[:, 5:] + boxes[:, None, 1] - 1], dim=2)  # (K, 5, 2)
    boxes = bbreg(boxes, reg)
    keep = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
    boxes, points, image_inds = (v[keep].cpu().numpy() for v in (boxes, points, image_inds))
    return [(boxes[image_inds == b], points[image_inds == b]) for b in range(n)]


class FaceDetector:
    """Batched MTCNN with the resolution rule and score / size filters.

    The smallest face is ``min_face_size`` full-resolution pixels and never under
    ``min_face_input`` pixels at the detector's input (after the resolution rule's
    downscale; MTCNN's own default, 20, which the 1st place ran at their scale): 40 px
    up to 1900 px wide frames, 60 px at 1080p. It bounds MTCNN's image pyramid, the main
    cost on a CPU (at 1080p 60 px instead of 40 took detection from 3.17 to 1.79 CPU s
    per video, losing no face; docs/scale.md).
    """

    def __init__(
        self,
        device: str = "auto",
        thresholds: Sequence[float] = (0.85, 0.95, 0.95),
        min_score: float = 0.9,
        min_face_size: int = 40,
        min_face_input: int = 20,
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
        self.min_face_input = min_face_input
        self.max_faces = max_faces
        self.batch_size = batch_size
        self.scale = scale

    @classmethod
    def from_params(cls, p: "DetectParams", **overrides: Any) -> "FaceDetector":
        """A detector with the settings of a `detect` params section; ``overrides`` win (e.g. ``device``)."""
        kw = {"device": p.device, "thresholds": p.thresholds, "min_score": p.min_score,
              "min_face_size": p.min_face_size, "min_face_input": p.min_face_input, "max_faces": p.max_faces,
              "batch_size": p.batch_size}
        return cls(**{**kw, **overrides})

    def detect(self, frames: Sequence[np.ndarray]) -> list[Faces]:
        """Detect faces in RGB frames of one size; returns one :class:`Faces` per frame.

        Safe to call from several threads at once: nothing of the detector changes per call.
        """
        if len(frames) == 0:
            return []
        h, w = frames[0].shape[:2]
        s = self.scale if self.scale is not None else detector_scale(w, h)
        min_size, _ = self.smallest_face(w, h)
        out: list[Faces] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            if s != 1.0:
                size = (max(1, round(w * s)), max(1, round(h * s)))
                interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                batch = [cv2.resize(f, size, interpolation=interp) for f in batch]
            with torch.inference_mode():
                found = mtcnn_cascade(np.stack(batch), min_size, self.mtcnn, self.device)
            for b, lm in found:
                order = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]  # largest first, as MTCNN.detect
                out.append(self._filter(b[order, :4], b[order, 4], lm[order], s, w, h))
        return out

    def smallest_face(self, w: int, h: int) -> tuple[int, float]:
        """The smallest face looked for in ``w`` x ``h`` frames: (pixels at the detector's input, full-resolution
        pixels)."""
        s = self.scale if self.scale is not None else detector_scale(w, h)
        at_input = max(12, self.min_face_input, round(self.min_face_size * s))
        return at_input, max(float(self.min_face_size), at_input / s)

    def _filter(self, boxes, probs, points, s: float, w: int, h: int) -> Faces:
        if boxes is None or len(boxes) == 0:
            return EMPTY
        boxes = np.asarray(boxes, np.float32) / s
        probs = np.asarray(probs, np.float32)
        points = np.asarray(points, np.float32) / s
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        size = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (probs >= self.min_score) & (size >= self.smallest_face(w, h)[1])
        order = np.argsort(-probs[keep])[: self.max_faces]
        return Faces(boxes[keep][order], probs[keep][order], points[keep][order])
