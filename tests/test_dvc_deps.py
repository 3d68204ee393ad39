"""dvc.yaml's code deps: every stage lists each dfdc module it imports (no more), and each section is its own file."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    p = REPO.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imports(path: Path) -> set[str]:
    """dfdc modules named by every import statement in ``path``, function-level ones included
    (``if TYPE_CHECKING:`` blocks excluded: they never run)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            t = node.test
            if getattr(t, "id", None) == "TYPE_CHECKING" or getattr(t, "attr", None) == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dfdc")

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level == 0 and node.module and node.module.split(".")[0] == "dfdc":
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`

    Visitor().visit(ast.parse(path.read_text()))
    return found


def imported_files(script: str) -> set[str]:
    """Repo-relative files a script runs: itself and every dfdc module it imports, transitively."""
    seen: set[Path] = set()
    todo = [REPO / script]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for module in _imports(f):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                mf = _module_file(".".join(parts[:i]))
                if mf is not None and mf not in seen:
                    todo.append(mf)
    return {p.relative_to(REPO).as_posix() for p in seen}


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
