import json
from pathlib import Path

import numpy as np

from dfdc.datasets.sample import PHOTO_FACES, REGIONS, RESOLUTIONS, _photos, load_identities
from dfdc.video import probe, read_frames, sample_indices


def _metadata(root: Path) -> dict[Path, dict]:
    out = {}
    for meta in sorted(root.glob("dfdc_train_part_*/metadata.json")):
        for name, entry in json.loads(meta.read_text()).items():
            out[meta.parent / name] = entry
    return out


def test_layout_and_metadata(tiny_sample):
    parts = sorted(p.name for p in tiny_sample.iterdir())
    assert parts == ["dfdc_train_part_0", "dfdc_train_part_1"]
    meta = _metadata(tiny_sample)
    assert len(meta) == 12
    files = {p for p in tiny_sample.glob("*/*.mp4")}
    assert files == set(meta)  # every file listed, every entry on disk
    reals = [p for p, e in meta.items() if e["label"] == "REAL"]
    fakes = [p for p, e in meta.items() if e["label"] == "FAKE"]
    assert len(reals) == 4 and len(fakes) == 8
    for p, e in meta.items():
        assert e["split"] == "train" and e["dataset"] == "sample"
        if e["label"] == "FAKE":
            original = p.parent / e["original"]
            assert meta[original]["label"] == "REAL"  # original in the same part
            # the manipulation travels with the fake, as extra keys like DFDC's own
            assert set(e) == {"label", "split", "original", "dataset", "method", "sharpness", "feather", "colour"}
            assert e["method"] in REGIONS and 0 < e["sharpness"] < 1 and 0 < e["feather"] and 0 <= e["colour"] <= 1
        else:
            assert set(e) == {"label", "split", "dataset"}
    assert {e["method"] for e in meta.values() if e["label"] == "FAKE"} == set(REGIONS)


def test_index_records_the_blend_region_and_the_dataset(tiny_sample):
    from dfdc.datasets.index import build_index, index_meta

    meta = {p.name: e for p, e in _metadata(tiny_sample).items()}
    index = build_index(tiny_sample, progress=False)
    fakes = index[index["label"] == 1]
    assert [meta[Path(v).name]["method"] for v in fakes["video"]] == fakes["method"].tolist()
    assert index.loc[index["label"] == 0, "method"].isna().all()
    assert set(index["dataset"]) == {"sample"}
    assert index_meta(index, "x")["data"] == {"root": "x", "videos": 12, "datasets": {"sample": 12}}


def test_fakes_are_frame_aligned_and_differ_only_around_the_face(tiny_sample, detector):
    meta = _metadata(tiny_sample)
    sizes = set()
    for fake, e in meta.items():
        if e["label"] != "FAKE":
            continue
        original = fake.parent / e["original"]
        a, b = probe(original), probe(fake)
        assert (a.frames, a.width, a.height) == (b.frames, b.width, b.height)
        assert abs(a.fps - b.fps) < 1e-3
        sizes.add((a.width, a.height))
        ra, _ = read_frames(original, [5])
        rb, _ = read_frames(fake, [5])
        diff = np.abs(ra[5].astype(int) - rb[5].astype(int)).sum(-1)  # (H, W)
        faces = detector.detect([ra[5]])[0]
        inside = np.zeros(diff.shape, bool)
        for x1, y1, x2, y2 in faces.boxes.astype(int):
            inside[y1:y2, x1:x2] = True
        assert inside.any()
        assert diff[inside].mean() > 3 * diff[~inside].mean(), fake.name  # outside: re-encoding noise only
    assert any(h > w for w, h in sizes), "at least one portrait video"


def test_mtcnn_finds_faces_in_real_videos(tiny_sample, detector):
    found = total = two_face_frames = 0
    for p, e in _metadata(tiny_sample).items():
        if e["label"] != "REAL":
            continue
        info = probe(p)
        frames, _ = read_frames(p, sample_indices(info.frames, every=5))
        for faces in detector.detect(list(frames.values())):
            total += 1
            found += len(faces) > 0
            two_face_frames += len(faces) >= 2
    assert found / total >= 0.95, f"faces found in {found}/{total} frames"
    assert two_face_frames > 0, "the two-face video shows two faces"


def test_the_photo_face_table_is_what_the_detector_finds(detector):
    """The sample uses a stored table, not the detector: the table must still be right."""
    for name, photo in _photos():
        faces = detector.detect([photo])[0]
        box, landmarks = PHOTO_FACES[name]
        assert len(faces), name
        np.testing.assert_allclose(faces.boxes[0], box, atol=1.0, err_msg=name)
        np.testing.assert_allclose(faces.landmarks[0], landmarks, atol=1.0, err_msg=name)


def test_shipped_photographs_give_enough_identities():
    idents = load_identities()
    assert len({i.name for i in idents}) >= 6
    for ident in idents:
        assert ident.landmarks.shape == (5, 2)
        h, w = ident.image.shape[:2]
        assert (ident.landmarks >= 0).all() and (ident.landmarks[:, 0] < w).all() and (ident.landmarks[:, 1] < h).all()
    assert any(h > w for w, h in RESOLUTIONS)


def test_files_depend_on_the_seed_only(tiny_sample, tmp_path):
    """Byte-identical for a seed, whatever the worker count and the machine (core count, SIMD paths).

    The tiny sample was built in this process with two render threads. This build runs in a
    subprocess without threads, pinned to one core (x264 picks its thread count from the cores
    unless told), with OpenCV's AVX/AVX2 kernels, numpy's AVX2/FMA loops and OpenBLAS's Haswell
    kernels switched off, as on a CPU that lacks them.
    """
    import os
    import platform
    import shutil
    import subprocess
    import sys

    env = dict(os.environ)
    if platform.machine() in ("x86_64", "AMD64"):
        env.update(OPENCV_CPU_DISABLE="AVX2,AVX,FMA3", NPY_DISABLE_CPU_FEATURES="AVX2 FMA3 AVX F16C",
                   OPENBLAS_CORETYPE="Prescott")
    # one part of two: every random draw is made in order, so part 0 comes out as in the two-part build
    code = ("from dfdc.datasets.sample import make_sample; import sys; make_sample(sys.argv[1], seed=7, parts=1, "
            "reals_per_part=2, fakes_per_real=2, seconds=(1.0, 1.2), two_face_every=4, progress=False, workers=0)")
    cmd = [sys.executable, "-c", code, str(tmp_path / "s")]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    part = "dfdc_train_part_0"
    first = {p.relative_to(tiny_sample): p.read_bytes() for p in sorted((tiny_sample / part).iterdir())}
    second = {p.relative_to(tmp_path / "s"): p.read_bytes() for p in sorted((tmp_path / "s" / part).iterdir())}
    assert first.keys() == second.keys() and len(first) == 7  # 6 videos, metadata.json
    assert [k for k in first if first[k] != second[k]] == []
