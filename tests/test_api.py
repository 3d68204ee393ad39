"""The Python API: `from dfdc import Detector` loads a bundle, an ensemble file or a models folder and scores
files and arrays, each into a Result."""
import base64
import json
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import dfdc
from dfdc.cli import main
from dfdc.inference.ensemble import write_ensemble
from dfdc.store import file_sha256
from dfdc.video import read_frames

FRAMES = 6


@pytest.fixture(scope="module")
def shipped(tiny_checkpoint, tmp_path_factory):
    """A models folder with its ensemble.json, and its bundle."""
    root = tmp_path_factory.mktemp("api")
    models = root / "models"
    (models / "tiny").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, models / "tiny" / "best.pt")
    write_ensemble(models / "ensemble.json", {"tiny": {"checkpoint": models / "tiny" / "best.pt", "weight": 1.0,
                                                       "sha256": file_sha256(models / "tiny" / "best.pt")}},
                   method="equal", strategy="confident", tta=False, metrics={})
    bundle = root / "detector.dfdc"
    assert main(["export", "-o", str(bundle), "--models-dir", str(models)]) == 0
    return {"models": models, "bundle": bundle}


@pytest.fixture(scope="module")
def det(shipped):
    from dfdc import Detector

    return Detector.load(shipped["bundle"], device="cpu", frames=FRAMES)


def test_import_dfdc_is_light_and_exports_detector_and_result():
    from dfdc import Detector, Result
    from dfdc.api import Detector as D
    from dfdc.inference.video import Result as R

    assert Detector is D and Result is R and {"Detector", "Result"} <= set(dfdc.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        dfdc.Nope  # noqa: B018
    out = subprocess.run([sys.executable, "-c", "import dfdc, sys; print('torch' in sys.modules, dfdc.__version__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", dfdc.__version__]


def test_a_bundle_an_ensemble_file_and_a_models_folder_load_to_the_same_detector(shipped, det, odd_inputs):
    from dfdc import Detector, Result

    video = odd_inputs / "portrait.mp4"
    r = det.score(video)
    assert isinstance(r, Result) and r.filename == "portrait.mp4" and r.kind == "video" and r.reason == ""
    for where in (shipped["models"], shipped["models"] / "ensemble.json", str(shipped["bundle"]),
                  shipped["models"] / "tiny" / "best.pt"):
        other = Detector.load(where, device="cpu", frames=FRAMES)
        assert other.models == ["tiny"] and other.score(video).prob == pytest.approx(r.prob, abs=1e-6)
    d = det.describe()
    assert d["models"] == [{"name": "tiny", "weight": 1.0, "input": "frame"}] and d["device"] == "cpu"
    assert d["strategy"] == "confident" and d["threshold"] == 0.5 and "bundle" in d["source"]
    assert any("synthetic sample" in n for n in det.notes)

    assert 0.01 <= r.prob <= 0.99 and r.threshold == 0.5
    assert r.label == ("FAKE" if r.prob >= 0.5 else "REAL")
    strict = Detector.load(shipped["bundle"], device="cpu", frames=FRAMES, threshold=min(0.99, r.prob + 0.01))
    assert strict.score(video).label == "REAL"
    assert r.faces and all(len(f["box"]) == 4 and all(isinstance(v, int) for v in f["box"]) for f in r.faces)
    assert len(r.frames) == FRAMES and r.frame_scores
    assert {f["frame"] for f in r.frame_scores} <= set(r.frames)
    assert all(0 <= f["prob"] <= 1 for f in r.frame_scores)
    assert {"decode", "detect", "classify"} <= set(r.timings) and r.size[0] < r.size[1]
    doc = json.loads(r.to_json())
    assert doc["prob"] == r.prob and doc["label"] == r.label and doc["frame_scores"] == r.frame_scores
    assert "thumbnails" not in doc and not r.thumbs

    explained = det.score(video, explain=True, name="clip.mp4")
    assert explained.filename == "clip.mp4" and explained.prob == r.prob
    doc = json.loads(explained.to_json(images=True))
    assert len(doc["thumbnails"]) == len(r.faces)
    for url in [t["image"] for t in doc["thumbnails"]] + [g["image"] for g in doc["gradcam"]]:
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["gradcam"] and all(g["model"] == "tiny" for g in doc["gradcam"])


def test_arrays_score_as_the_files_they_came_from_and_bad_ones_say_why(det, odd_inputs):
    video = odd_inputs / "portrait.mp4"
    frames, n = read_frames(video)
    clip = np.stack([frames[i] for i in range(n)])  # (T, H, W, 3) RGB uint8
    as_video = det.score(clip)
    assert as_video.kind == "video" and as_video.filename == "array" and as_video.reason == ""
    assert as_video.prob == pytest.approx(det.score(video).prob, abs=1e-6)
    image = frames[3]  # still.png is this frame
    as_image = det.score(image, name="frame3.png")
    assert as_image.kind == "image" and as_image.frames == [0] and as_image.filename == "frame3.png"
    assert as_image.faces and as_image.prob == pytest.approx(det.score(odd_inputs / "still.png").prob, abs=1e-6)
    for bad, shape in ((image.astype(np.float32), "float32 (%d, %d, 3)" % image.shape[:2]),
                       (image[..., 0], "uint8 (%d, %d)" % image.shape[:2]),
                       (np.zeros((4, 4, 4), np.uint8), "uint8 (4, 4, 4)"),
                       (np.zeros((2, 0, 8, 3), np.uint8), "uint8 (2, 0, 8, 3)")):
        r = det.score(bad)
        assert r.label == "UNSCORED" and r.prob == 0.5 and r.kind == "other"
        assert "an array must be RGB uint8" in r.reason and shape in r.reason, r.reason
        assert json.loads(r.to_json())["label"] == "UNSCORED"
    for r in (as_video, as_image):  # frame indices and boxes of arrays are plain JSON too
        doc = json.loads(r.to_json(images=True))
        assert doc["kind"] == r.kind and doc["frames"] == r.frames and doc["faces"]


def test_score_many_yields_in_order_and_a_missing_file_gets_a_reason(det, odd_inputs, tmp_path):
    missing = tmp_path / "gone.mp4"
    sources = [odd_inputs / "portrait.mp4", missing, odd_inputs / "still.png", str(odd_inputs / "notes.txt")]
    results = det.score_many(sources, workers=2)
    assert isinstance(results, types.GeneratorType)
    results = list(results)
    assert [r.filename for r in results] == ["portrait.mp4", "gone.mp4", "still.png", "notes.txt"]
    assert [r.label for r in results][1:] == ["UNSCORED", results[2].label, "UNSCORED"]
    assert results[1].reason == "file not found"
    assert "not a video or image file" in results[3].reason
    assert results[0].prob == pytest.approx(det.score(sources[0]).prob, abs=1e-6)
    assert results[2].reason == "" and results[2].kind == "image"


def test_load_refuses_what_is_no_detector(shipped, tmp_path):
    from dfdc import Detector

    for nowhere in (tmp_path / "nowhere.dfdc", tmp_path / "nowhere"):
        with pytest.raises(FileNotFoundError, match="no detector at") as e:
            Detector.load(nowhere)
        assert str(nowhere) in str(e.value)
    with pytest.raises(FileNotFoundError, match="ensemble file not found") as e:
        Detector.load(tmp_path / "ensemble.json")
    assert str(tmp_path / "ensemble.json") in str(e.value)
    with pytest.raises(ValueError, match="2 names for 1 inputs"):
        next(Detector.load(shipped["bundle"], device="cpu").score_many([tmp_path / "a.mp4"], names=["a", "b"]))
    for threshold in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
            Detector.load(shipped["bundle"], device="cpu", threshold=threshold)
    with pytest.raises(ValueError, match="unknown runtime"):
        Detector.load(shipped["bundle"], device="cpu", runtime="tflite")
