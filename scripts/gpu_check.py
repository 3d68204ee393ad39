"""The CUDA path end to end on a slice of the sample, for a GPU machine (never CI).

    python scripts/gpu_check.py --sample data/sample --out gpu.json

Measures, on the first GPU and next to the CPU where that is cheap:
1. decoding the sampled frames of each real video: dfdc.video (PyAV on the CPU, one thread) against torchcodec on CUDA when it is installed;
2. MTCNN detection (`detect_rows`) on CUDA against the CPU: seconds per video, frames per second;
3. AMP training of three 2D models (resnet18, regnetx_002, efficientnet_b0 at 224 px, batch 64, random init)
   for one epoch each on the slice's crops: images/s;
4. `dfdc predict` with those three models as an equal-weight ensemble on the slice (CUDA): seconds per video.
It needs only the repo and the sample (`data/sample`, 23 MiB): no weights travel.
Everything lands in one JSON file, from which docs/results.md's GPU table is to be made.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def decode_check(index, device: str) -> dict:
    from dfdc.video import read_frames, sample_indices

    reals = index[index["label"] == 0]
    _, cpu = _timed(lambda: [read_frames(r.path, sample_indices(int(r.frames), every=10)) for r in reals.itertuples()])
    out = {"videos": len(reals), "cpu_s": cpu}
    if not device.startswith("cuda"):
        return out
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as e:
        out["torchcodec"] = f"not installed ({e})"
        return out

    def gpu():
        for r in reals.itertuples():
            d = VideoDecoder(r.path, device=device)
            d.get_frames_at(indices=sample_indices(int(r.frames), every=10))
    gpu()  # warm-up: CUDA context and NVDEC
    _, t = _timed(gpu)
    out["torchcodec_cuda_s"] = t
    return out


def detect_check(index, device: str) -> dict:
    from dfdc.config.detect import DetectParams
    from dfdc.faces.detector import FaceDetector
    from dfdc.preprocess.detect import detect_rows

    p = DetectParams(device=device)
    det = FaceDetector.from_params(p)
    reals = index[index["label"] == 0].sort_values("video")
    detect_rows(reals.head(1), det, progress=False)  # warm-up
    (faces, status), t = _timed(detect_rows, reals, det, every=p.every, progress=False)
    frames = int(status["frames_sampled"].sum())
    return {"device": device, "videos": len(reals), "s_per_video": t / len(reals), "frames_per_s": frames / t,
            "faces": len(faces)}, faces


ARCHS = ("resnet18", "regnetx_002", "efficientnet_b0")  # the ensemble `dfdc predict` scores with


def train_check(index, faces, work: Path, device: str, size: int) -> dict:
    """One epoch (AMP on CUDA) of each of ARCHS at ``size`` px on the slice's crops (random init): images/s."""
    from dfdc.config.train import AugmentParams, ModelParams
    from dfdc.folds import assign_folds
    from dfdc.preprocess.cut import crop_videos
    from dfdc.train.loop import TrainJob, train_model

    crops, _ = crop_videos(index, faces, work / "crops", workers=4, progress=False)
    folds = assign_folds(index, k=4, by="original", seed=0)  # a slice of one or two parts still has a holdout
    out = {}
    for arch in ARCHS:
        p = ModelParams(arch=arch, input_size=size, epochs=1, batch_size=64, workers=4,
                        augment=AugmentParams(jpeg=False, noise=False, blur=False, color=False, gray=False))
        job = TrainJob(arch, p, crops, folds, work / "crops", work / "models" / arch, device=device)
        result, t = _timed(train_model, job, progress=False)
        out[arch] = {"train_crops": result["train_items"], "epoch_s": t, "images_per_s": result["train_items"] / t,
                     "amp": device.startswith("cuda"), "val_log_loss": result["best"]["val_log_loss"]}
    return out


def predict_check(slice_dir: Path, work: Path, device: str) -> dict:
    n = sum(1 for _ in slice_dir.rglob("*.mp4"))
    cmd = [sys.executable, "-m", "dfdc.cli", "predict", str(slice_dir), "-o", str(work / "submission.csv"),
           "--models", *[str(work / "models" / a / "best.pt") for a in ARCHS], "--device", device, "--workers", "4"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)  # warm-up: the first run pays for CUDA's start
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    t = time.perf_counter() - t0
    return {"videos": n, "s_per_video": t / n, "ok": proc.returncode == 0, "tail": proc.stdout[-500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", default="data/sample")
    ap.add_argument("--parts", type=int, default=2, help="parts of the sample in the slice")
    ap.add_argument("--out", default=os.environ.get("OUT", ".") + "/gpu.json")
    ap.add_argument("--device", default="cuda", help="cuda (the measurement), or cpu for a quick run of the script")
    ap.add_argument("--size", type=int, default=224, help="training input size in px")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: this script measures the GPU path (--device cpu runs it on the CPU)", file=sys.stderr)
        return 2
    from dfdc.datasets.index import build_index

    work = Path(tempfile.mkdtemp(prefix="dfdc-gpu-"))
    slice_dir = work / "slice"
    for part in sorted(Path(args.sample).glob("dfdc_train_part_*"))[:args.parts]:
        shutil.copytree(part, slice_dir / part.name)
    index = build_index(slice_dir, progress=False)
    result = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "torch": torch.__version__, "cpus": os.cpu_count(), "device": args.device}
    for name, fn in (("decode", lambda: decode_check(index, args.device)),
                     ("detect_" + args.device, lambda: detect_check(index, args.device)[0]),
                     ("detect_cpu", lambda: detect_check(index, "cpu")[0])):
        try:
            result[name] = fn()
        except Exception as e:  # noqa: BLE001 - one failed measurement must not lose the others
            result[name] = {"error": f"{type(e).__name__}: {e}"}
        print(name, json.dumps(result[name]), flush=True)
    try:
        _, faces = detect_check(index, args.device)
        result["train_amp"] = train_check(index, faces, work, args.device, args.size)
    except Exception as e:  # noqa: BLE001
        result["train_amp"] = {"error": f"{type(e).__name__}: {e}"}
    print("train_amp", json.dumps(result["train_amp"]), flush=True)
    try:
        result["predict"] = predict_check(slice_dir, work, args.device)
    except Exception as e:  # noqa: BLE001
        result["predict"] = {"error": f"{type(e).__name__}: {e}"}
    print("predict", json.dumps(result["predict"]), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
