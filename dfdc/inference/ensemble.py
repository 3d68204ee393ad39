"""The ensemble artifact: the members, weights and scoring that `evaluate` scored, read by `dfdc predict`."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfdc.store import file_sha256, write_json

ENSEMBLE_FILE = "ensemble.json"


@dataclass
class Member:
    name: str
    checkpoint: Path  # absolute, or relative to the current directory
    weight: float
    sha256: str = ""


@dataclass
class Ensemble:
    """What `evaluate` scored: members with weights, the aggregation strategy and TTA, its holdout metrics."""

    members: list[Member]
    method: str = "equal"
    strategy: str | None = None
    tta: bool | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def changed(self) -> list[str]:
        """Members whose checkpoint is no longer the file that was evaluated."""
        return [m.name for m in self.members
                if m.sha256 and (not m.checkpoint.is_file() or file_sha256(m.checkpoint) != m.sha256)]


def write_ensemble(path: str | Path, members: dict[str, dict[str, Any]], *, method: str, strategy: str,
                   tta: bool, metrics: dict[str, Any]) -> None:
    """Write the ensemble file; ``members`` maps names to {checkpoint, sha256, weight}.

    Checkpoint paths are stored relative to the file's folder when they lie under it.
    """
    path = Path(path)
    base = path.parent.resolve()
    out = {}
    for name, m in members.items():
        ck = Path(m["checkpoint"]).resolve()
        rel = ck.relative_to(base).as_posix() if ck.is_relative_to(base) else str(ck)
        out[name] = {"checkpoint": rel, "sha256": m.get("sha256", ""), "weight": float(m["weight"])}
    write_json({"members": out, "method": method, "strategy": strategy, "tta": tta, "holdout": metrics}, path)


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
            members.append(Member(name, ck if ck.is_absolute() else path.parent / ck, weight, m.get("sha256", "")))
    except FileNotFoundError:
        raise FileNotFoundError(f"ensemble file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a dfdc ensemble file ({type(e).__name__}: {e})") from None
    if not members or sum(m.weight for m in members) <= 0:
        raise ValueError(f"{path}: the ensemble has no member with a positive weight")
    return Ensemble(members, doc.get("method", "equal"), doc.get("strategy"), doc.get("tta"),
                    doc.get("holdout", {}), path)
