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


def grow_boxes(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Boxes (N, 4) scaled by ``factor`` about their centres."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre, half = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) * factor / 2
    return np.hstack([centre - half, centre + half])


LINK_GROW = 2.0  # boxes are compared grown 2x: a face that moved by half its size between detections still links


def link_tracks(
    frames: list[int],
    boxes: list[np.ndarray],
    min_iou: float = 0.3,
    max_gap: int = 2,
) -> list[np.ndarray]:
    """Assign a track id to every box; ``boxes[i]`` holds the (K, 4) boxes of ``frames[i]``.

    Greedy IoU matching against each live track's last box, best pairs first;
    a track survives ``max_gap`` sampled frames without a match. The IoU is
    taken between the boxes grown 2x about their centres, so that a face
    that moved by about half its width between two detected frames (a fast
    pan, with the detector run only every 10th frame) stays one track, while
    faces side by side still do not touch. Returns one int array of track
    ids per frame, aligned with ``boxes``.
    """
    last: dict[int, tuple[int, np.ndarray]] = {}  # track -> (step last seen, box)
    out = []
    next_id = 0
    for step, b in enumerate(boxes):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        ids = np.full(len(b), -1, int)
        live = [t for t, (s, _) in last.items() if step - s <= max_gap + 1]
        if live and len(b):
            m = iou(grow_boxes(b, LINK_GROW), grow_boxes(np.stack([last[t][1] for t in live]), LINK_GROW))
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


def detect_subset(frames: list[int], every: int) -> list[int]:
    """The frames of ``frames`` (sorted frame numbers) to run the face detector on.

    The first and the last, and between them about one every ``every`` frame
    numbers: ``ceil((last - first) / every) + 1`` evenly spaced targets, each
    replaced by the nearest frame of ``frames``. The detector thus sees a number
    of frames that grows with the video's length, not with how densely it was
    sampled, and never more than ``frames``; ``every=1`` keeps them all.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    at = np.asarray(frames, dtype=np.int64).reshape(-1)
    if len(at) <= 2:
        return at.tolist()
    count = -(-int(at[-1] - at[0]) // every) + 1
    if count >= len(at):
        return at.tolist()
    targets = np.linspace(at[0], at[-1], count)
    right = np.clip(np.searchsorted(at, targets), 1, len(at) - 1)
    nearest = np.where(targets - at[right - 1] <= at[right] - targets, right - 1, right)
    return sorted(set(at[nearest].tolist()))


def interpolate_tracks(
    frames: list[int],
    detected: list[int],
    rows: list[np.ndarray],
    track_ids: list[np.ndarray],
    max_gap: int = 2,
    min_hits: int = 2,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Face rows at every frame of ``frames`` from detections at ``detected``, linked into tracks.

    ``frames`` are sorted frame numbers and ``detected`` a subset of them;
    ``rows[s]`` holds the (K, D) faces found at ``detected[s]`` (x1, y1, x2, y2
    and any columns to carry along: score, landmarks) and ``track_ids[s]`` their
    track ids, as :func:`link_tracks` gives them. A frame the detector ran on
    keeps exactly its detections. A frame it skipped gets, per track:

    - between two detections of the track with at most ``max_gap`` detected
      frames missing between them (what :func:`link_tracks` bridges), the row
      interpolated linearly in the frame number;
    - beyond the track's first or last detection, that detection's row, held up
      to the neighbouring detected frame;
    - nothing across a longer gap: the track is split there.

    A piece of track seen fewer than ``min_hits`` times is not carried at all: a
    face the detector found once (often a false one) stays one crop, as it would
    be with detection on every frame, instead of gaining the frames around it.

    Returns per frame: (rows (K, D) float64, track ids (K,) int, detected (K,) bool),
    ordered by track id.
    """
    at = np.asarray(frames, dtype=np.int64).reshape(-1)  # (N,)
    det = np.asarray(detected, dtype=np.int64).reshape(-1)  # (S,)
    pos = np.searchsorted(at, det)
    if len(det) and (pos.max() >= len(at) or np.any(at[np.minimum(pos, len(at) - 1)] != det)):
        raise ValueError("detected frames must be a subset of frames")
    if not len(rows) == len(track_ids) == len(det):
        raise ValueError(f"need rows and track ids for each of the {len(det)} detected frames")
    width = next((np.asarray(r).size // len(t) for r, t in zip(rows, track_ids) if len(t)), 4)
    skipped = np.ones(len(at), bool)
    skipped[pos] = False
    hits: dict[int, list[tuple[int, np.ndarray]]] = {}  # track -> [(detected step, row)]
    for step, (r, ids) in enumerate(zip(rows, track_ids)):
        for row, t in zip(np.asarray(r, np.float64).reshape(len(ids), width), ids):
            hits.setdefault(int(t), []).append((step, row))
    out: list[list[tuple[int, np.ndarray, bool]]] = [[] for _ in at]
    for t, seen in sorted(hits.items()):
        segments = [[seen[0]]]
        for prev, cur in zip(seen, seen[1:]):
            if cur[0] - prev[0] - 1 > max_gap:
                segments.append([])
            segments[-1].append(cur)
        for seg in segments:
            first, last = seg[0][0], seg[-1][0]
            for s, row in seg:
                out[pos[s]].append((t, row, True))
            if len(seg) < min_hits:
                continue
            xp = at[[pos[s] for s, _ in seg]]  # (H,) frames of the segment's detections
            fp = np.stack([row for _, row in seg])  # (H, D)
            lo = pos[first - 1] + 1 if first > 0 else 0
            hi = pos[last + 1] if last + 1 < len(pos) else len(at)
            for p in np.flatnonzero(skipped[lo:hi]) + lo:
                row = np.array([np.interp(at[p], xp, fp[:, c]) for c in range(fp.shape[1])])
                out[p].append((t, row, False))
    result = []
    for items in out:
        items.sort(key=lambda item: item[0])
        if items:
            result.append((np.stack([r for _, r, _ in items]), np.array([t for t, _, _ in items], int),
                           np.array([d for _, _, d in items], bool)))
        else:
            result.append((np.zeros((0, width)), np.zeros(0, int), np.zeros(0, bool)))
    return result
