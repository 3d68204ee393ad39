"""Score raw videos and still images with a trained ensemble: decode -> detect -> crop -> classify -> aggregate.

Models are loaded once; ``workers`` threads each take a whole input (decode,
detect, classify), torch's intra-op threads shared out between them. Faces are
detected on a subset of the sampled frames and carried along their tracks to
the others; each model gets crops at its own margin, scored by the one scorer.
Every input gets a result: one that cannot be scored gets 0.5 and the reason.
"""
from __future__ import annotations

import csv
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dfdc.faces.crops import crop_box, cut
from dfdc.faces.tracks import detect_subset, interpolate_tracks, link_tracks
from dfdc.inference import scorer
from dfdc.inference.aggregate import NO_FACE, aggregate_tracks, for_input
from dfdc.inference.combine import combine
from dfdc.inference.load import Scoring
from dfdc.inference.scorer import ScoringModel
from dfdc.parallel import prefetch_map
from dfdc.store import atomic_path
from dfdc.video import VideoError, image_format, probe, read_frames, read_image, sample_indices


@dataclass
class Result:
    """What scoring one video or image gave: the ensemble's P(fake), its label at ``threshold``, and the detail.

    ``faces`` holds one entry per face and sampled frame (frame, track, crop box in frame pixels, the
    detector's score, the ensemble's and each frame model's P(fake)); ``windows`` the clip models' windows.
    An input that could not be scored has prob 0.5 and ``reason`` says why. :meth:`to_dict` / :meth:`to_json`
    give it as JSON (with ``images=True``: the face thumbnails and Grad-CAM maps as PNG data URLs).
    """

    filename: str
    prob: float
    reason: str = ""  # why it got 0.5
    kind: str = "video"  # video | image | other
    note: str = ""  # a model of the ensemble that could not score it (a video too short for a clip)
    threshold: float = 0.5  # prob >= threshold: FAKE
    frames: list[int] = field(default_factory=list)
    faces: list[dict] = field(default_factory=list)  # frame, box, per-model and ensemble score
    windows: list[dict] = field(default_factory=list)  # clip models: model, track, first frame, score per window
    model_probs: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] = (0, 0)
    thumbs: list[tuple[np.ndarray, float]] = field(default_factory=list, repr=False)  # for reports
    cams: list[dict] = field(default_factory=list, repr=False)  # Grad-CAM of the highest-scoring faces, for reports

    @property
    def label(self) -> str:
        """``FAKE`` or ``REAL`` at :attr:`threshold`; ``UNSCORED`` when :attr:`reason` says why not."""
        if self.reason:
            return "UNSCORED"
        return "FAKE" if self.prob >= self.threshold else "REAL"

    @property
    def frame_scores(self) -> list[dict]:
        """The score over time: per sampled frame with a face, the highest face score (frame models) in it."""
        best: dict[int, float] = {}
        for f in self.faces:
            best[f["frame"]] = max(best.get(f["frame"], 0.0), f["prob"])
        return [{"frame": k, "prob": v} for k, v in sorted(best.items())]

    def to_dict(self, images: bool = False) -> dict:
        """Plain JSON types; ``images`` adds ``thumbnails`` and ``gradcam`` maps as ``data:image/png`` URLs."""
        out = {"filename": self.filename, "prob": self.prob, "label": self.label, "threshold": self.threshold,
               "reason": self.reason, "note": self.note, "kind": self.kind, "model_probs": self.model_probs,
               "frames": self.frames, "frame_scores": self.frame_scores, "faces": self.faces,
               "windows": self.windows, "size": list(self.size), "timings_s": self.timings,
               "gradcam": [{k: c[k] for k in ("frame", "track", "prob", "model", "error") if k in c}
                           for c in self.cams]}
        if images:
            out["thumbnails"] = [{"prob": p, "image": _data_url(t)} for t, p in self.thumbs]
            for entry, c in zip(out["gradcam"], self.cams):
                if "crop" in c:
                    from dfdc.inference.gradcam import overlay

                    entry["crop"] = _data_url(c["crop"])
                    entry["image"] = _data_url(overlay(c["crop"], c["heat"].astype(np.float32) / 255))
        return out

    def to_json(self, images: bool = False, **kw) -> str:
        """:meth:`to_dict` as a JSON string (``kw``: :func:`json.dumps` options)."""
        return json.dumps(self.to_dict(images), ensure_ascii=False, **kw)


def _data_url(image: np.ndarray) -> str:
    """An RGB (or grey) uint8 image as a ``data:image/png;base64,...`` URL."""
    import base64

    import cv2

    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def _name(source) -> str:
    return "array" if isinstance(source, np.ndarray) else Path(source).name


def _decode_array(a: np.ndarray, n_frames: int) -> tuple[dict[int, np.ndarray], str, str]:
    """An RGB uint8 image (H, W, 3) as frame 0, or ``n_frames`` evenly sampled frames of a video (T, H, W, 3)."""
    if a.dtype != np.uint8 or a.ndim not in (3, 4) or a.shape[-1] != 3 or 0 in a.shape:
        return {}, (f"an array must be RGB uint8, (H, W, 3) for an image or (T, H, W, 3) for a video; got "
                    f"{a.dtype} {a.shape}"), "other"
    if a.ndim == 3:
        return {0: np.ascontiguousarray(a)}, "", "image"
    return {i: np.ascontiguousarray(a[i]) for i in sample_indices(len(a), count=n_frames)}, "", "video"


def _decode(source, n_frames: int) -> tuple[dict[int, np.ndarray], str, str]:
    """(frames by index, error, kind): ``n_frames`` evenly sampled video frames, or a still image as frame 0."""
    if isinstance(source, np.ndarray):
        return _decode_array(source, n_frames)
    path = Path(source)
    if path.is_symlink() and not path.exists():
        return {}, f"broken link: points to {os.readlink(path)!r}, which does not exist", "other"
    if not path.exists():
        return {}, "file not found", "other"
    try:
        if path.stat().st_size == 0:
            return {}, "zero-byte file", "other"
        if image_format(path) is not None:
            return {0: read_image(path)}, "", "image"
        info = probe(path, verify=True)  # reads every packet, decodes none: a cut file is said to be cut
        frames, _ = read_frames(path, sample_indices(info.frames, count=n_frames))
        return frames, "" if frames else "truncated or corrupt video: none of its frames could be decoded", "video"
    except VideoError as e:
        return {}, str(e).removeprefix(f"{path}: "), "other"
    except Exception as e:  # noqa: BLE001 - any file must yield a row, never a crash
        return {}, f"{type(e).__name__}: {e}", "other"


def _no_face_reason(w: int, h: int, min_face_size: int) -> str:
    if max(w, h) < min_face_size:
        return (f"no face: the frames ({w}x{h} px) are smaller than the smallest face the detector looks for "
                f"({min_face_size} px)")
    return "no face"


def _score_video(source, scoring: Scoring, detector, thumbs: bool, name: str | None = None) -> Result:
    """Decode, detect, crop per model, classify and aggregate one input (unbounded probability)."""
    models, s, device = scoring.models, scoring.settings, scoring.device
    t0 = time.perf_counter()
    decoded, error, kind = _decode(source, s.frames)
    res = Result(name or _name(source), NO_FACE, kind=kind, timings={"decode": time.perf_counter() - t0})
    if error:
        res.reason = error
        return res
    idx = sorted(decoded)
    h, w = decoded[idx[0]].shape[:2]
    res.frames, res.size = idx, (w, h)
    t0 = time.perf_counter()
    looked = detect_subset(idx, s.detect_every)
    found = detector.detect([decoded[i] for i in looked])
    if len(looked) < len(idx) and not any(len(f) for f in found):  # no face yet: look at the other frames too
        rest = sorted(set(idx) - set(looked))
        by_frame = dict(zip(looked, found)) | dict(zip(rest, detector.detect([decoded[i] for i in rest])))
        looked, found = idx, [by_frame[i] for i in idx]
    track_ids = link_tracks(looked, [f.boxes for f in found], **s.link)
    rows = [np.hstack([f.boxes, f.scores[:, None]]) for f in found]  # (K, 5): box, detector score
    filled = interpolate_tracks(idx, looked, rows, track_ids, max_gap=s.link.get("max_gap", 2))
    res.timings["detect"] = time.perf_counter() - t0
    meta = []
    for i, (faces, tids, hit) in zip(idx, filled):
        for row, track, detected in zip(faces, tids, hit):
            meta.append({"frame": i, "track": int(track), "face": row[:4], "det_score": float(row[4]),
                         "detected": bool(detected)})
    if not meta:
        res.reason = _no_face_reason(w, h, detector.min_face_size)
        return res
    frame_models = [m for m in models if m.spec.input == "frame"]
    clip_models = [m for m in models if m.spec.input == "clip"]
    t0 = time.perf_counter()
    margins = s.margins
    per_model, crops_at = classify_faces(decoded, meta, frame_models, margins, tta=s.tta, batch_size=s.batch_size,
                                         device=device)
    tracks = np.array([f["track"] for f in meta])
    res.model_probs = {m.name: aggregate_tracks(per_model[m.name], tracks, s.strategy, rules=m.rules or ())
                       for m in frame_models}
    res.timings["classify"] = time.perf_counter() - t0
    unscored = []
    if clip_models:
        t0 = time.perf_counter()
        by_clip, unscored = classify_clips(source, meta, clip_models, margins, windows=s.clip_windows, tta=s.tta,
                                           batch_size=s.batch_size, device=device)
        res.timings["clips"] = time.perf_counter() - t0
        for m in clip_models:
            if m.name in by_clip:
                probs, window_tracks, starts = by_clip[m.name]
                kind, min_len = for_input("clip", s.strategy)
                res.model_probs[m.name] = aggregate_tracks(probs, window_tracks, kind, min_len)
                res.windows += [{"model": m.name, "track": int(t), "frame": int(f), "prob": float(p)}
                                for t, f, p in zip(window_tracks, starts, probs)]
    scored = [m for m in models if m.name in res.model_probs]
    if not scored:
        res.reason = "; ".join(unscored)
        return res
    if unscored:
        res.note = "scored without " + "; ".join(unscored)
    res.prob = float(combine([[res.model_probs.get(m.name, np.nan) for m in models]], [m.weight for m in models],
                             s.temperature)[0])
    if np.isnan(res.prob):
        res.prob, res.reason = NO_FACE, "scored only by models of weight 0 in the ensemble"
    if frame_models:
        fw = np.array([m.weight for m in frame_models], np.float64)
        fw /= fw.sum()
        frame_probs = sum(wt * per_model[m.name] for wt, m in zip(fw, frame_models))
        first = margins[frame_models[0].name]
    else:  # only clip models: each face shows its track's score
        frame_probs = np.array([max((res.model_probs[m.name] for m in scored), default=NO_FACE)] * len(meta))
        first = margins[models[0].name]
    for k, f in enumerate(meta):
        f["box"] = [int(v) for v in crop_box(f.pop("face"), w, h, first)]
        f["prob"] = float(frame_probs[k])
        f["model_probs"] = {m.name: float(per_model[m.name][k]) for m in frame_models}
    res.faces = meta
    if thumbs and frame_models:
        res.thumbs = [(_thumb(c), float(p)) for c, p in zip(crops_at[first], frame_probs)]
        res.cams = _cams(frame_models, meta, crops_at, margins, frame_probs, device)
    return res


def classify_clips(source, faces: list[dict], models: list[ScoringModel], margins: dict[str, float], *,
                   windows: int, tta: bool, batch_size: int,
                   device: torch.device | str) -> tuple[dict[str, tuple[np.ndarray, ...]], list[str]]:
    """P(fake) per clip window for each clip model: ({model: (probs, tracks, first frames)}, reasons).

    Along each face track (``faces``: frame, track, face box) ``windows`` windows of the
    model's ``clip_len`` frames, ``frame_stride`` apart, are placed evenly, each cut at one
    square box as the `cut` stage cuts it (:mod:`dfdc.preprocess.clips`), from a second, selective
    decode of the video (``source``: its path, or its frames (T, H, W, 3) in memory). A model whose windows fit no track gets a reason instead.
    """
    from dfdc.inference.settings import clip_size
    from dfdc.preprocess.clips import cut_clips, plan_windows

    faces_df = pd.DataFrame([{"frame": f["frame"], "track": f["track"], "x1": f["face"][0], "y1": f["face"][1],
                              "x2": f["face"][2], "y2": f["face"][3]} for f in faces])
    out: dict[str, tuple[np.ndarray, ...]] = {}
    reasons = []
    groups: dict[tuple, list[ScoringModel]] = {}
    for m in models:
        groups.setdefault((m.spec.clip_len, m.spec.frame_stride, clip_size(m), margins[m.name]), []).append(m)
    for (length, stride, size, margin), group in groups.items():
        plan, _ = plan_windows(faces_df, length, stride, windows, margin)
        cut = cut_clips(source, plan, length, stride, size)[0] if plan else {}
        wins = [win for win in plan if win in cut]
        if not wins:
            span = (length - 1) * stride + 1
            reasons.append(f"{', '.join(m.name for m in group)}: no face track spans one clip of {length} frames "
                           f"({span} video frames)")
            continue
        probs = scorer.score(group, [cut[win] for win in wins], tta=tta, batch_size=batch_size, device=device)
        tracks, starts = np.array([win.track for win in wins]), np.array([win.start for win in wins])
        out.update({name: (p, tracks, starts) for name, p in probs.items()})
    return out, reasons


CAM_FACES = 4


def _cams(models: list[ScoringModel], faces: list[dict], crops_at: dict[float, list[np.ndarray]],
          margins: dict[str, float], probs: np.ndarray, device: torch.device) -> list[dict]:
    """Grad-CAM of the ensemble's highest-weighted model on the CAM_FACES highest-scoring faces."""
    from dfdc.inference.gradcam import grad_cam

    model = max(models, key=lambda m: m.weight)
    top = [int(k) for k in np.argsort(-probs, kind="stable")[:CAM_FACES]]
    crops = [crops_at[margins[model.name]][k] for k in top]
    try:
        heats = grad_cam(model, crops, device)
    except ValueError as e:  # a model without a spatial feature map: the report says so, the scores stand
        return [{"frame": None, "track": None, "prob": None, "model": model.name, "error": str(e)}]
    # kept small until the report is written: a thumbnail and an 8-bit map per face
    return [{"frame": faces[k]["frame"], "track": faces[k]["track"], "prob": float(probs[k]), "model": model.name,
             "crop": _thumb(c, 160), "heat": _thumb((h * 255).astype(np.uint8), 160)}
            for k, c, h in zip(top, crops, heats)]


def classify_faces(frames: dict[int, np.ndarray], faces: list[dict], models: list[ScoringModel],
                   margins: dict[str, float], *, tta: bool, batch_size: int,
                   device: torch.device | str) -> tuple[dict[str, np.ndarray], dict[float, list[np.ndarray]]]:
    """P(fake) per face and model, each model on crops cut at its own margin around ``face["face"]`` (x1, y1, x2, y2).

    Returns ({model: (N,) probabilities}, {margin: the N crops}).
    """
    per_model: dict[str, np.ndarray] = {}
    crops_at: dict[float, list[np.ndarray]] = {}
    for margin in sorted(set(margins[m.name] for m in models)):  # each model eats crops at its training margin
        crops_at[margin] = [_crop(frames[f["frame"]], f["face"], margin) for f in faces]
        group = [m for m in models if margins[m.name] == margin]
        per_model.update(scorer.score(group, crops_at[margin], tta=tta, batch_size=batch_size, device=device))
    return per_model, crops_at


def _crop(frame: np.ndarray, face: np.ndarray, margin: float) -> np.ndarray:
    """The crop of ``frame`` around face box ``face`` with ``margin``, as the crops stage cuts it."""
    return cut(frame, crop_box(face, frame.shape[1], frame.shape[0], margin))


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads per torch call, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def score_stream(sources: Iterable, scoring: Scoring, detector=None, *, workers: int = 2, thumbs: bool = False,
                 progress: bool = True, threshold: float = 0.5, names: Iterable[str] | None = None) -> Iterator[Result]:
    """Score each source (a file path, or RGB uint8 frames: (H, W, 3) an image, (T, H, W, 3) a video) with
    ``scoring`` (its models, settings and device), yielding each :class:`Result` in the order of ``sources`` as
    soon as it is ready; unscorable inputs get 0.5 with a reason, and a label at ``threshold``.

    Of the ``frames`` frames sampled evenly, the detector (``detector``, else one built from the
    settings) sees the first, the last and about one every ``detect_every`` video frames between
    (:func:`dfdc.faces.tracks.detect_subset`; 1: all of them), and the rest too when those hold no
    face; the faces are linked into tracks (``link``: min_iou, max_gap) and carried to the other
    sampled frames along each track (:func:`dfdc.faces.tracks.interpolate_tracks`). A still image is
    one frame. Each model gets crops at its margin and the models' scores make the ensemble's by
    :func:`dfdc.inference.combine.combine` ("thresholds" uses each model's fitted ``rules``), bounded
    to the settings' ``bounds``. ``workers`` inputs are scored at once, each in its own thread (0: one
    after the other in this thread), with torch's intra-op threads divided between them. ``thumbs``
    keeps small face thumbnails with their scores and the Grad-CAM maps of the highest-scoring faces
    (:func:`write_report`, :meth:`Result.to_dict` with images).

    Clip models score ``clip_windows`` windows of consecutive frames per face track
    (:func:`classify_clips`), each track the mean of its windows; a video too short for
    one window is scored by the frame models alone, or gets 0.5 and the reason when the
    ensemble has only clip models.
    """
    s = scoring.settings
    unfitted = [m.name for m in scoring.models
                if s.strategy == "thresholds" and m.rules is None and m.spec.input == "frame"]
    if unfitted:
        raise ValueError(f"strategy 'thresholds' needs rules fitted on the holdout, and {', '.join(unfitted)} has "
                         "none: they come only from an ensemble file that `evaluate` wrote with predict.strategy: "
                         "thresholds (drop --models, or pass --ensemble FILE), or choose another --strategy")
    if detector is None:
        from dfdc.faces.detector import FaceDetector

        detector = FaceDetector(device=str(scoring.device), **s.detector)
    sources = list(sources)
    names = list(names) if names is not None else [None] * len(sources)
    if len(names) != len(sources):
        raise ValueError(f"{len(names)} names for {len(sources)} inputs")

    def score_one(job: tuple) -> Result:
        res = _score_video(job[0], scoring, detector, thumbs, job[1])
        res.prob, res.threshold = float(np.clip(res.prob, *s.bounds)), float(threshold)
        return res

    with tqdm(total=len(sources), desc="predict", unit="file", disable=not progress) as bar, \
            _torch_threads(max(1, torch.get_num_threads() // max(1, workers))):
        for res in prefetch_map(score_one, zip(sources, names), workers):
            bar.update(1)
            yield res


def predict_videos(paths: Iterable, scoring: Scoring, detector=None, **kw) -> list[Result]:
    """Every :class:`Result` of :func:`score_stream` (same arguments) as a list."""
    return list(score_stream(paths, scoring, detector, **kw))


@dataclass
class Inputs:
    """What a folder offers: the files to score, and what is not scored (subfolders, hidden entries)."""

    files: list[Path]
    subfolders: list[str]
    hidden: list[str]

    def skipped(self) -> str:
        """One line on what was not scored, or ''."""
        parts = []
        if self.subfolders:
            shown = ", ".join(f"{d}/" for d in self.subfolders[:5]) + (" ..." if len(self.subfolders) > 5 else "")
            parts.append(f"{len(self.subfolders)} subfolder(s) not scored ({shown}): pass a subfolder itself "
                         "to score its files")
        if self.hidden:
            parts.append(f"{len(self.hidden)} hidden entr{'y' if len(self.hidden) == 1 else 'ies'} not scored")
        return "; ".join(parts)


def list_inputs(folder: str | Path) -> Inputs:
    """Every non-hidden entry directly in ``folder`` that is not a folder (files and links, broken ones too)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"videos folder not found: {folder}")
    files, subfolders, hidden = [], [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            hidden.append(p.name)
        elif p.is_dir():
            subfolders.append(p.name)
        else:
            files.append(p)
    if not files:
        extra = f" ({Inputs([], subfolders, hidden).skipped()})" if subfolders or hidden else ""
        raise ValueError(f"no files to score in {folder}{extra}")
    return Inputs(files, subfolders, hidden)


def write_submission(results: list[Result], out: str | Path) -> None:
    """DFDC submission CSV: ``filename,label`` with label = P(fake), written by the csv module (UTF-8)."""
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            for r in results:
                w.writerow([r.filename, f"{r.prob:.6f}"])


def _thumb(crop: np.ndarray, side: int = 96) -> np.ndarray:
    import cv2

    scale = side / max(crop.shape[:2])
    return cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA)


def write_report(res: Result, out_dir: str | Path) -> tuple[Path, Path]:
    """Per-input JSON and a PNG a person can read (score over time, face thumbnails, verdict), and
    NAME.gradcam.png: the highest-scoring faces under their Grad-CAM heatmaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(res.filename).name
    js = out_dir / f"{stem}.json"
    with atomic_path(js) as tmp:
        tmp.write_text(json.dumps({
            **res.to_dict(), "verdict": verdict(res)}, indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8")
    thumbs = res.thumbs
    n = min(len(thumbs), 8)
    fig = plt.figure(figsize=(10, 5 if n else 3.5))
    grid = fig.add_gridspec(2 if n else 1, max(n, 1))
    ax = fig.add_subplot(grid[0, :])
    if res.faces:
        fr = [f["frame"] for f in res.faces]
        ax.scatter(fr, [f["prob"] for f in res.faces], s=18, c=[f["prob"] for f in res.faces], cmap="coolwarm",
                   vmin=0, vmax=1)
    ax.axhline(res.prob, color="k", lw=1, ls="--", label=f"video score {res.prob:.3f}")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("frame")
    ax.set_ylabel("P(fake)")
    ax.legend(loc="upper right", fontsize=8)
    title = f"{res.filename}: {verdict(res)}" + (f" ({res.reason})" if res.reason else "")
    ax.set_title(title if len(title) < 110 else title[:107] + "...", fontsize=10)
    for k in range(n):
        image, p = thumbs[int(k * len(thumbs) / n)]
        tax = fig.add_subplot(grid[1, k])
        tax.imshow(image)
        tax.set_title(f"{p:.2f}", fontsize=9, color="red" if p >= 0.5 else "green")
        tax.axis("off")
    fig.tight_layout()
    png = out_dir / f"{stem}.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    if res.cams and "error" not in res.cams[0]:
        _write_cams(res, out_dir / f"{stem}.gradcam.png")
    return js, png


def _write_cams(res: Result, path: Path) -> None:
    """Each highest-scoring face: the crop, and the crop under its Grad-CAM heatmap."""
    import matplotlib.pyplot as plt

    from dfdc.inference.gradcam import overlay

    n = len(res.cams)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.8), squeeze=False)
    for k, c in enumerate(res.cams):
        axes[0, k].imshow(c["crop"])
        axes[0, k].set_title(f"frame {c['frame']}: {c['prob']:.2f}", fontsize=9)
        axes[1, k].imshow(overlay(c["crop"], c["heat"].astype(np.float32) / 255))
        for ax in axes[:, k]:
            ax.axis("off")
    fig.suptitle(f"{res.filename}: Grad-CAM of {res.cams[0]['model']} (red: drove the fake score)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def verdict(res: Result) -> str:
    """Readable verdict for a result."""
    return "UNSCORED (0.5)" if res.reason else res.label
