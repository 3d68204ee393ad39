"""Video I/O: the encoder gives the same bytes on any CPU."""
import subprocess

import numpy as np

from dfdc.video import read_frames, rgb_to_yuv420p, write_video, x264_command


def test_rgb_to_yuv420p_is_bt601_limited_range():
    frame = np.zeros((2, 2, 3), np.uint8)
    frame[:] = (255, 255, 255)
    assert rgb_to_yuv420p(frame).tolist() == [235] * 4 + [128, 128]
    frame[:] = (0, 0, 0)
    assert rgb_to_yuv420p(frame).tolist() == [16] * 4 + [128, 128]
    frame[:] = (255, 0, 0)
    y, u, v = rgb_to_yuv420p(frame)[[0, 4, 5]]
    assert (int(y), int(u), int(v)) == (82, 90, 240)  # BT.601 red


def test_the_same_frames_encode_to_the_same_bytes_with_and_without_simd(tmp_path):
    """ffmpeg with its SIMD switched off (-cpuflags 0) writes the same file: nothing CPU-specific converts colour."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    raw = b"".join(rgb_to_yuv420p(f).tobytes() for f in frames)
    outs = []
    for extra in ([], ["-cpuflags", "0"]):
        cmd = x264_command(tmp_path / f"v{len(extra)}.mp4", 64, 48, 25, crf=20)
        subprocess.run(cmd[:1] + extra + cmd[1:], input=raw, check=True, capture_output=True)
        outs.append((tmp_path / f"v{len(extra)}.mp4").read_bytes())
    assert outs[0] == outs[1]
    write_video(tmp_path / "w.mp4", frames, 25, crf=20)
    assert (tmp_path / "w.mp4").read_bytes() == outs[0]
    decoded, n = read_frames(tmp_path / "w.mp4")
    assert n == 6 and decoded[0].shape == (48, 64, 3)
