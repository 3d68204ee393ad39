"""The ensemble artifact: the members, weights and scoring that `evaluate` scored, read by `dfdc predict`.

With the "thresholds" strategy each member carries its fitted rules and names
the artifact they came from (``data/preds/M/thresholds.json``); with
``evaluate.calibrate`` the file carries the ensemble's temperature.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfdc.inference.aggregate import check_rules
from dfdc.store import file_sha256, write_json

ENSEMBLE_FILE = "ensemble.json"


@dataclass
class Member:
    name: str
    checkpoint: Path  # absolute, or relative to the current directory
    weight: float
    sha256: str = ""
    rules: tuple[tuple[float, float], ...] | None = None  # the "thresholds" strategy's (t, k) pairs
    rules_from: str = ""


@dataclass
class Ensemble:
    """What `evaluate` scored: members with weights, the aggregation strategy and TTA, its holdout metrics."""

    members: list[Member]
    method: str = "equal"
    strategy: str | None = None
    tta: bool | None = None
    temperature: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def changed(self) -> list[str]:
        """Members whose checkpoint is no longer the file that was evaluated."""
        return [m.name for m in self.members
                if m.sha256 and (not m.checkpoint.is_file() or file_sha256(m.checkpoint) != m.sha256)]


def write_ensemble(path: str | Path, members: dict[str, dict[str, Any]], *, method: str, strategy: str,
                   tta: bool, metrics: dict[str, Any], temperature: float | None = None) -> None:
    """Write the ensemble file; ``members`` maps names to {checkpoint, sha256, weight[, rules, rules_from]}.

    Checkpoint paths are stored relative to the file's folder when they lie under it.
    """
    path = Path(path)
    base = path.parent.resolve()
    out = {}
    for name, m in members.items():
        ck = Path(m["checkpoint"]).resolve()
        rel = ck.relative_to(base).as_posix() if ck.is_relative_to(base) else str(ck)
        out[name] = {"checkpoint": rel, "sha256": m.get("sha256", ""), "weight": float(m["weight"])}
        if m.get("rules") is not None:
            out[name] |= {"rules": [list(map(float, r)) for r in m["rules"]], "rules_from": m.get("rules_from", "")}
    write_json({"members": out, "method": method, "strategy": strategy, "tta": tta, "temperature": temperature,
                "holdout": metrics}, path)


def read_ensemble(path: str | Path) -> Ensemble:
    """Read an ensemble file; problems are a ValueError naming the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        members = []
        for name, m in doc["members"].items():
            weight = float(m["weight"])
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"member {name!r}: weight must be finite and >= 0, got {weight}")
            ck = Path(m["checkpoint"])
            rules = check_rules(m["rules"], f"member {name!r}") if m.get("rules") is not None else None
            members.append(Member(name, ck if ck.is_absolute() else path.parent / ck, weight, m.get("sha256", ""),
                                  rules, m.get("rules_from", "")))
        temperature = doc.get("temperature")
        if temperature is not None and not (math.isfinite(float(temperature)) and float(temperature) > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    except FileNotFoundError:
        raise FileNotFoundError(f"ensemble file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a dfdc ensemble file ({type(e).__name__}: {e})") from None
    if not members or sum(m.weight for m in members) <= 0:
        raise ValueError(f"{path}: the ensemble has no member with a positive weight")
    return Ensemble(members, doc.get("method", "equal"), doc.get("strategy"), doc.get("tta"),
                    None if temperature is None else float(temperature), doc.get("holdout", {}), path)


def resolve_models(names: list[str] | None, models_dir: str | Path = "models") -> list[Path]:
    """Checkpoint paths for ``--models``: files as given, names as MODELS_DIR/NAME/best.pt (default: all)."""
    models_dir = Path(models_dir)
    available = sorted(p.parent.name for p in models_dir.glob("*/best.pt"))
    if not names:
        if not available:
            raise FileNotFoundError(f"no trained model in {models_dir}/*/best.pt: run `dvc repro` or pass --models")
        return [models_dir / n / "best.pt" for n in available]
    out = []
    for name in names:
        path = Path(name) if Path(name).suffix in (".pt", ".pth") else models_dir / name / "best.pt"
        if not path.is_file():
            raise FileNotFoundError(f"model {name!r} not found at {path} (available: {', '.join(available) or 'none'})")
        out.append(path)
    return out
