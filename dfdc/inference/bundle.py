"""The shippable detector: one file holding an evaluated ensemble and everything needed to score with it.

A bundle is a safetensors file (tensors and a string header: reading it never runs code). Its tensors are
each member's weights (``members/I/KEY``) and, with ``onnx=True``, each member's ONNX graph as bytes
(``onnx/I``). Its header holds ``format``, the ``manifest`` (JSON) and the manifest's SHA-256. The manifest
names, per member, what the model is (params, spec), the detect / crops / clips settings of its training
inputs, what data it was trained on, its weight and fitted threshold rules and the SHA-256 of its tensors;
and for the ensemble: weighting method, strategy, TTA, temperature, holdout metrics, the dfdc version.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT = "dfdc-bundle-1"
SUFFIX = ".dfdc"


class BundleError(ValueError):
    """A file is not a dfdc bundle this version can use: one line naming what is wrong."""


@dataclass
class BundleMember:
    """One model of a bundle: its checkpoint (in memory), ensemble weight, rules and ONNX graph if exported."""

    checkpoint: Any  # dfdc.models.checkpoint.Checkpoint
    weight: float
    rules: tuple[tuple[float, float], ...] | None = None
    onnx: bytes | None = None

    @property
    def name(self) -> str:
        return self.checkpoint.name


@dataclass
class Bundle:
    members: list[BundleMember]
    ensemble: Any  # dfdc.inference.ensemble.Ensemble (strategy, tta, temperature, method, metrics)
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors in key order: each key, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_bundle(out: str | Path, *, ensemble_file: str | Path | None = None, models: list[str] | None = None,
                 models_dir: str | Path = "models", onnx: bool = False) -> dict[str, Any]:
    """Write the ensemble (``ensemble_file``, else ``models`` with equal weights, else MODELS_DIR/ensemble.json)
    to ``out`` as one bundle; returns its manifest. Members of weight 0 are left out.

    A member whose checkpoint changed since `evaluate` scored it is refused (the bundle would ship numbers it
    does not have). ``onnx`` adds each member's ONNX graph where the export works (see the manifest's
    ``onnx`` entry per member).
    """
    from safetensors.torch import save_file

    import dfdc
    from dfdc.inference.ensemble import ENSEMBLE_FILE, Member, read_ensemble, resolve_models
    from dfdc.models.checkpoint import load
    from dfdc.store import atomic_path, file_sha256

    if models and ensemble_file:
        raise ValueError("--models and --ensemble both choose the models: pass one of them")
    if models:
        paths = resolve_models(models, models_dir)
        names = [p.parent.name if p.name == "best.pt" else p.stem for p in paths]
        # two checkpoints of one name (runs1/a/best.pt, runs2/a/best.pt) are told apart by their paths
        members = [Member(str(p) if names.count(n) > 1 else n, p, 1.0) for n, p in zip(names, paths)]
        ens: dict[str, Any] = {"method": "equal (--models)", "strategy": None, "tta": None, "temperature": None,
                               "holdout": {}}
    else:
        ensemble = read_ensemble(ensemble_file or Path(models_dir) / ENSEMBLE_FILE)
        changed = ensemble.changed()
        if changed:
            raise ValueError(f"{', '.join(changed)} changed since `evaluate` scored {ensemble.path}: run `dvc repro` "
                             "so that the bundle ships the ensemble whose numbers it carries")
        members = [m for m in ensemble.members if m.weight > 0]
        ens = {"method": ensemble.method, "strategy": ensemble.strategy, "tta": ensemble.tta,
               "temperature": ensemble.temperature, "holdout": ensemble.metrics}
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for i, m in enumerate(members):
        ckpt = load(m.checkpoint)
        weights = {f"members/{i}/{k}": v.detach().cpu().contiguous().clone() for k, v in ckpt.weights.items()}
        tensors |= weights
        entry = {"name": m.name, "params": ckpt.params, "spec": ckpt.spec, "preprocess": ckpt.preprocess,
                 "data": ckpt.data, "synthetic_only": ckpt.synthetic_only, "epoch": ckpt.epoch, "best": ckpt.best,
                 "weight": float(m.weight), "rules": [list(r) for r in m.rules] if m.rules is not None else None,
                 "checkpoint_sha256": file_sha256(m.checkpoint), "sha256": tensors_sha256(weights), "onnx": None}
        if onnx:
            from dfdc.inference.onnx import export_onnx

            try:
                graph = export_onnx(ckpt.build_model("cpu"))
            except Exception as e:  # noqa: BLE001 - that member runs on torch; the manifest says why
                entry["onnx"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            else:
                key = f"onnx/{i}"
                tensors[key] = torch.frombuffer(bytearray(graph), dtype=torch.uint8)
                entry["onnx"] = {"sha256": hashlib.sha256(graph).hexdigest()}
        entries.append(entry)
    manifest = {"format": FORMAT, "dfdc_version": dfdc.__version__, "members": entries, "ensemble": ens,
                "trained_on": _trained_on(entries)}
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "manifest": text,
                                               "sha256": hashlib.sha256(text.encode()).hexdigest()})
    return manifest


def _trained_on(entries: list[dict]) -> dict[str, int]:
    """Videos per source dataset over the members (the largest count a member saw of each)."""
    out: dict[str, int] = {}
    for e in entries:
        for name, n in ((e.get("data") or {}).get("datasets") or {}).items():
            out[name] = max(out.get(name, 0), int(n))
    return out


def read_bundle(path: str | Path, device: torch.device | str = "cpu") -> Bundle:
    """Read and verify a bundle; any problem is a :class:`BundleError` with one line naming it."""
    from safetensors import safe_open

    from dfdc.inference.aggregate import check_rules
    from dfdc.inference.ensemble import Ensemble, Member
    from dfdc.models.checkpoint import Checkpoint

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: bundle not found" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            if meta.get("format") != FORMAT:
                raise BundleError(_format_error(path, meta.get("format")))
            text = meta.get("manifest", "")
            if hashlib.sha256(text.encode()).hexdigest() != meta.get("sha256"):
                raise BundleError(f"{path}: corrupted bundle: its manifest does not match its checksum")
            manifest = json.loads(text)
            members = []
            claimed: set[str] = set()
            for i, e in enumerate(manifest["members"]):
                if any(m.name == e["name"] for m in members):
                    raise BundleError(f"{path}: corrupted bundle: two members are named {e['name']!r}")
                prefix = f"members/{i}/"
                own = sorted(k for k in keys if k.startswith(prefix))
                if not own:
                    raise BundleError(f"{path}: member {e['name']!r} has no weights in the file")
                weights = {k: f.get_tensor(k) for k in own}
                if tensors_sha256(weights) != e["sha256"]:
                    raise BundleError(f"{path}: corrupted bundle: the weights of member {e['name']!r} do not match "
                                      "their checksum")
                graph = None
                if (e.get("onnx") or {}).get("sha256"):
                    key = f"onnx/{i}"
                    if key not in keys:
                        raise BundleError(f"{path}: member {e['name']!r} lists an ONNX graph the file lacks")
                    graph = f.get_tensor(key).numpy().tobytes()
                    if hashlib.sha256(graph).hexdigest() != e["onnx"]["sha256"]:
                        raise BundleError(f"{path}: corrupted bundle: the ONNX graph of member {e['name']!r} does "
                                          "not match its checksum")
                    claimed.add(key)
                claimed |= set(own)
                ckpt = Checkpoint(name=e["name"], params=e["params"], spec=e["spec"],
                                  weights={k[len(prefix):]: v.to(device) for k, v in weights.items()},
                                  preprocess=e.get("preprocess"), data=e.get("data"), epoch=int(e.get("epoch", -1)),
                                  best=e.get("best"), path=path)
                ckpt.model_params, ckpt.model_spec  # noqa: B018 - malformed params are refused here
                rules = check_rules(e["rules"], f"member {e['name']!r}") if e.get("rules") is not None else None
                weight = float(e["weight"])
                if not math.isfinite(weight) or weight < 0:
                    raise BundleError(f"{path}: member {e['name']!r}: weight must be finite and >= 0, got {weight}")
                members.append(BundleMember(ckpt, weight, rules, graph))
            extra = keys - claimed
            if extra:
                raise BundleError(f"{path}: corrupted bundle: it holds tensors no member claims "
                                  f"({', '.join(sorted(extra)[:3])})")
    except BundleError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the bytes are, one readable line
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{path}: not a dfdc bundle ({type(e).__name__}: {why})") from None
    if not members or sum(m.weight for m in members) <= 0:
        raise BundleError(f"{path}: the bundle has no member with a positive weight")
    ens = manifest.get("ensemble") or {}
    ensemble = Ensemble([Member(m.name, path, m.weight, "", m.rules) for m in members], ens.get("method", "equal"),
                        ens.get("strategy"), ens.get("tta"), ens.get("temperature"), ens.get("holdout") or {}, path)
    return Bundle(members, ensemble, manifest, path)


def _format_error(path: Path, found: str | None) -> str:
    import dfdc

    if found is None:
        return f"{path}: not a dfdc bundle (a safetensors file without dfdc's header)"
    if found.startswith("dfdc-bundle-"):
        return (f"{path}: a dfdc bundle of format {found!r}; this dfdc ({dfdc.__version__}) reads {FORMAT!r}: "
                "export it again with `dfdc export`")
    return f"{path}: not a dfdc bundle (format {found!r}, expected {FORMAT!r})"


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a file (not a folder or a JSON file) to be read as a bundle."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() != ".json"
