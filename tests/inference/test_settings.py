"""Where `dfdc predict`'s settings come from: flag > checkpoint > params file > defaults."""
from types import SimpleNamespace

import pytest

from dfdc.inference.settings import SettingsConflict, resolve


class M:
    def __init__(self, name, detect=None, crops=None, clips=None, size=32):
        self.name = name
        self.spec = SimpleNamespace(input="clip" if clips is not None else "frame", size=size)
        self.preprocess = None if detect is None and crops is None and clips is None else \
            {"detect": detect, "crops": crops, "clips": clips}


DETECT = {"thresholds": [0.85, 0.95, 0.95], "min_score": 0.9, "min_face_size": 40, "min_face_input": 20, "max_faces": 4,
          "min_iou": 0.3, "max_gap": 2, "every": 10, "min_track": 3}


def test_precedence(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("detect: {min_face_size: 25, max_faces: 2}\ncrops: {margin: 0.5}\n"
                      "predict: {strategy: weighted, tta: true}\n")
    trained = M("a", {**DETECT, "min_face_size": 60}, {"margin": 0.2})
    s = resolve([trained], {}, params)
    assert s.detector["min_face_size"] == 60 and s.detector["max_faces"] == 4  # the checkpoint wins over params
    assert s.margins == {"a": 0.2} and s.strategy == "weighted" and s.tta is True  # no ensemble: params
    assert s.describe() == "detector and crops as the models were trained"
    s = resolve([trained], {"min_face_size": 30, "margin": 0.25, "strategy": "mean"}, params)
    assert s.detector["min_face_size"] == 30 and s.margins == {"a": 0.25} and s.strategy == "mean"
    assert "from flags (overriding the checkpoints): min_face_size 30, margin 0.25" in s.describe()
    old = M("old")  # a checkpoint that recorded nothing: the params file, then the defaults
    s = resolve([old], {}, params)
    assert s.detector["min_face_size"] == 25 and s.margins == {"old": 0.5}
    assert "from the params (not in the checkpoints)" in s.describe()
    s = resolve([old], {}, tmp_path / "absent.yaml")
    assert s.detector["min_face_size"] == 40 and s.margins == {"old": 0.3} and s.strategy == "confident"
    assert s.link == {"min_iou": 0.3, "max_gap": 2}

    class Ensemble:
        strategy, tta = "mean", False

    s = resolve([trained], {}, params, Ensemble())
    assert s.strategy == "mean" and s.tta is False  # what evaluate scored beats the params file
    assert resolve([trained], {"tta": True}, params, Ensemble()).tta is True


def test_each_model_keeps_its_margin_but_the_detector_is_shared():
    a = M("a", DETECT, {"margin": 0.2})
    b = M("b", DETECT, {"margin": 0.4})
    assert resolve([a, b], {}).margins == {"a": 0.2, "b": 0.4}
    c = M("c", {**DETECT, "thresholds": [0.7, 0.8, 0.9]}, {"margin": 0.3})
    with pytest.raises(SettingsConflict, match=r"a, b: thresholds \[0.85, 0.95, 0.95\]; c: thresholds "
                                               r"\[0.7, 0.8, 0.9\]\); pass --thresholds"):
        resolve([a, b, c], {})
    assert resolve([a, b, c], {"thresholds": [0.6, 0.7, 0.7]}).detector["thresholds"] == [0.6, 0.7, 0.7]


def test_a_clip_model_cuts_at_its_clips_margin_and_size():
    from dfdc.inference.settings import clip_size

    frame, clip = M("f", DETECT, {"margin": 0.3}), M("c", DETECT, clips={"margin": 0.5, "size": 64})
    s = resolve([frame, clip], {})
    assert s.margins == {"f": 0.3, "c": 0.5} and s.sources["margin"] == "checkpoints"
    assert clip_size(clip) == 64 and clip_size(M("c2", DETECT, clips={})) == 32  # not recorded: the spec's size
