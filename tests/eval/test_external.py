import csv
import json

import pandas as pd
import pytest

from dfdc.cli import main
from dfdc.eval.external import read_labels


def test_dfdc_evaluate_on_ffpp_pairs(ffpp_root, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ext"
    code = main(["evaluate", str(ffpp_root), "--models", str(tiny_checkpoint), "--out-dir", str(out), "--frames", "6",
                 "--bootstrap", "100", "--device", "cpu"])
    assert code == 0
    videos = pd.read_csv(out / "videos.csv")
    assert len(videos) == 4 and sorted(videos["label"]) == [0, 0, 1, 1] and videos["video"].is_unique
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["ensemble"]["n"] == 4 and doc["scored"]["videos"] == 4
    assert set(doc["by_method"]) == {"Deepfakes", "FaceSwap"}
    for method in doc["by_method"].values():
        assert method["video"]["ensemble"]["n"] == 3  # its fake against both reals
    assert "frame" in doc and doc["frame"]["ensemble"]["n"] > 4
    assert {"auc_lo", "auc_hi", "log_loss_lo", "log_loss_hi"} <= set(doc["ensemble"])
    for plot in ("roc.png", "calibration.png", "roc.csv"):
        assert (out / "plots" / plot).is_file()
    # the ensemble scores are the submission's: scored by dfdc predict's path
    sub = tmp_path / "s.csv"
    assert main(["predict", str(ffpp_root / "original_sequences/youtube/c23/videos"), "-o", str(sub),
                 "--models", str(tiny_checkpoint), "--frames", "6", "--device", "cpu"]) == 0
    probs = dict(pd.read_csv(sub).itertuples(index=False))
    for v, p in zip(videos["video"], videos["prob"]):
        if v.split("/")[-1] in probs and "original_sequences" in v:
            assert p == pytest.approx(probs[v.split("/")[-1]], abs=1e-6)
    assert "per manipulation method" in capsys.readouterr().out


def test_a_folder_without_labels_is_a_clear_error(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"")
    assert main(["evaluate", str(tmp_path / "v"), "--models", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset layout" in err and "--labels" in err


def test_labels_csv(tmp_path):
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label", "method"])
        w.writerow(["a, b é.mp4", "FAKE", "x"])
        w.writerow(["c.mp4", "0", ""])
    t = read_labels(tmp_path, path)
    assert t["label"].tolist() == [1, 0] and t["video"][0] == "a, b é.mp4" and pd.isna(t["method"][1])
    with open(path, "a", newline="") as f:
        f.write("d.mp4,maybe,\n")
    with pytest.raises(ValueError, match="line 4"):
        read_labels(tmp_path, path)
