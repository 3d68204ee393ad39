"""dvc.yaml's code deps: every stage lists each dfdc module it imports (no more), and each section is its own file."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dfdc import codehash

REPO = Path(__file__).resolve().parents[1]


def imported_files(script: str) -> set[str]:
    """Repo-relative files a script runs: itself and every dfdc module it imports, transitively."""
    return {p.relative_to(REPO).as_posix() for p in codehash.imported_files(REPO / script, root=REPO)}


def _stages() -> dict[str, dict]:
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: s.get("do", s) for name, s in doc.items()}


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_every_module_it_imports(stage):
    s = _stages()[stage]
    script = next(w for w in s["cmd"].split() if w.startswith("stages/"))
    deps = [d for d in s["deps"] if d.startswith(("stages/", "dfdc/"))]
    missing = sorted(f for f in imported_files(script) if not _covered(f, deps))
    assert missing == [], f"{stage}: dvc.yaml deps lack {missing}"
    # and no code dep that the stage never runs (it would rerun the stage for nothing)
    files = imported_files(script)
    unused = [d for d in deps if not any(_covered(f, [d]) for f in files)]
    assert unused == [], f"{stage}: dvc.yaml lists {unused}, which the stage does not import"


def test_no_stage_depends_on_a_section_it_does_not_read():
    """Adding a params section (a new module under dfdc/config) reruns no stage."""
    for name, s in _stages().items():
        script = next(w for w in s["cmd"].split() if w.startswith("stages/"))
        config = {f for f in imported_files(script) if f.startswith("dfdc/config/")}
        assert "dfdc/config/sections.py" not in config, name
        sections = {Path(f).stem for f in config} - {"__init__", "base"}
        assert sections, name
        assert all(_covered(f, s["deps"]) for f in config), name


def test_the_import_scan_sees_function_level_imports():
    assert "dfdc/faces/detector.py" in imported_files("stages/detect.py")
    assert "dfdc/data/clips.py" in imported_files("stages/predict.py")  # imported inside score_table
    assert "dfdc/faces/detector.py" not in imported_files("stages/sample.py")  # the sample needs no detector
