"""The frames of a video as an index row describes it (a degraded holdout video included), decoded once for
every consumer that wants some of them."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from dfdc.preprocess.degrade import degrade_frame, parse_degradation
from dfdc.video import VideoError, decode_frames


def decode_video_frames(row: Any, indices: Iterable[int] | None = None,
                        stats: dict[str, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`dfdc.video.decode_frames` of an index row (``path``, and for a degraded video ``degradation``,
    ``width`` and ``height``): the wanted frames of the video the row describes, the degraded ones made from
    their source frames as they go by."""
    text = getattr(row, "degradation", None)
    if not isinstance(text, str) or not text or text == "none":
        yield from decode_frames(row.path, indices, stats)
        return
    d = parse_degradation(text)
    size = (int(row.width), int(row.height))
    step = 2 if d.kind == "half_fps" else 1
    wanted = None if indices is None else sorted({int(i) * step for i in indices})
    inner: dict[str, int] = {}
    for i, frame in decode_frames(row.path, wanted, inner):
        if i % step == 0:
            yield i // step, degrade_frame(frame, d, size)
    if stats is not None:
        stats.update(frames=(inner.get("frames", 0) + step - 1) // step, decoded=inner.get("decoded", 0))


def read_video_frames(row: Any, indices: Sequence[int] | None = None) -> tuple[dict[int, np.ndarray], int]:
    """:func:`decode_video_frames` collected: ({index: RGB frame}, frames the video holds)."""
    stats: dict[str, int] = {}
    frames = dict(decode_video_frames(row, indices, stats))
    return frames, stats.get("frames", 0)


class FrameConsumer(Protocol):
    """Something cut from a video's frames as they are decoded: it says which it ``need``s and ``take``s them."""

    need: set[int] | dict[int, Any]

    def take(self, index: int, frame: np.ndarray) -> None: ...


def feed_frames(row: Any, consumers: Sequence[FrameConsumer]) -> str:
    """Decode the frames ``consumers`` need from the video of index row ``row`` once, handing each frame to
    every consumer that needs it; returns why decoding failed ("" when it did not)."""
    consumers = [c for c in consumers if c.need]
    wanted = set().union(*(set(c.need) for c in consumers)) if consumers else set()
    if not wanted:
        return ""
    try:
        for i, frame in decode_video_frames(row, wanted):
            for c in consumers:
                if i in c.need:
                    c.take(i, frame)
    except VideoError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - one bad video never stops a stage
        return f"{type(e).__name__}: {e}"
    return ""
