"""`dfdc deps`: every stage's code dependencies in dvc.yaml, written from the modules the stage imports.

The same import scan as the code digest of resumable work (:mod:`dfdc.codehash`): a stage depends on its
script and on every dfdc module it runs, transitively, function-level imports included. A package folder
stands for its files when the stage imports every one of them. A stage's other deps (data,
``${data.deps}``) follow the code in their order. Only the ``deps:`` entries of dvc.yaml are rewritten
(one wrapped flow list each); every other line stays as it is.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from dfdc.codehash import ROOT, imported_files

CODE = ("stages/", "dfdc/")
WIDTH = 110
_KEY = re.compile(r"^(?P<indent>\s+)deps:(?P<anchor>\s*&\w+)?\s*(?P<rest>.*)$")
_STAGE = re.compile(r"^  (?P<name>[A-Za-z_][\w-]*):\s*(#.*)?$")


def code_deps(script: str, root: Path = ROOT) -> list[str]:
    """Repo-relative code deps of stage script ``script``: itself, then the dfdc files it runs, a package
    folder standing for its files when every one of them runs."""
    files = imported_files(root / script, root=root)
    out: list[str] = []

    def walk(folder: Path) -> None:
        for child in sorted(folder.iterdir()):
            if child.is_dir():
                inside = {f.resolve() for f in child.rglob("*.py") if "__pycache__" not in f.parts}
                if inside and inside <= files:
                    out.append(child.relative_to(root).as_posix())
                elif inside & files:
                    walk(child)
            elif child.suffix == ".py" and child.resolve() in files:
                out.append(child.relative_to(root).as_posix())

    walk(root / "dfdc")
    return [script, *out]


def _is_code(dep: object) -> bool:
    return isinstance(dep, str) and dep.startswith(CODE)


def _item(dep: str) -> str:
    return f'"{dep}"' if re.search(r"[${}\[\],:#&*!|>'\"%@`]", dep) else dep


def _flow(indent: str, anchor: str, items: list[str]) -> list[str]:
    """``deps: [a, b, ...]`` wrapped at WIDTH, continuation lines under the first item."""
    head = f"{indent}deps:{anchor} ["
    pad = " " * len(head)
    lines, line = [], head
    for k, item in enumerate(items):
        piece = item + ("]" if k == len(items) - 1 else ",")
        if line not in (head, pad) and len(line) + 1 + len(piece) > WIDTH:
            lines.append(line)
            line = pad
        line += ("" if line in (head, pad) else " ") + piece
    return lines + [line]


def _extent(lines: list[str], i: int, indent: str, rest: str) -> int:
    """The index after the last line of the deps value that starts on line ``i``."""
    if rest.startswith("["):
        j = i
        while "]" not in lines[j].split("#")[0]:
            j += 1
        return j + 1
    j = i + 1
    while j < len(lines) and (lines[j].strip() == "" or lines[j].startswith(indent + "  ")
                              or lines[j].startswith(indent + "- ")):
        if lines[j].strip() == "" and (j + 1 >= len(lines) or not lines[j + 1].startswith(indent + " ")):
            break
        j += 1
    return j


def updated(dvc_yaml: str | Path = ROOT / "dvc.yaml") -> tuple[str, list[str]]:
    """(dvc.yaml's text with every stage's code deps written anew, the stages whose text changed)."""
    path = Path(dvc_yaml)
    root = path.resolve().parent
    text = path.read_text()
    stages = yaml.safe_load(text)["stages"]
    lines = text.splitlines()
    out: list[str] = []
    changed: list[str] = []
    stage, i = None, 0
    while i < len(lines):
        line = lines[i]
        m = _STAGE.match(line)
        if m:
            stage = m.group("name")
        k = _KEY.match(line)
        if not k or stage is None or k.group("rest").startswith("*"):
            out.append(line)
            i += 1
            continue
        body = stages[stage].get("do", stages[stage])
        script = next(w for w in str(body["cmd"]).split() if w.startswith("stages/"))
        deps = [d for d in body["deps"] if not _is_code(d)]
        items = [_item(str(d)) for d in code_deps(script, root) + deps]
        end = _extent(lines, i, k.group("indent"), k.group("rest"))
        new = _flow(k.group("indent"), k.group("anchor") or "", items)
        if new != lines[i:end]:
            changed.append(stage)
        out += new
        i = end
    return "\n".join(out) + "\n", changed


def check_or_write(dvc_yaml: str | Path = ROOT / "dvc.yaml", write: bool = False) -> list[str]:
    """The stages whose code deps are stale; with ``write``, dvc.yaml is rewritten with them fixed."""
    text, changed = updated(dvc_yaml)
    if write and changed:
        Path(dvc_yaml).write_text(text)
    return changed
