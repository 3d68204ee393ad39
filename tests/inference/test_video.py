"""`dfdc predict` on real and broken files."""
import csv
import json
import shutil

import cv2
import numpy as np
import pytest

from dfdc.cli import main
from dfdc.video import read_frames, write_video


def _rows(path):
    with open(path) as f:
        return {r["filename"]: float(r["label"]) for r in csv.DictReader(f)}


@pytest.fixture()
def videos_dir(tiny_sample, tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    reals = sorted(tiny_sample.glob("*/*.mp4"))
    portrait = next(p for p in reals if (lambda f: f.shape[0] > f.shape[1])(read_frames(p, [0])[0][0]))
    shutil.copy(portrait, d / "portrait.mp4")
    shutil.copy(portrait, d / "portrait_again.mp4")
    shutil.copy(reals[0], d / "first.mp4")
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.txt").write_text("not a video")
    data = (d / "first.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 3])
    rng = np.random.default_rng(0)
    write_video(d / "noface.mp4", [rng.integers(0, 50, (96, 128, 3), dtype=np.uint8) for _ in range(10)], 25)
    return d


def test_predict_writes_a_row_per_file_and_reports(videos_dir, tiny_checkpoint, tmp_path, capsys):
    out, rep = tmp_path / "sub.csv", tmp_path / "report"
    code = main(["predict", str(videos_dir), "-o", str(out), "--models", str(tiny_checkpoint), "--frames", "6",
                 "--report", str(rep), "--device", "cpu"])
    assert code == 0
    rows = _rows(out)
    assert set(rows) == {p.name for p in videos_dir.iterdir()}
    assert all(0 < v < 1 for v in rows.values())
    for bad in ("empty.mp4", "notes.txt", "noface.mp4", "cut.mp4"):
        assert rows[bad] == 0.5, bad
    assert rows["portrait.mp4"] == rows["portrait_again.mp4"]  # same video, same number
    reasons = {p.stem: json.loads(p.read_text())["reason"] for p in rep.glob("*.json")}
    assert reasons["empty.mp4"] == "zero-byte file"
    assert reasons["noface.mp4"] == "no face"
    assert reasons["notes.txt"] and reasons["cut.mp4"]
    assert reasons["portrait.mp4"] == ""
    good = json.loads((rep / "portrait.mp4.json").read_text())
    assert len(good["frames"]) == 6 and good["faces"] and set(good["timings_s"]) == {"decode", "detect", "classify"}
    for name in rows:
        png = cv2.imread(str(rep / f"{name}.png"))
        assert png is not None and png.shape[0] > 100
    assert "videos/s" in capsys.readouterr().out


def test_predict_ffpp_pairs(ffpp_root, tiny_checkpoint, tmp_path):
    d = tmp_path / "ff"
    d.mkdir()
    for p in ffpp_root.rglob("*.mp4"):
        shutil.copy(p, d / p.name)
    assert main(["predict", str(d), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint),
                 "--frames", "4", "--device", "cpu"]) == 0
    rows = _rows(tmp_path / "s.csv")
    assert len(rows) == 4 and all(0 < v < 1 for v in rows.values())
    assert all(v != 0.5 for v in rows.values())  # faces found in every FF++ video


def test_predict_errors(tmp_path, tiny_checkpoint, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--models", str(tiny_checkpoint)]) == 2
    assert "no files to score" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nope"), "--models", str(tiny_checkpoint)]) == 2
    assert "videos folder not found" in capsys.readouterr().err
    (empty / "a.mp4").write_bytes(b"x")
    assert main(["predict", str(empty), "--models", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["predict", str(empty), "--models-dir", str(tmp_path / "none")]) == 2
    assert "no trained model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["predict", str(empty), "--frames", "0"])
    assert e.value.code == 2


def test_scoring_defaults_follow_the_params_file(videos_dir, tiny_checkpoint, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("predict:\n  strategy: mean\n  tta: true\n")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(videos_dir / "portrait.mp4", one / "portrait.mp4")
    base = ["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint), "--frames", "4",
            "--device", "cpu"]
    assert main(base + ["--params", str(params)]) == 0
    assert "strategy mean, tta True" in capsys.readouterr().out
    assert main(base + ["--params", str(params), "--no-tta", "--strategy", "weighted"]) == 0
    assert "strategy weighted, tta False" in capsys.readouterr().out
    assert main(base + ["--params", str(tmp_path / "absent.yaml")]) == 0
    assert "strategy confident, tta False" in capsys.readouterr().out
    params.write_text("predict:\n  tta: maybe\n")
    assert main(base + ["--params", str(params)]) == 2
    assert "predict.tta" in capsys.readouterr().err


def test_sparse_detection_carries_faces_to_every_sampled_frame(videos_dir, tiny_checkpoint, tmp_path):
    rep = tmp_path / "report"
    assert main(["predict", str(videos_dir), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint),
                 "--frames", "8", "--detect-every", "10", "--report", str(rep), "--device", "cpu"]) == 0
    good = json.loads((rep / "portrait.mp4.json").read_text())
    detected = {f["frame"] for f in good["faces"] if f["detected"]}
    carried = {f["frame"] for f in good["faces"] if not f["detected"]}
    assert detected and carried and not detected & carried
    assert detected | carried == set(good["frames"])  # one face, carried to every sampled frame
    assert good["frames"][0] in detected and good["frames"][-1] in detected
    dense = tmp_path / "dense"
    assert main(["predict", str(videos_dir), "-o", str(tmp_path / "d.csv"), "--models", str(tiny_checkpoint),
                 "--frames", "8", "--detect-every", "1", "--report", str(dense), "--device", "cpu"]) == 0
    faces = json.loads((dense / "portrait.mp4.json").read_text())["faces"]
    assert faces and all(f["detected"] for f in faces)
    assert _rows(tmp_path / "d.csv")["noface.mp4"] == 0.5


def test_threads_and_batched_flip_do_not_change_scores(videos_dir, tiny_checkpoint, detector):
    import torch

    from dfdc.inference.video import _classify, load_ensemble, predict_videos

    files = sorted(p for p in videos_dir.iterdir() if p.suffix == ".mp4")
    models = load_ensemble([tiny_checkpoint], torch.device("cpu"))
    threads = torch.get_num_threads()
    one = predict_videos(files, models, detector, frames=6, workers=0, progress=False)
    two = predict_videos(files, models, detector, frames=6, workers=2, progress=False)
    assert [r.prob for r in one] == [r.prob for r in two] and [r.reason for r in one] == [r.reason for r in two]
    assert torch.get_num_threads() == threads  # the per-worker thread count is restored
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3), dtype=np.uint8)
             for _ in range(5)]
    m = models[0]
    with torch.inference_mode():  # the flip TTA as two separate passes, as before
        x = torch.from_numpy(((np.stack([m.transform(image=c)["image"] for c in crops]).astype(np.float32) / 255
                               - m.mean) / m.std).transpose(0, 3, 1, 2))
        expected = torch.sigmoid((m.model(x) + m.model(torch.flip(x, dims=[3]))) / 2).numpy()
    got = _classify(models, crops, torch.device("cpu"), tta=True, batch_size=2)[m.name]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet18", "regnetx_002"])
def test_fold_batch_norms_keeps_the_function(arch):
    import torch

    from dfdc.inference.video import fold_batch_norms
    from dfdc.models import create_model

    torch.manual_seed(0)
    model = create_model(arch)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        want = model(x)
        got = fold_batch_norms(model)(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    if arch == "resnet18":  # plain Conv2d -> BatchNorm2d pairs are folded away
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fold_batch_norms(model).modules())


def test_fold_batch_norms_leaves_untraceable_models():
    import torch

    from dfdc.inference.video import fold_batch_norms

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent: fx cannot trace it

    model = Branchy().eval()
    assert fold_batch_norms(model) is model
