"""Presets as DVC experiments: a preset file -> the `dvc exp run -S` overrides that apply it to params.yaml.

A preset that names the model table (``train.models`` or ``train.stacked``) replaces the
table whole: every entry of params.yaml's table is removed and each of the preset's added
(a stacked entry of params.yaml would otherwise name a backbone the preset removed). Every
other value the preset holds is set leaf by leaf. The overrides use DVC's Hydra grammar
(``~key`` removes, ``++key=value`` adds or overrides).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any


from dfdc.config.base import load_yaml
from dfdc.config.sections import SECTIONS
from dfdc.config.train import GROUPS

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_WORDS = {"true", "false", "null", "nan", "inf"}


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted unless plain; dicts and lists inline)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _WORDS:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as an override")


def _leaves(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(f"{prefix}.{k}", v)]
    return [(prefix, value)]


def preset_overrides(preset: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The overrides that turn ``params`` (params.yaml's content) into ``params`` with ``preset`` applied."""
    out: list[str] = []
    for section, body in preset.items():
        if section == "train" and isinstance(body, dict):
            table = [g for g in GROUPS if g in body]
            current = params.get("train") or {}
            for group in GROUPS if table else ():
                out += [f"~train.{group}.{name}" for name in (current.get(group) or {})]
            for key, value in body.items():
                if key in GROUPS:
                    if not isinstance(value, dict):
                        raise ValueError(f"train.{key}: a preset's group must be a mapping of model entries")
                    out += [f"++train.{key}.{name}={hydra_value(entry)}" for name, entry in value.items()]
                else:
                    out += [f"++{k}={hydra_value(v)}" for k, v in _leaves(f"train.{key}", value)]
            continue
        out += [f"++{k}={hydra_value(v)}" for k, v in _leaves(section, body)]
    return out


def exp_args(preset_file: str | Path, params_file: str | Path = "params.yaml") -> str:
    """``-S override`` arguments, shell-quoted, for `dvc exp run` (use with ``eval``)."""
    preset = load_yaml(Path(preset_file).read_text()) or {}
    params = load_yaml(Path(params_file).read_text()) or {}
    if not isinstance(preset, dict):
        raise ValueError(f"{preset_file}: a preset is a mapping of params.yaml sections")
    unknown = [k for k in preset if k not in SECTIONS]
    if unknown:
        raise ValueError(f"{preset_file}: {', '.join(map(str, unknown))} not a params.yaml section "
                         f"(a preset holds whole sections: {', '.join(SECTIONS)})")
    return " ".join(f"-S {shlex.quote(o)}" for o in preset_overrides(preset, params))
