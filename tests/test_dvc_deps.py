"""dvc.yaml's code deps: every stage lists each dfdc module it imports (no more), as `dfdc deps --write` writes them."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from dfdc import codehash
from dfdc.cli import main
from dfdc.deps import check_or_write, code_deps

REPO = Path(__file__).resolve().parents[1]


def imported_files(script: str) -> set[str]:
    """Repo-relative files a script runs: itself and every dfdc module it imports, transitively."""
    return {p.relative_to(REPO).as_posix() for p in codehash.imported_files(REPO / script, root=REPO)}


def _stages() -> dict[str, dict]:
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: s.get("do", s) for name, s in doc.items()}


def test_every_stage_lists_the_modules_it_imports():
    stale = check_or_write(REPO / "dvc.yaml")
    assert stale == [], f"the code deps of {stale} in dvc.yaml are stale: run `dfdc deps --write`"


def test_a_stale_list_is_found_and_rewritten(tmp_path, capsys):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "dfdc", copy / "dfdc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "stages", copy / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    text = (REPO / "dvc.yaml").read_text()
    assert "dfdc/masks.py," in text
    (copy / "dvc.yaml").write_text(text.replace("dfdc/masks.py,", "", 1))
    assert main(["deps", "--dvc-yaml", str(copy / "dvc.yaml")]) == 1
    assert "run `dfdc deps --write`" in capsys.readouterr().err
    assert main(["deps", "--write", "--dvc-yaml", str(copy / "dvc.yaml")]) == 0
    assert (copy / "dvc.yaml").read_text() == text  # only the deps line changed back; comments and layout stay
    (copy / "dfdc" / "unused.py").write_text("X = 1\n")  # a module no stage imports changes no list
    assert check_or_write(copy / "dvc.yaml") == []


def test_deps_cover_exactly_what_each_stage_runs():
    for name, s in _stages().items():
        script = next(w for w in s["cmd"].split() if w.startswith("stages/"))
        deps = [d for d in s["deps"] if d.startswith(("stages/", "dfdc/"))]
        assert deps == code_deps(script), name
        files = imported_files(script)
        covered = {f for f in files if any(f == d or f.startswith(d + "/") for d in deps)}
        assert covered == files, name
        for d in deps:  # a folder stands for its files only when the stage runs every one of them
            if (REPO / d).is_dir():
                assert {p.relative_to(REPO).as_posix() for p in (REPO / d).rglob("*.py")} <= files, (name, d)


def test_no_stage_depends_on_a_section_it_does_not_read():
    """Adding a params section (a new module under dfdc/config) reruns no stage."""
    for name, s in _stages().items():
        script = next(w for w in s["cmd"].split() if w.startswith("stages/"))
        config = {f for f in imported_files(script) if f.startswith("dfdc/config/")}
        assert "dfdc/config/sections.py" not in config, name
        assert config - {"dfdc/config/__init__.py", "dfdc/config/base.py"}, name


def test_the_import_scan_sees_function_level_imports():
    assert "dfdc/faces/detector.py" in imported_files("stages/detect.py")
    assert "dfdc/data/clips.py" in imported_files("stages/predict.py")  # imported inside score_table
    assert "dfdc/faces/detector.py" not in imported_files("stages/sample.py")  # the sample needs no detector
