"""Benchmarks: ours against a baseline and a floor, measured in the same process.

`dfdc bench preprocess` compares, per dataset:
- decode floor: every frame decoded once with the same decoder (the faster of
  two passes, so that neither side pays for a cold file cache);
- baseline: what the 1st-place scripts did: MTCNN on every frame of each real
  video at half resolution in batches of 32, then crops from every 10th frame;
- ours: detect on every 10th frame with the scale rule, crops at those frames;
- diffs: our SSIM mask against scikit-image's per mask.

`dfdc bench clips` times the `clips` stage next to the decode floor of the same
videos (a clip needs every frame of its window, so one full decode is the
floor), `dfdc bench clip-models` the training throughput of the clip models,
and `dfdc bench predict` the whole of `dfdc predict` next to its decode floor.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from dfdc.config.clips import ClipsParams
from dfdc.config.detect import DetectParams
from dfdc.datasets.index import build_index
from dfdc.faces.crops import crop_box, cut
from dfdc.faces.detector import FaceDetector
from dfdc.faces.tracks import iou
from dfdc.masks import bench_masks
from dfdc.preprocess.cut import crop_videos
from dfdc.preprocess.detect import detect_videos
from dfdc.store import encode_png
from dfdc.video import read_frames, sample_indices


def _timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def _decode_all(files: list[Path]) -> None:
    for p in files:
        read_frames(p)  # every frame decoded and converted, then dropped: no video is held in memory


def decode_floor(files: list[Path]) -> float:
    """Seconds to decode every frame of ``files`` once: the faster of two passes."""
    return min(_timed(_decode_all, files)[1] for _ in range(2))


def _baseline(index: pd.DataFrame, every: int, margin: float) -> tuple[dict[tuple[str, int], np.ndarray], float]:
    """1st-place style: facenet-pytorch's MTCNN as it ships, on all frames at half size in batches of 32.

    Crops are then cut from every ``every``-th frame. MTCNN keeps its default
    20 px minimum face (40 px at full size) and gets the 1st-place thresholds.
    """
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(margin=0, thresholds=[0.85, 0.95, 0.95], device="cpu")
    boxes: dict[tuple[str, int], np.ndarray] = {}
    t0 = time.perf_counter()
    for row in index[index["label"] == 0].itertuples():
        frames, _ = read_frames(row.path)
        order = sorted(frames)
        for start in range(0, len(order), 32):
            chunk = order[start:start + 32]
            half = [cv2.resize(frames[i], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for i in chunk]
            found, probs = mtcnn.detect(np.stack(half))
            for i, b, p in zip(chunk, found, probs):  # b is None where MTCNN found nothing
                b = np.zeros((0, 4)) if b is None else b[np.asarray(p, np.float32) >= 0.9]
                boxes[(row.video, i)] = b.astype(np.float32) * 2
    for row in index.itertuples():
        source = row.original if row.label == 1 else row.video
        frames, _ = read_frames(row.path, sample_indices(int(row.frames), every=every))
        for i, frame in frames.items():
            for box in boxes.get((source, i), []):
                encode_png(cut(frame, crop_box(box, frame.shape[1], frame.shape[0], margin)))
    return boxes, time.perf_counter() - t0


def bench_preprocess(root: str | Path, every: int = 10, margin: float = 0.3, detect: DetectParams | None = None,
                     workers: int = 2) -> dict:
    """Seconds per video for the decode floor, the baseline and ours on one dataset root.

    Ours detects and links with the ``detect`` section's settings (default: its defaults) on the CPU.
    """
    detect = detect or DetectParams()
    index = build_index(root, progress=False)
    index = index[index["ok"] & index["label"].isin([0, 1])]
    n = len(index)
    floor = decode_floor(list(index["path"]))
    base_boxes, base = _baseline(index, every, margin)
    det = FaceDetector.from_params(detect, device="cpu")
    (faces, _), t_detect = _timed(detect_videos, index, det, every=every, min_track=detect.min_track,
                                  max_gap=detect.max_gap, min_iou=detect.min_iou, workers=workers, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        (crops, _), t_crops = _timed(crop_videos, index, faces, Path(tmp) / "c", margin=margin,
                                     workers=workers, progress=False)
        pairs = _crop_pairs(crops, Path(tmp) / "c")
    ious = []
    for (video, frame), g in faces.groupby(["video", "frame"]):
        theirs = base_boxes.get((video, int(frame)))
        if theirs is not None and len(theirs):
            ious.extend(iou(g[["x1", "y1", "x2", "y2"]].to_numpy(), theirs).max(axis=1).tolist())
    masks = bench_masks(pairs[:20], repeat=2) if pairs else {}
    return {
        "dataset": str(root), "videos": n, "reals": int((index["label"] == 0).sum()),
        "decode_floor_s": floor / n, "baseline_s": base / n,
        "detect_s": t_detect / n, "crops_s": t_crops / n, "ours_s": (t_detect + t_crops) / n,
        "speedup_vs_baseline": base / (t_detect + t_crops), "ratio_to_floor": (t_detect + t_crops) / floor,
        "iou_mean": float(np.mean(ious)) if ious else float("nan"),
        "iou_min": float(np.min(ious)) if ious else float("nan"),
        "diff_ours_ms": masks.get("ours_ms", float("nan")), "diff_skimage_ms": masks.get("skimage_ms", float("nan")),
        "diff_speedup": masks.get("speedup", float("nan")), "diff_max_abs": masks.get("max_abs_diff", float("nan")),
    }


def _crop_pairs(crops: pd.DataFrame, crops_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    from dfdc.data.sampling import aligned_pairs
    from dfdc.store import ShardReader, decode_png

    reader = ShardReader(crops_dir)
    pairs = [(decode_png(reader.get(r.orig_shard, r.orig_key)), decode_png(reader.get(r.shard, r.key)))
             for r in aligned_pairs(crops).itertuples()]
    reader.close()
    return pairs


def bench_predict(root: str | Path, scoring, workers: int = 2) -> dict:
    """`dfdc predict` seconds per video next to the decode floor, with `dfdc predict`'s loaded ``scoring``
    (:class:`dfdc.inference.load.Scoring`: models, resolved settings, device).

    The decode / detect / classify split is the time each video spent in each
    step within its worker thread; with ``workers`` videos in flight the three
    add up to about ``workers`` times the wall time per video.
    """
    from dfdc.inference.video import predict_videos

    files = sorted(Path(root).rglob("*.mp4"))
    if not files:
        raise FileNotFoundError(f"no .mp4 video under {root} to benchmark")
    floor = decode_floor(files)
    s, models = scoring.settings, scoring.models
    det = FaceDetector(device=str(scoring.device), **s.detector)
    results, total = _timed(predict_videos, files, scoring, det, workers=workers, progress=False)
    n = len(files)
    part = {k: sum(r.timings.get(k, 0.0) for r in results) / n for k in ("decode", "detect", "classify", "clips")}
    return {"dataset": str(root), "videos": n, "models": " + ".join(m.name for m in models), "frames": s.frames,
            "detect_every": s.detect_every, "tta": s.tta, "workers": workers,
            "floor_s": floor / n, "total_s": total / n, **{f"{k}_s": v for k, v in part.items()},
            "ratio_to_floor": total / floor, "scored": sum(1 for r in results if not r.reason)}


def format_predict_table(rows: list[dict]) -> str:
    """Markdown table of :func:`bench_predict` results."""
    lines = ["| dataset | runtime | videos (scored) | models x frames | detect every | TTA | decode floor s/video | "
             "predict s/video | decode / detect / classify / clips s/video (per worker) | vs floor |",
             "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {Path(r['dataset']).name} | {r.get('runtime', 'torch')} | {r['videos']} ({r['scored']}) | "
                     f"{r['models']} x {r['frames']} | "
                     f"{r['detect_every']} | {'flip' if r['tta'] else 'none'} | "
                     f"{r['floor_s']:.3f} | {r['total_s']:.3f} | {r['decode_s']:.3f} / {r['detect_s']:.3f} / "
                     f"{r['classify_s']:.3f} / {r['clips_s']:.3f} | {r['ratio_to_floor']:.2f}x |")
    return "\n".join(lines)


def bench_runtimes(models: list, onnx_models: list, n: int = 256, batch_size: int = 64, repeats: int = 3,
                   seed: int = 0) -> list[dict]:
    """Items per second through :func:`dfdc.inference.scorer.score` for each model on torch and as its ONNX graph
    on onnxruntime (CPU), on the same ``n`` random crops (clips for a clip model), and the largest difference
    in P(fake) between the two. The best of ``repeats`` timed passes after one warm-up."""
    from dfdc.inference.scorer import score

    rng = np.random.default_rng(seed)
    rows = []
    for m, o in zip(models, onnx_models):
        s = m.spec
        shape = (s.size, s.size, 3) if s.input == "frame" else (s.clip_len, s.size, s.size, 3)
        count = n if s.input == "frame" else max(8, n // (4 * s.clip_len))
        items = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]
        out, best = {}, {}
        for label, model in (("torch", m), ("onnx", o)):
            score([model], items[:batch_size], batch_size=batch_size)  # warm-up
            times = []
            for _ in range(repeats):
                p, dt = _timed(score, [model], items, batch_size=batch_size)
                times.append(dt)
            out[label], best[label] = p[model.name], min(times)
        rows.append({"model": m.name, "input": s.input, "items": count, "threads": torch.get_num_threads(),
                     "torch_per_s": count / best["torch"], "onnx_per_s": count / best["onnx"],
                     "onnx_vs_torch": best["torch"] / best["onnx"],
                     "max_abs_diff": float(np.max(np.abs(out["torch"] - out["onnx"])))})
    return rows


def format_runtimes_table(rows: list[dict]) -> str:
    """Markdown table of :func:`bench_runtimes`."""
    lines = ["| model | input | items | torch threads | torch items/s | onnxruntime items/s | onnxruntime vs torch | "
             "max abs diff P(fake) |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['items']} | {r['threads']} | {r['torch_per_s']:.1f} | "
                     f"{r['onnx_per_s']:.1f} | {r['onnx_vs_torch']:.2f}x | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`bench_preprocess` results."""
    head = ("| dataset | videos | decode floor s/video | baseline s/video | ours detect+crops s/video "
            "(detect / crops) | vs baseline | vs floor | box IoU mean (min) | diff mask ms: ours / skimage "
            "(speedup, max abs diff) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {Path(r['dataset']).name} | {r['videos']} ({r['reals']} real) | {r['decode_floor_s']:.3f} | "
            f"{r['baseline_s']:.3f} | {r['ours_s']:.3f} ({r['detect_s']:.3f} / {r['crops_s']:.3f}) | "
            f"{r['speedup_vs_baseline']:.1f}x faster | {r['ratio_to_floor']:.2f}x | "
            f"{r['iou_mean']:.3f} ({r['iou_min']:.3f}) | {r['diff_ours_ms']:.2f} / {r['diff_skimage_ms']:.2f} "
            f"({r['diff_speedup']:.1f}x, {r['diff_max_abs']:.0f}) |"
        )
    return "\n".join(lines)


def bench_clips(root: str | Path, clips: ClipsParams | None = None, detect: DetectParams | None = None,
                workers: int = 2) -> dict:
    """Seconds per video of the `clips` stage (``clips`` settings) next to the decode floor of the same videos.

    Faces come from our detector first (not timed); the stage then decodes every
    video, real and fake, once, and cuts and encodes its windows.
    """
    from dfdc.preprocess.cut import clip_videos

    clips = clips or ClipsParams()
    detect = detect or DetectParams()
    index = build_index(root, progress=False)
    index = index[index["ok"] & index["label"].isin([0, 1])]
    n = len(index)
    floor = decode_floor(list(index["path"]))
    det = FaceDetector.from_params(detect, device="cpu")
    faces, _ = detect_videos(index, det, every=detect.every, min_track=detect.min_track, max_gap=detect.max_gap,
                             min_iou=detect.min_iou, workers=workers, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        (table, status), t = _timed(clip_videos, index, faces, Path(tmp) / "c", window=clips.window,
                                    stride=clips.stride, per_track=clips.per_track, size=clips.size,
                                    margin=clips.margin, codec=clips.codec, crf=clips.crf, workers=workers,
                                    progress=False)
        size = sum(f.stat().st_size for f in (Path(tmp) / "c").iterdir())
    return {"dataset": str(root), "videos": n, "clips": len(table), "window": clips.window, "stride": clips.stride,
            "size": clips.size, "codec": clips.codec, "floor_s": floor / n, "clips_s": t / n,
            "ratio_to_floor": t / floor, "kb_per_clip": size / 1024 / max(len(table), 1)}


def format_clips_table(rows: list[dict]) -> str:
    """Markdown table of :func:`bench_clips` results."""
    lines = ["| dataset | videos | clips (window x stride, px, codec) | decode floor s/video | clips s/video | "
             "vs floor | kB per clip |", "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {Path(r['dataset']).name} | {r['videos']} | {r['clips']} ({r['window']} x {r['stride']}, "
                     f"{r['size']}, {r['codec']}) | {r['floor_s']:.3f} | {r['clips_s']:.3f} | "
                     f"{r['ratio_to_floor']:.2f}x | {r['kb_per_clip']:.1f} |")
    return "\n".join(lines)


CLIP_MODELS = ("r3d_mini", "lstm_regnetx_002", "ntech_efficientnet_b0", "s3d", "i3d", "r3d_18", "mc3_18",
               "r2plus1d_18")


def bench_clip_models(names: tuple[str, ...] = CLIP_MODELS, clip_len: int = 5, size: int = 96, batch: int = 8,
                      steps: int = 3, frozen: tuple[str, ...] = ("lstm_",)) -> list[dict]:
    """Training clips per second of each clip model: AdamW steps on random (batch, 3, clip_len, size, size) clips.

    Models whose name starts with a ``frozen`` prefix train with the backbone frozen, as
    the 15th place's LSTM does. The first step (allocation, kernel choice) is not timed.
    """
    import torch.nn.functional as F

    from dfdc.models import create_model

    rows = []
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, input_size=size, clip_len=clip_len).train()
        scale = 0.0 if name.startswith(frozen) else 1.0
        opt = torch.optim.AdamW(model.param_groups(1e-3, 1e-4, scale))
        x = model.spec.prepare(torch.randint(0, 256, (batch, clip_len, size, size, 3), dtype=torch.uint8))
        y = torch.tensor([0.0, 1.0] * (batch // 2))
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            loss = F.binary_cross_entropy_with_logits(model(x).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        step = float(np.median(times[1:]))
        rows.append({"model": name, "clip_len": clip_len, "size": size, "batch": batch,
                     "trained": "head" if scale == 0 else "all",
                     "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "clips_per_s": batch / step})
    return rows


def format_clip_models_table(rows: list[dict]) -> str:
    """Markdown table of :func:`bench_clip_models` results."""
    lines = ["| model | clip (frames x px) | trains | params (M) | training clips/s |", "|" + "---|" * 5]
    for r in rows:
        lines.append(f"| {r['model']} | {r['clip_len']} x {r['size']} | {r['trained']} | {r['params_m']:.1f} | "
                     f"{r['clips_per_s']:.1f} |")
    return "\n".join(lines)


def bench_landmarks(crops_table: str | Path = "data/crops.parquet", faces: str | Path = "data/faces.parquet",
                    index: str | Path = "data/index.parquet", n: int = 400,
                    heights: tuple[int, ...] = (1080,)) -> list[dict]:
    """dlib's 68 points per crop (the `landmarks` stage's work, one thread): on ``n`` stored crops as they are, and
    the same crops resized as if cut from a video of each of ``heights`` (box and pixels scaled by height / the
    video's height). Timed: the fit and its check against the 5 points; not the crop's decode."""
    from dfdc.faces.landmarks import DensePredictor, face_boxes_in_crops, five_point_error
    from dfdc.preprocess.columns import LANDMARK_COLUMNS
    from dfdc.store import ShardReader, decode_png

    crops_table = Path(crops_table)
    crops = pd.read_parquet(crops_table)
    crops = crops.iloc[np.linspace(0, len(crops) - 1, min(n, len(crops))).astype(int)].reset_index(drop=True)
    boxes = face_boxes_in_crops(crops, pd.read_parquet(faces))
    video_h = crops["original"].map(pd.read_parquet(index).set_index("video")["height"]).to_numpy(np.float64)
    reader = ShardReader(crops_table.with_suffix(""))
    images = [decode_png(reader.get(s, k)) for s, k in zip(crops["shard"], crops["key"])]
    reader.close()
    five = crops[LANDMARK_COLUMNS].to_numpy(np.float64).reshape(-1, 5, 2)
    predictor = DensePredictor()
    cv2.setNumThreads(1)
    rows = []
    for target in (None, *heights):
        scale = np.ones(len(crops)) if target is None else target / video_h
        inputs = [(cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC) if s != 1 else im, b * s, f * s)
                  for im, b, f, s in zip(images, boxes, five, scale)]
        times, errors = [], []
        for im, b, f in inputs:
            t0 = time.perf_counter()
            errors.append(five_point_error(predictor(im, b), f))
            times.append(time.perf_counter() - t0)
        sides = np.array([max(im.shape[:2]) for im, _, _ in inputs])
        rows.append({"size": "as stored" if target is None else f"{target}p", "crops": len(inputs),
                     "crop_px_median": float(np.median(sides)), "ms_median": 1e3 * float(np.median(times)),
                     "ms_mean": 1e3 * float(np.mean(times)), "fits_ok": float(np.mean(np.array(errors) <= 0.35))})
    return rows


def format_landmarks_table(rows: list[dict]) -> str:
    """The :func:`bench_landmarks` rows as a markdown table."""
    lines = ["| crops | n | crop side px (median) | ms per crop, median / mean | crops per s, one thread | fits kept |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['crops']} | {r['crop_px_median']:.0f} | {r['ms_median']:.2f} / "
                     f"{r['ms_mean']:.2f} | {1e3 / r['ms_mean']:.0f} | {r['fits_ok']:.1%} |")
    return "\n".join(lines)
