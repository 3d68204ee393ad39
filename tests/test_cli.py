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


def test_summary_writes_the_results_page_between_its_markers(tmp_path, capsys):
    import pandas as pd

    from dfdc.config.evaluate import EvaluateParams
    from dfdc.eval.report import evaluate

    index = tmp_path / "index.parquet"
    pd.DataFrame({"video": ["r", "f"], "label": [0, 1], "ok": [True, True]}).to_parquet(index)
    preds = {"m": pd.DataFrame({"video": ["r", "f", "r2", "f2"], "label": [0, 1, 0, 1], "prob": [0.2, 0.9, 0.4, 0.6],
                                "fold": 0})}
    doc, _ = evaluate(preds, params=EvaluateParams(bootstrap=0))
    (tmp_path / "clean.json").write_text(json.dumps(doc))
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nkept\n<!-- dfdc summary: begin -->\nSTALE\n<!-- dfdc summary: end -->\nkept too\n")
    args = ["summary", "--index", str(index), "--metrics", str(tmp_path / "clean.json"),
            "--degraded", str(tmp_path / "none.json"), "--write", str(page)]
    assert main(args) == 0
    text = page.read_text()
    assert text.startswith("# Results\n\nkept\n") and text.endswith("<!-- dfdc summary: end -->\nkept too\n")
    assert "STALE" not in text and "index: 2 videos (1 real, 1 fake)" in text and "log_loss [95% CI]" in text
    assert main(args) == 0 and page.read_text() == text  # the same run: the same page
    page.write_text("# no markers\n")
    assert main(args) == 2 and "no <!-- dfdc summary: begin -->" in capsys.readouterr().err
