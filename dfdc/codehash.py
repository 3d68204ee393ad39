"""Which source files a module runs, and a digest of them: what a resumable stage's record of finished
work carries, so that finished work is kept only under the code that made it."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_file(name: str, root: Path) -> Path | None:
    p = root.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imports(path: Path) -> set[str]:
    """dfdc modules named by every import statement in ``path``, function-level ones included
    (``if TYPE_CHECKING:`` blocks excluded: they never run; so is a package's module-level ``__getattr__``: its
    imports run only when a user's code asks the package for a lazy name (``from dfdc import Detector``); dfdc's
    own modules import those modules by their names)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            if node.name != "__getattr__" or node not in tree.body:
                self.generic_visit(node)

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

    tree = ast.parse(path.read_text())
    Visitor().visit(tree)
    return found


def imported_files(*starts: str | Path, root: Path = ROOT) -> set[Path]:
    """The files that running ``starts`` (scripts, or dotted dfdc module names) runs: themselves and every
    dfdc module they import, transitively (importing a.b.c runs a/__init__ and a/b/__init__ too)."""
    seen: set[Path] = set()
    todo = []
    for s in starts:
        f = _module_file(str(s), root) if isinstance(s, str) and not s.endswith(".py") else Path(s)
        if f is None:
            raise ValueError(f"no module {s!r} under {root}")
        todo.append(Path(f).resolve())
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for module in _imports(f):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                mf = _module_file(".".join(parts[:i]), root)
                if mf is not None and mf.resolve() not in seen:
                    todo.append(mf.resolve())
    return seen


def code_digest(*starts: str | Path, root: Path = ROOT) -> str:
    """SHA-256 over the paths and bytes of :func:`imported_files` (sorted; no bytecode, no caches)."""
    h = hashlib.sha256()
    for f in sorted(imported_files(*starts, root=root)):
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()
