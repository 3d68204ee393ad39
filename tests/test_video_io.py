"""Video I/O: selective decoding gives a full decode's frames; probing reads no frame; the encoder gives the same
bytes on any CPU."""
import hashlib
import platform
import subprocess

import numpy as np
import pytest

from dfdc.data.codec import CodecParams, apply_codec, encode_clip_mp4
from dfdc.video import (X264_ASM, VideoError, decode_frames, ffmpeg_exe, probe, read_frames, rgb_to_yuv420p,
                        write_video, x264_command)

# sha256 of the three x264 encodes below, made on an AVX-512 machine with x264 pinned to SSE2. With
# x264's own choice of instruction set all three differ there (and with asm=AVX2 they differ again);
# with asm=0 (x264's C code) they are these same bytes.
GOLDEN = {
    "write_video": "8b0128a0c17365e8edbbaa5ed09ed8de5cc70fcfa37e001c1249694190bde136",
    "encode_clip_mp4": "b1e2c5d35458c54a84b05223287873fdf8184867d4927624cc259cc549e8d5bf",
    "apply_codec": "b77a783b37427c0be930cf376ed25f913cfaa6bc0a37421776d2c5e4b593cfec",
}


def golden_frames(n: int = 24, h: int = 64, w: int = 96) -> np.ndarray:
    """Moving integer patterns plus integer noise (no float maths, which could round per CPU)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        base = np.stack([(xx * 3 + t * 4) % 256, (yy * 4 + xx + t * 3) % 256,
                         ((xx - 48) ** 2 + (yy - 32) ** 2 + 40 * t) // 16 % 256], -1)
        out.append(np.clip(base + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="x264's instruction set is pinned on x86-64 only (docs/reproducibility.md)")
def test_x264_writes_the_committed_bytes_on_any_x86_64_cpu(tmp_path):
    """Every x264 encode the pipeline's outputs depend on (sample, degraded copies; MP4 clips; codec
    augmentation) gives the committed bytes: fails on a CPU where x264 would choose other code."""
    assert X264_ASM == "SSE2"
    frames = golden_frames()
    write_video(tmp_path / "g.mp4", frames, 25, crf=23)
    got = {"write_video": (tmp_path / "g.mp4").read_bytes(),
           "encode_clip_mp4": encode_clip_mp4(frames, crf=18),
           "apply_codec": apply_codec(frames, CodecParams(fps=20, scale=0.75, crf=30, tune="film")).tobytes()}
    assert {k: hashlib.sha256(v).hexdigest() for k, v in got.items()} == GOLDEN


def test_rgb_to_yuv420p_is_bt601_limited_range():
    frame = np.zeros((2, 2, 3), np.uint8)
    frame[:] = (255, 255, 255)
    assert rgb_to_yuv420p(frame).tolist() == [235] * 4 + [128, 128]
    frame[:] = (0, 0, 0)
    assert rgb_to_yuv420p(frame).tolist() == [16] * 4 + [128, 128]
    frame[:] = (255, 0, 0)
    y, u, v = rgb_to_yuv420p(frame)[[0, 4, 5]]
    assert (int(y), int(u), int(v)) == (82, 90, 240)  # BT.601 red


def test_the_same_frames_encode_to_the_same_bytes_with_and_without_ffmpegs_simd(tmp_path):
    """ffmpeg with its own SIMD switched off (-cpuflags 0) writes the same file: nothing CPU-specific of
    ffmpeg's converts colour (x264 does not read -cpuflags: its instruction set is pinned by X264_ASM)."""
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


def _ffmpeg(*args) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)


def _same_as_a_full_decode(path, wanted) -> dict:
    """Selective decoding of ``wanted`` against the frames of a full decode (no skipping); returns the stats."""
    full, n = read_frames(path)
    assert len(full) == n and sorted(full) == list(range(n))
    stats: dict = {}
    got = dict(decode_frames(path, wanted, stats))
    assert sorted(got) == sorted(i for i in set(wanted) if i < n)
    for i, frame in got.items():
        assert np.array_equal(frame, full[i]), (path, i)
    assert stats["frames"] == n == probe(path).frames
    return stats


def _b_frames(path) -> bool:
    import av

    with av.open(str(path)) as c:
        return bool(c.streams.video[0].codec_context.has_b_frames)


def test_selective_decoding_is_bit_identical_and_skips_unreferenced_frames(tiny_sample):
    video = sorted(tiny_sample.glob("*/*.mp4"))[0]
    assert _b_frames(video)  # x264's veryfast: B-frames, some never referenced
    stats = _same_as_a_full_decode(video, range(0, 1000, 10))
    assert stats["decoded"] < stats["frames"]  # unreferenced frames between the wanted ones were not decoded
    _same_as_a_full_decode(video, [stats["frames"] - 1, 3, 4, 5])  # any order, the last frame, neighbours
    assert dict(decode_frames(video, [])) == {}


def test_selective_decoding_on_the_ffpp_videos(ffpp_root):
    for video in sorted(ffpp_root.rglob("*.mp4")):
        assert _b_frames(video)
        stats = _same_as_a_full_decode(video, list(range(0, 40, 10)) + [97, 98, 99])
        assert stats["decoded"] < 100


def test_variable_frame_rate_and_a_header_that_miscounts(tmp_path):
    vfr, gop, trimmed = tmp_path / "vfr.mp4", tmp_path / "gop.mp4", tmp_path / "trimmed.mp4"
    # 60 frames shown ever longer apart
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-frames:v", "60",
            "-vf", "setpts='(N+N*N/30)/30/TB'", "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast",
            str(vfr))
    _same_as_a_full_decode(vfr, range(0, 60, 7))
    # cut without re-encoding 1.3 s in: the file keeps the packets back to the keyframe, shown never (an edit
    # list), so its header lists 100 frames of which 67 are shown
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-frames:v", "100", "-c:v", "libx264",
            "-preset", "veryfast", "-g", "50", str(gop))
    _ffmpeg("-ss", "1.3", "-i", str(gop), "-c", "copy", str(trimmed))
    import av

    with av.open(str(trimmed)) as c:
        assert c.streams.video[0].frames == 100
    assert probe(trimmed).frames == 67
    _same_as_a_full_decode(trimmed, [0, 1, 33, 66, 70])


def test_probe_reads_no_frame_and_catches_a_cut_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    whole = tmp_path / "whole.mp4"
    write_video(whole, [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(30)], fps=25)
    import av.codec.context

    def no_decoding(*_a, **_k):
        raise AssertionError("probe decoded a frame")

    with monkeypatch.context() as m:
        m.setattr(av.codec.context.CodecContext, "decode", no_decoding, raising=False)
        info = probe(whole)
    assert (info.frames, info.width, info.height, info.fps) == (30, 64, 48, 25.0)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VideoError, match="truncated or corrupt video: .* of the 30 its header lists"):
        probe(cut)
    assert probe(cut, verify=False).frames == 30  # the header alone cannot tell
    assert 0 < len(read_frames(cut)[0]) < 30  # the frames that are there still decode


def test_a_quarter_turned_video_is_measured_and_shown_upright(tmp_path):
    src, turned = tmp_path / "sideways.mp4", tmp_path / "turned.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25", "-frames:v", "5", "-vf", "transpose=1",
            "-c:v", "libx264", "-preset", "ultrafast", str(src))
    _ffmpeg("-display_rotation", "90", "-i", str(src), "-c", "copy", str(turned))
    assert (probe(src).width, probe(src).height) == (96, 160)
    assert (probe(turned).width, probe(turned).height) == (160, 96)
    assert read_frames(turned, [0])[0][0].shape == (96, 160, 3)


_DECODE_HASH = """
import ctypes, glob, hashlib, os, sys
import av
if sys.argv[1] == "no-simd":  # FFmpeg's C code everywhere, as on a CPU without any of the SIMD it can use
    lib = glob.glob(os.path.join(os.path.dirname(av.__file__) + ".libs", "libavutil*"))[0]
    ctypes.CDLL(lib).av_force_cpu_flags(0)
from dfdc.video import read_frames
h = hashlib.sha256()
for path in sys.argv[2:]:
    frames, _ = read_frames(path, range(0, 1000, 7))
    for i in sorted(frames):
        h.update(frames[i].tobytes())
print(h.hexdigest())
"""


def test_decoded_frames_are_the_same_with_ffmpegs_simd_on_or_off(tiny_sample):
    import glob
    import os
    import sys

    import av
    from helpers import FFPP

    if not glob.glob(os.path.join(os.path.dirname(av.__file__) + ".libs", "libavutil*")):
        pytest.skip("this PyAV build does not bundle its own libavutil")
    videos = [str(p) for p in sorted(tiny_sample.glob("*/*.mp4"))[:3]]  # yuv420p
    videos += [str(p) for p in sorted(FFPP.rglob("*.mp4"))[:1]]  # yuv444p, when ../shared is there
    hashes = {mode: subprocess.run([sys.executable, "-c", _DECODE_HASH, mode, *videos], capture_output=True,
                                   text=True, check=True).stdout.strip() for mode in ("simd", "no-simd")}
    assert len(hashes["simd"]) == 64 and hashes["simd"] == hashes["no-simd"]
