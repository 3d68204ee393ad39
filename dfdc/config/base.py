"""The params loader.

Each stage reads its sections of ``params.yaml`` into dataclasses. Unknown keys,
missing required keys, wrong types and out-of-range values raise
:class:`ParamsError` naming the dotted key and the file.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml


class ParamsError(ValueError):
    """A params file holds an unknown key or a bad value."""


def _check(meta: dict, value: Any) -> str | None:
    if "ge" in meta and value < meta["ge"]:
        return f"must be >= {meta['ge']}, got {value!r}"
    if "gt" in meta and value <= meta["gt"]:
        return f"must be > {meta['gt']}, got {value!r}"
    if "le" in meta and value > meta["le"]:
        return f"must be <= {meta['le']}, got {value!r}"
    return None


def rng(ge: float | None = None, gt: float | None = None, le: float | None = None, **kw: Any) -> Any:
    """A dataclass field with a numeric range check."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    return field(metadata=meta, **kw)


def _convert(tp: Any, value: Any, key: str, file: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ParamsError:
        return ParamsError(f"{file}: {key}: expected {expected}, got {value!r}")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # an optional value: the one type's own message
            return _convert(options[0], value, key, file)
        for a in options:
            try:
                return _convert(a, value, key, file)
            except ParamsError:
                pass
        raise bad(" or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{file}: {key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return from_dict(tp, value, prefix=key, file=file)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {k: _convert(args[1], v, f"{key}.{k}", file) for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        item = args[0] if args else Any
        return [_convert(item, v, f"{key}[{i}]", file) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise TypeError(f"unsupported params type {tp!r} for {key}")


def from_dict(cls: type, data: dict, prefix: str, file: str = "params.yaml") -> Any:
    """Build dataclass ``cls`` from ``data``; errors name ``prefix.key`` and ``file``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(
            f"{file}: {prefix}.{unknown[0]}: unknown key (valid keys: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{file}: {key}: required key is missing")
            continue
        value = _convert(hints[name], data[name], key, file)
        problem = _check(f.metadata, value) if value is not None else None
        if problem:
            raise ParamsError(f"{file}: {key}: {problem}")
        kwargs[name] = value
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if post is not None:
        try:
            post()
        except ValueError as e:
            raise ParamsError(f"{file}: {prefix}.{e}") from None
    return obj


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.1's safe loader, reading YAML 1.2 floats too: DVC writes ``-S lr=0.00002`` back as ``2e-05``,
    which YAML 1.1 takes for a string."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """A params document: YAML, with floats as DVC writes them (``2e-05``)."""
    return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def read_params(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of the YAML params file at ``path``."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        doc = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return doc


def load_section(path: str | Path, name: str, cls: type) -> Any:
    """Read section ``name`` of the YAML file at ``path`` as dataclass ``cls`` (absent: its defaults)."""
    section = read_params(path).get(name, {})
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ParamsError(f"{path}: {name}: expected a mapping, got {section!r}")
    return from_dict(cls, section, prefix=name, file=str(path))


class Section:
    """Base of a params section dataclass: ``SECTION`` names its key in the params file."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """This section of the params file at ``path``."""
        return load_section(path, cls.SECTION, cls)
