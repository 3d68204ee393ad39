import json

import numpy as np
import pytest
from PIL import Image

from dfdc.inference.gradcam import grad_cam, overlay
from dfdc.inference.scorer import from_checkpoint


def test_heatmap_has_the_crops_shape_and_unit_range(tiny_prep, tiny_checkpoint):
    from dfdc.data.frames import read_crops

    model = from_checkpoint(tiny_checkpoint)  # batch norms folded: the graph the scorer runs
    crops = next(iter(read_crops(tiny_prep["crops"].head(3), tiny_prep["crops_dir"])))
    crops = [*crops, np.ascontiguousarray(crops[0][:, : crops[0].shape[1] // 2])]  # a tall crop: padded at the sides
    heats = grad_cam(model, crops)
    assert len(heats) == len(crops)
    for c, h in zip(crops, heats):
        assert h.shape == c.shape[:2] and h.dtype == np.float32
        assert h.min() >= 0 and h.max() <= 1 and (h.max() == 1 or h.max() == 0)
    assert overlay(crops[0], heats[0]).shape == crops[0].shape


def test_heatmap_follows_the_evidence():
    """Fake logit = mean brightness: a bright square lights up, the dark rest does not; with the sign
    reversed nothing pushes the score up and the map is empty."""
    import torch

    from dfdc.inference.scorer import ScoringModel
    from dfdc.models.spec import DeepfakeModel, ModelOutput, ModelSpec

    class Brightness(DeepfakeModel):
        def __init__(self, sign):
            super().__init__()
            self.spec = ModelSpec(input="frame", size=32, mean=(0, 0, 0), std=(1, 1, 1))
            self.conv = torch.nn.Conv2d(3, 1, 1)
            torch.nn.init.constant_(self.conv.weight, sign)
            torch.nn.init.zeros_(self.conv.bias)

        def forward(self, x):
            return ModelOutput(self.conv(x).mean(dim=(1, 2, 3)))

    crop = np.zeros((40, 40, 3), np.uint8)
    crop[:20, :20] = 220
    (heat,) = grad_cam(ScoringModel("bright", Brightness(1.0)), [crop])
    assert heat[2:18, 2:18].min() > 0.9 and heat[24:, :].max() < 0.05 and heat[:, 24:].max() < 0.05
    (none,) = grad_cam(ScoringModel("dark", Brightness(-1.0)), [crop])
    assert none.max() == 0


def test_report_writes_gradcam_png(tiny_sample, tiny_checkpoint, tmp_path):
    from dfdc.cli import main

    d = tmp_path / "videos"
    d.mkdir()
    real = sorted(tiny_sample.glob("*/*.mp4"))[0]
    (d / real.name).symlink_to(real)
    code = main(["predict", str(d), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint), "--frames", "6",
                 "--device", "cpu", "--report", str(tmp_path / "report")])
    assert code == 0
    doc = json.loads((tmp_path / "report" / f"{real.name}.json").read_text())
    png = tmp_path / "report" / f"{real.name}.gradcam.png"
    if not doc["faces"]:
        pytest.skip("the detector found no face in this tiny video")
    assert 1 <= len(doc["gradcam"]) <= 4 and doc["gradcam"][0]["prob"] == max(f["prob"] for f in doc["faces"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(png).size[0] > 100
