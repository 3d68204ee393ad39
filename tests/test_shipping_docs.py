"""The Python example of docs/shipping.md runs as written, on a real bundle and a real video."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "shipping.md"


def test_the_documented_python_example_runs(tiny_checkpoint, odd_inputs, tmp_path, monkeypatch, capsys):
    from dfdc.inference.bundle import write_bundle

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"no python example in {DOC}"
    write_bundle(tmp_path / "models" / "detector.dfdc", models=[str(tiny_checkpoint)])
    shutil.copy(odd_inputs / "portrait.mp4", tmp_path / "suspect.mp4")
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(DOC), "exec"), {})
    label, prob, *_ = capsys.readouterr().out.split()
    assert label in ("FAKE", "REAL") and 0.01 <= float(prob) <= 0.99
