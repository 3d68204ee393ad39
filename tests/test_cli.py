"""The `dfdc` command's dataset tools: sample, manifest, summary."""
import json

from dfdc.cli import main


def test_sample_manifest_and_summary(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", "--out", str(out), "--videos", "3", "--seed", "3"]) == 0
    meta = json.loads((out / "dfdc_train_part_0" / "metadata.json").read_text())
    assert sorted(v["label"] for v in meta.values()) == ["FAKE", "FAKE", "REAL"]
    assert "1 real + 2 fake videos in 1 parts" in capsys.readouterr().out

    assert main(["manifest", str(out), "-o", str(tmp_path / "m.txt")]) == 0
    lines = (tmp_path / "m.txt").read_text().splitlines()
    assert sum(line.startswith("video") for line in lines) == 3
    assert sum(line.startswith("metadata") for line in lines) == 1

    assert main(["summary", "--index", str(tmp_path / "none.parquet")]) == 0
    assert "not built yet" in capsys.readouterr().out


def test_missing_root_is_an_error(tmp_path, capsys):
    assert main(["manifest", str(tmp_path / "nope"), "-o", str(tmp_path / "m.txt")]) == 2
    assert "error:" in capsys.readouterr().err
