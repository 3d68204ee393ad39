"""`dfdc predict` on real, odd and broken inputs, with the settings and ensemble the models were evaluated with."""
import csv
import dataclasses
import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from odd_inputs import ODD_INPUTS

from dfdc.cli import main
from dfdc.inference.ensemble import write_ensemble
from dfdc.models import checkpoint


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {r["filename"]: float(r["label"]) for r in csv.DictReader(f)}


def _report(rep, name):
    return json.loads((rep / f"{name}.json").read_text(encoding="utf-8"))


def _variant(src, dst, **changes):
    """A copy of checkpoint ``src`` with fields replaced (e.g. other preprocess settings)."""
    ck = checkpoint.load(src)
    checkpoint.save(dst, dataclasses.replace(ck, **changes))
    return dst


def test_every_odd_input_gets_a_row_and_a_reason(odd_inputs, tiny_checkpoint, tmp_path, capsys):
    out, rep = tmp_path / "sub.csv", tmp_path / "report"
    code = main(["predict", str(odd_inputs), "-o", str(out), "--models", str(tiny_checkpoint), "--frames", "6",
                 "--report", str(rep), "--device", "cpu"])
    assert code == 0
    rows = _rows(out)  # the csv module reads back names with commas, quotes and accents
    assert set(rows) == set(ODD_INPUTS)
    with open(out, encoding="utf-8") as f:
        assert '"a,b.mp4",' in f.read()
    for name, reason in ODD_INPUTS.items():
        r = _report(rep, name)
        if reason:
            assert rows[name] == 0.5 and reason in r["reason"], (name, r["reason"])
            assert r["verdict"] == "UNSCORED (0.5)"
        else:
            assert r["reason"] == "" and r["faces"] and 0 < rows[name] < 1 and rows[name] != 0.5, (name, r["reason"])
        png = cv2.imread(str(rep / f"{name}.png"))
        assert png is not None and png.shape[0] > 100
    for name in ("with space.mp4", "a,b.mp4", 'say "cheese".mp4', "café déjà vu.mp4"):
        assert rows[name] == rows["portrait.mp4"]  # the same video under another name
    for name in ("still.png", "still.jpg", "still.webp", "png named as video.mp4"):
        r = _report(rep, name)
        assert r["kind"] == "image" and r["frames"] == [0]
    assert _report(rep, "png named as video.mp4")["prob"] == _report(rep, "still.png")["prob"]
    assert _report(rep, "4k.mp4")["size"] == [3840, 2160]
    w, h = _report(rep, "rotated.mp4")["size"]
    assert w > h  # the rotation metadata applied: a portrait stream of sideways faces, shown upright
    summary = capsys.readouterr().out
    assert "1 subfolder(s) not scored (subfolder/)" in summary and "1 hidden entry not scored" in summary


def test_the_submission_csv_quotes_what_needs_quoting(tmp_path):
    from dfdc.inference.video import Result, write_submission

    names = ["a,b.mp4", 'q"uote.mp4', "naïve façade.mp4", "plain.mp4", "new\nline.mp4"]
    write_submission([Result(n, 0.25 + i / 10) for i, n in enumerate(names)], tmp_path / "s.csv")
    df = pd.read_csv(tmp_path / "s.csv", encoding="utf-8")
    assert df["filename"].tolist() == names and df.shape == (5, 2)
    assert df["label"].tolist() == pytest.approx([0.25, 0.35, 0.45, 0.55, 0.65])


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
    (empty / "sub").mkdir()
    assert main(["predict", str(empty), "--models", str(tiny_checkpoint)]) == 2
    assert "1 subfolder(s) not scored (sub/)" in capsys.readouterr().err
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


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_bad_model_files_give_one_line_and_exit_2(tmp_path, tiny_checkpoint, capsys):
    videos = tmp_path / "v"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"x")
    marker = tmp_path / "pwned"
    bad = {"random.pt": lambda p: p.write_bytes(np.random.default_rng(0).bytes(300)),
           "code.pt": lambda p: torch.save({"x": _Payload(str(marker))}, p),
           "other.pt": lambda p: torch.save({"state_dict": {"w": torch.zeros(2)}}, p),
           "cut.pt": lambda p: p.write_bytes(tiny_checkpoint.read_bytes()[:5000])}
    for name, make in bad.items():
        make(tmp_path / name)
        code = main(["predict", str(videos), "-o", str(tmp_path / "s.csv"), "--models", str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and "\n" not in err and name in err, (name, err)
    assert not marker.exists()  # the crafted pickle never ran


def test_two_checkpoints_of_one_name_stay_apart(odd_inputs, tiny_checkpoint, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(odd_inputs / "portrait.mp4", one / "portrait.mp4")
    twin = tmp_path / "twin" / "best.pt"
    twin.parent.mkdir()
    shutil.copy(tiny_checkpoint, twin)
    rep = tmp_path / "rep"
    assert main(["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint), str(twin),
                 "--frames", "4", "--device", "cpu", "--report", str(rep)]) == 0
    assert sorted(_report(rep, "portrait.mp4")["model_probs"]) == sorted([str(tiny_checkpoint), str(twin)])
    assert main(["predict", str(one), "--models", str(twin), "--ensemble", str(tmp_path / "e.json")]) == 2
    assert "--models and --ensemble" in capsys.readouterr().err


def test_settings_come_from_the_checkpoints_and_flags_win(odd_inputs, tiny_checkpoint, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(odd_inputs / "portrait.mp4", one / "portrait.mp4")
    ck = checkpoint.load(tiny_checkpoint)
    narrow = _variant(tiny_checkpoint, tmp_path / "narrow.pt",
                      preprocess={**ck.preprocess, "crops": {"margin": 0.1}})
    params = tmp_path / "params.yaml"
    params.write_text("crops: {margin: 0.6}\ndetect: {min_face_size: 20}\n")  # the checkpoint wins over these

    def boxes(model, *flags):
        rep = tmp_path / f"rep_{model.stem}_{len(flags)}"
        assert main(["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models", str(model), "--frames", "4",
                     "--params", str(params), "--report", str(rep), "--device", "cpu", *flags]) == 0
        faces = _report(rep, "portrait.mp4")["faces"]
        return np.array([f["box"] for f in faces], float), capsys.readouterr().out

    wide_boxes, out = boxes(tiny_checkpoint)
    assert "detector and crops as the models were trained" in out
    narrow_boxes, _ = boxes(narrow)
    w_wide, w_narrow = ((b[:, 2] - b[:, 0]).mean() for b in (wide_boxes, narrow_boxes))
    assert w_narrow / w_wide == pytest.approx(1.2 / 1.6, rel=0.03)  # margin 0.1 vs 0.3 of the face box each side
    flagged, out = boxes(narrow, "--margin", "0.3")
    np.testing.assert_allclose(flagged, wide_boxes)
    assert "from flags (overriding the checkpoints): margin 0.3" in out


def test_models_trained_with_other_detector_settings_need_a_flag(tiny_checkpoint, odd_inputs, tmp_path, capsys):
    ck = checkpoint.load(tiny_checkpoint)
    other = _variant(tiny_checkpoint, tmp_path / "other.pt", name="other",
                     preprocess={**ck.preprocess, "detect": {**ck.preprocess["detect"], "min_face_size": 30}})
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(odd_inputs / "portrait.mp4", one / "portrait.mp4")
    base = ["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint), str(other),
            "--frames", "4", "--device", "cpu"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tiny: min_face_size 40; other: min_face_size 30" in err and "--min-face-size" in err
    assert main(base + ["--min-face-size", "30"]) == 0
    assert "min_face_size 30" in capsys.readouterr().out


def test_predict_scores_with_the_evaluated_ensemble(tiny_checkpoint, odd_inputs, tmp_path, capsys):
    models = tmp_path / "models"
    for name in ("a", "b"):
        (models / name).mkdir(parents=True)
    ck = checkpoint.load(tiny_checkpoint)
    weights = dict(ck.weights)
    weights["backbone.fc.bias"] = weights["backbone.fc.bias"] + 3.0  # b scores everything more fake
    shutil.copy(tiny_checkpoint, models / "a" / "best.pt")
    _variant(tiny_checkpoint, models / "b" / "best.pt", name="b", weights=weights)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(odd_inputs / "portrait.mp4", one / "portrait.mp4")
    run = lambda *flags: (main(["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models-dir", str(models),  # noqa: E731
                                "--frames", "4", "--device", "cpu", *flags]), _rows(tmp_path / "s.csv"))
    _, alone_a = run("--models", "a")
    _, alone_b = run("--models", "b")
    _, equal = run()  # no ensemble file yet: every model, equal weights
    assert "equal weights (no" in capsys.readouterr().out
    assert equal["portrait.mp4"] == pytest.approx((alone_a["portrait.mp4"] + alone_b["portrait.mp4"]) / 2, abs=2e-6)
    from dfdc.store import file_sha256

    write_ensemble(models / "ensemble.json", {n: {"checkpoint": models / n / "best.pt", "weight": w,
                                                  "sha256": file_sha256(models / n / "best.pt")}
                                              for n, w in (("a", 0.25), ("b", 0.75))},
                   method="fitted", strategy="mean", tta=False, metrics={})
    _, weighted = run()
    out = capsys.readouterr().out
    assert "the evaluated ensemble" in out and "strategy mean" in out
    _, mean_a = run("--models", "a", "--strategy", "mean")
    _, mean_b = run("--models", "b", "--strategy", "mean")
    assert weighted["portrait.mp4"] == pytest.approx(0.25 * mean_a["portrait.mp4"] + 0.75 * mean_b["portrait.mp4"],
                                                     abs=2e-6)
    shutil.copy(tiny_checkpoint, models / "b" / "best.pt")  # b retrained after evaluate
    capsys.readouterr()
    run()
    assert "b changed since `evaluate` scored" in capsys.readouterr().err


def test_models_trained_on_the_sample_only_say_so_once(tiny_checkpoint, odd_inputs, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    for name in ("portrait.mp4", "still.png"):
        shutil.copy(odd_inputs / name, one / name)
    assert main(["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint),
                 "--frames", "4", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("trained only on the built-in synthetic sample") == 1 and "mean nothing" in err
    ck = checkpoint.load(tiny_checkpoint)
    real = _variant(tiny_checkpoint, tmp_path / "real.pt", data={**ck.data, "datasets": {"dfdc": 100}})
    assert main(["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models", str(real), "--frames", "4",
                 "--device", "cpu"]) == 0
    assert "synthetic" not in capsys.readouterr().err


def test_sparse_detection_carries_faces_to_every_sampled_frame(odd_inputs, tiny_checkpoint, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(odd_inputs / "portrait.mp4", one / "portrait.mp4")
    rep = tmp_path / "report"
    assert main(["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint),
                 "--frames", "8", "--detect-every", "10", "--report", str(rep), "--device", "cpu"]) == 0
    good = _report(rep, "portrait.mp4")
    detected = {f["frame"] for f in good["faces"] if f["detected"]}
    carried = {f["frame"] for f in good["faces"] if not f["detected"]}
    assert detected and carried and not detected & carried
    assert detected | carried == set(good["frames"])  # one face, carried to every sampled frame
    assert good["frames"][0] in detected and good["frames"][-1] in detected
    dense = tmp_path / "dense"
    assert main(["predict", str(one), "-o", str(tmp_path / "d.csv"), "--models", str(tiny_checkpoint),
                 "--frames", "8", "--detect-every", "1", "--report", str(dense), "--device", "cpu"]) == 0
    faces = _report(dense, "portrait.mp4")["faces"]
    assert faces and all(f["detected"] for f in faces)


def test_threads_do_not_change_scores(odd_inputs, tiny_checkpoint, detector):
    from dfdc.inference.load import Scoring
    from dfdc.inference.scorer import from_checkpoint
    from dfdc.inference.video import predict_videos

    files = sorted(p for p in odd_inputs.iterdir() if p.suffix == ".mp4" and not p.name.startswith("."))[:8]
    models = [from_checkpoint(tiny_checkpoint)]
    threads = torch.get_num_threads()
    scoring = Scoring.of(models, frames=6)
    one = predict_videos(files, scoring, detector, workers=0, progress=False)
    two = predict_videos(files, scoring, detector, workers=2, progress=False)
    assert [r.prob for r in one] == [r.prob for r in two] and [r.reason for r in one] == [r.reason for r in two]
    assert torch.get_num_threads() == threads  # the per-worker thread count is restored


def test_thresholds_and_temperature_come_from_the_ensemble_file(odd_inputs, tiny_checkpoint, tmp_path, capsys):
    from dfdc.inference.aggregate import aggregate_tracks
    from dfdc.inference.combine import apply_temperature
    from dfdc.inference.ensemble import read_ensemble

    models = tmp_path / "models"
    (models / "a").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, models / "a" / "best.pt")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(odd_inputs / "portrait.mp4", one / "portrait.mp4")
    rules = [[0.3, 0.5], [0.1, 0.9]]
    write_ensemble(models / "ensemble.json", {"a": {"checkpoint": models / "a" / "best.pt", "weight": 1.0,
                                                    "rules": rules, "rules_from": "data/preds/a/thresholds.json"}},
                   method="equal", strategy="thresholds", tta=False, metrics={}, temperature=2.0)
    shipped = read_ensemble(models / "ensemble.json")
    assert shipped.temperature == 2.0 and shipped.members[0].rules == ((0.3, 0.5), (0.1, 0.9))
    rep = tmp_path / "report"
    assert main(["predict", str(one), "-o", str(tmp_path / "s.csv"), "--models-dir", str(models), "--frames", "6",
                 "--device", "cpu", "--report", str(rep)]) == 0
    assert "strategy thresholds" in (out := capsys.readouterr().out) and "temperature 2.000" in out
    doc = _report(rep, "portrait.mp4")
    faces = doc["faces"]
    raw = aggregate_tracks([f["model_probs"]["a"] for f in faces], [f["track"] for f in faces], "thresholds",
                           rules=shipped.members[0].rules)
    assert doc["model_probs"]["a"] == pytest.approx(raw)
    assert _rows(tmp_path / "s.csv")["portrait.mp4"] == pytest.approx(
        float(np.clip(apply_temperature(raw, 2.0), 0.01, 0.99)), abs=2e-6)
    # without fitted rules the strategy cannot run: a clear error, not a silent mean
    assert main(["predict", str(one), "-o", str(tmp_path / "t.csv"), "--models", str(models / "a" / "best.pt"),
                 "--strategy", "thresholds", "--device", "cpu"]) == 2
    assert "needs rules fitted on the holdout" in capsys.readouterr().err


def test_library_log_lines_stay_out_of_the_terminal_unless_verbose(odd_inputs, tiny_checkpoint, tmp_path, capfd,
                                                                   caplog):
    from dfdc.video import library_logs

    d = tmp_path / "in"
    d.mkdir()
    for name in ("cut.mp4", "notes.txt", "portrait.mp4"):
        shutil.copy(odd_inputs / name, d / name)
    args = ["predict", str(d), "-o", str(tmp_path / "s.csv"), "--models", str(tiny_checkpoint), "--device", "cpu"]
    try:
        assert main(args) == 0
        quiet = capfd.readouterr().err
        assert "partial file" not in quiet and "WARN" not in quiet and "moov" not in quiet, quiet
        assert not [r for r in caplog.records if r.name.startswith("libav")]
        assert main(["--verbose", *args]) == 0
        # FFmpeg's own line about cut.mp4, through Python's logging (on the terminal when nothing else catches it)
        assert any("partial file" in r.getMessage() for r in caplog.records if r.name.startswith("libav"))
    finally:
        library_logs(False)
