"""Link per-frame face detections into tracks (one person across time)."""
from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def link_tracks(
    frames: list[int],
    boxes: list[np.ndarray],
    min_iou: float = 0.3,
    max_gap: int = 2,
) -> list[np.ndarray]:
    """Assign a track id to every box; ``boxes[i]`` holds the (K, 4) boxes of ``frames[i]``.

    Greedy IoU matching against each live track's last box, best pairs first;
    a track survives ``max_gap`` sampled frames without a match. Returns one
    int array of track ids per frame, aligned with ``boxes``.
    """
    last: dict[int, tuple[int, np.ndarray]] = {}  # track -> (step last seen, box)
    out = []
    next_id = 0
    for step, b in enumerate(boxes):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        ids = np.full(len(b), -1, int)
        live = [t for t, (s, _) in last.items() if step - s <= max_gap + 1]
        if live and len(b):
            m = iou(b, np.stack([last[t][1] for t in live]))
            for flat in np.argsort(-m, axis=None):
                i, j = divmod(int(flat), len(live))
                if m[i, j] < min_iou:
                    break
                if ids[i] < 0 and live[j] not in ids:
                    ids[i] = live[j]
        for i in range(len(b)):
            if ids[i] < 0:
                ids[i] = next_id
                next_id += 1
            last[int(ids[i])] = (step, b[i])
        out.append(ids)
    return out


def drop_short_tracks(track_ids: list[np.ndarray], min_length: int) -> set[int]:
    """Track ids seen in at least ``min_length`` frames."""
    if not track_ids:
        return set()
    ids, counts = np.unique(np.concatenate(track_ids), return_counts=True)
    return {int(t) for t, c in zip(ids, counts) if c >= min_length}
