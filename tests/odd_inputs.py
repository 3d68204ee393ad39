"""The odd-inputs set: every kind of file `dfdc predict` meets, and what it must say of each."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from dfdc.video import ffmpeg_exe, read_frames, write_video

# name -> what `dfdc predict` must say of it: "" (scored: a face found, a real score) or a piece of the reason
ODD_INPUTS = {
    "portrait.mp4": "",
    "with space.mp4": "",
    "a,b.mp4": "",
    'say "cheese".mp4': "",
    "café déjà vu.mp4": "",
    "still.png": "",
    "still.jpg": "",
    "still.webp": "",
    "png named as video.mp4": "",
    "one_frame.mp4": "",
    "4k.mp4": "",
    "vp9.webm": "",
    "mpeg4.avi": "",
    "hevc.mkv": "",
    "mjpeg.mov": "",
    "yuv444.mp4": "",
    "10bit.mp4": "",
    "gray.mp4": "",
    "rotated.mp4": "",
    "audio.m4a": "no video stream: an audio-only file (aac)",
    "empty.mp4": "zero-byte file",
    "notes.txt": "not a video or image file",
    "cut.mp4": "truncated or corrupt video",
    "broken link.mp4": "broken link: points to 'gone.mp4', which does not exist",
    "tiny.mp4": "no face: the frames (16x16 px) are smaller than the smallest face",
    "noface.mp4": "no face",
}
NOT_SCORED = {"subfolder", ".hidden.mp4"}


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)


def make_odd_inputs(tiny_sample: Path, d: Path) -> Path:
    """Fill folder ``d`` with every kind of input of ODD_INPUTS (and NOT_SCORED), made from sample videos."""
    d.mkdir(parents=True)
    reals = sorted(tiny_sample.glob("*/*.mp4"))
    portrait = next(p for p in reals if (lambda f: f.shape[0] > f.shape[1])(read_frames(p, [0])[0][0]))
    landscape = next(p for p in reals if (lambda f: f.shape[0] < f.shape[1])(read_frames(p, [0])[0][0]))
    for name in ("portrait.mp4", "with space.mp4", "a,b.mp4", 'say "cheese".mp4', "café déjà vu.mp4"):
        shutil.copy(portrait, d / name)
    frame = read_frames(portrait, [3])[0][3]
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    for ext in ("png", "jpg", "webp"):
        assert cv2.imwrite(str(d / f"still.{ext}"), bgr)
    shutil.copy(d / "still.png", d / "png named as video.mp4")
    write_video(d / "one_frame.mp4", [frame], 25)
    big = cv2.resize(read_frames(landscape, [3])[0][3], (3840, 2160), interpolation=cv2.INTER_LINEAR)
    write_video(d / "4k.mp4", [big] * 3, 25, preset="ultrafast")
    src = str(landscape)
    _ffmpeg("-i", src, "-frames:v", "12", "-c:v", "libvpx-vp9", "-b:v", "300k", "-deadline", "realtime",
            str(d / "vp9.webm"))
    _ffmpeg("-i", src, "-frames:v", "12", "-c:v", "mpeg4", "-q:v", "3", str(d / "mpeg4.avi"))
    _ffmpeg("-i", src, "-frames:v", "12", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=0",
            str(d / "hevc.mkv"))
    _ffmpeg("-i", src, "-frames:v", "12", "-c:v", "mjpeg", "-q:v", "3", str(d / "mjpeg.mov"))
    for name, fmt in (("yuv444.mp4", "yuv444p"), ("10bit.mp4", "yuv420p10le"), ("gray.mp4", "gray")):
        _ffmpeg("-i", src, "-frames:v", "12", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", fmt,
                str(d / name))
    # as a phone films: the stream stores the frames turned a quarter clockwise, the metadata turns them back
    _ffmpeg("-i", src, "-frames:v", "12", "-vf", "transpose=1", "-c:v", "libx264", "-preset", "ultrafast",
            str(d / "sideways.mp4"))
    _ffmpeg("-display_rotation", "90", "-i", str(d / "sideways.mp4"), "-c", "copy", str(d / "rotated.mp4"))
    (d / "sideways.mp4").unlink()
    _ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(d / "audio.m4a"))
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.txt").write_text("not a video\n")
    data = portrait.read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 3])
    os.symlink("gone.mp4", d / "broken link.mp4")
    rng = np.random.default_rng(0)
    write_video(d / "tiny.mp4", [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(5)], 25)
    write_video(d / "noface.mp4", [rng.integers(0, 50, (96, 128, 3), dtype=np.uint8) for _ in range(10)], 25)
    (d / "subfolder").mkdir()
    shutil.copy(portrait, d / "subfolder" / "inside.mp4")
    shutil.copy(portrait, d / ".hidden.mp4")
    assert {p.name for p in d.iterdir()} == set(ODD_INPUTS) | NOT_SCORED
    return d
