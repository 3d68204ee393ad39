"""Load what scores raw videos: the shipped ensemble (or chosen checkpoints) and its resolved settings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Scoring:
    """The models (with their weights) and the resolved settings of one `dfdc predict` or bench run."""

    models: list  # of dfdc.inference.scorer.ScoringModel
    settings: Any  # dfdc.inference.settings.Settings
    device: Any  # torch.device
    source: str  # where the members and weights came from, for the summary line
    notes: list[str]  # warnings and notes to print once

    @classmethod
    def of(cls, models: list, device: str = "cpu", **flags: Any) -> "Scoring":
        """``models`` (with their own weights) and the settings ``flags`` give, else what the checkpoints were
        trained with, else the defaults (:func:`dfdc.inference.settings.resolve`)."""
        import torch

        from dfdc.inference.settings import resolve

        return cls(list(models), resolve(models, flags), torch.device(device), "the given models", [])


RUNTIMES = ("torch", "onnx")


def load_scoring(*, models: list[str] | None = None, ensemble_file: str | Path | None = None,
                 models_dir: str | Path = "models", bundle: str | Path | None = None, device: str = "auto",
                 params: str | Path | None = "params.yaml", flags: dict[str, Any] | None = None,
                 first_only: bool = False, runtime: str = "torch") -> Scoring:
    """Load the ensemble (``bundle``, ``models``, ``ensemble_file`` or MODELS_DIR/ensemble.json) and resolve its
    settings; ``runtime`` "onnx" runs the models as ONNX graphs through onnxruntime on the CPU.

    ``flags`` are explicit settings (detector, margin, strategy, tta; None: not given). A bundle carries its
    own settings: the params file is not read for it.
    """
    from dfdc.device import pick_device
    from dfdc.inference.ensemble import ENSEMBLE_FILE, read_ensemble, resolve_models
    from dfdc.inference.scorer import from_checkpoint, scoring_model
    from dfdc.inference.settings import resolve

    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    device = pick_device("cpu" if runtime == "onnx" and device == "auto" else device)
    if runtime == "onnx" and device.type != "cpu":
        raise ValueError(f"the ONNX runtime scores on the CPU, not {device}: pass --device cpu")
    notes: list[str] = []
    ensemble = None
    graphs: dict[str, bytes | None] = {}
    chosen = [k for k, v in (("--bundle", bundle), ("--models", models), ("--ensemble", ensemble_file)) if v]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} each choose the models: pass one of them")
    rules: dict[str, tuple] = {}  # () is a fit too: no rule beat the plain mean
    if bundle:
        from dfdc.inference.bundle import read_bundle

        b = read_bundle(bundle, device)
        ensemble = b.ensemble
        members = [(m.name, m.checkpoint, m.weight) for m in b.members]
        rules = {m.name: m.rules for m in b.members if m.rules is not None}
        graphs = {m.name: m.onnx for m in b.members}
        source = f"the bundle {bundle} ({ensemble.method} weights)"
        params = None
    else:
        ensemble_path = Path(ensemble_file) if ensemble_file else Path(models_dir) / ENSEMBLE_FILE
        if models:
            members = [(None, p, 1.0) for p in resolve_models(models, models_dir)]
            source = "equal weights (--models)"
        elif ensemble_file or ensemble_path.is_file():
            ensemble = read_ensemble(ensemble_path)
            members = [(m.name, m.checkpoint, m.weight) for m in ensemble.members if m.weight > 0]
            rules = {m.name: m.rules for m in ensemble.members if m.rules is not None}
            source = f"the evaluated ensemble {ensemble_path} ({ensemble.method} weights)"
            changed = ensemble.changed()
            if changed:
                notes.append(f"warning: {', '.join(changed)} changed since `evaluate` scored {ensemble_path}; "
                             "run `dvc repro` to score the ensemble you ship")
        else:
            members = [(None, p, 1.0) for p in resolve_models(None, models_dir)]
            source = f"equal weights (no {ensemble_path})"
    if first_only:
        members = members[:1]  # the bench's goal is stated for one small model
    loaded = [scoring_model(ck, device, name, weight) if bundle else from_checkpoint(ck, device, name=name,
                                                                                     weight=weight)
              for name, ck, weight in members]
    for m in loaded:
        m.rules = rules.get(m.name)
    names = [m.name for m in loaded]
    for m, (_, path, _) in zip(loaded, members):
        if names.count(m.name) > 1:  # two checkpoints trained under one name: tell them apart by file
            m.name = str(path)
    if runtime == "onnx":
        notes += to_onnx(loaded, graphs)
    synthetic = [m.name for m in loaded if m.synthetic_only]
    if synthetic:
        every = len(synthetic) == len(loaded)
        notes.append(f"note: {'every model here' if every else 'model'} ({', '.join(synthetic)}) was trained only "
                     "on the built-in synthetic sample: its scores on real videos mean nothing. Train on DFDC or "
                     "FaceForensics++ (data.root in params.yaml) for real use.")
    settings = resolve(loaded, flags or {}, params if params is not None and Path(params).is_file() else None,
                       ensemble)
    if ensemble is not None and ensemble.temperature is not None:
        if settings.strategy == ensemble.strategy:
            settings.temperature = ensemble.temperature
        else:
            notes.append(f"note: the ensemble's temperature was fitted for strategy {ensemble.strategy}; "
                         f"with {settings.strategy} its scores are not calibrated")
    return Scoring(loaded, settings, device, source + (", ONNX runtime" if runtime == "onnx" else ""), notes)


def to_onnx(models: list, graphs: dict[str, bytes | None]) -> list[str]:
    """Run each model as its ONNX graph (the bundle's, else exported now); a model whose export fails stays on
    torch, and the returned notes say so."""
    from dfdc.inference.onnx import OnnxNet, export_onnx

    notes = []
    for m in models:
        graph = graphs.get(m.name)
        try:
            m.model = OnnxNet(graph or export_onnx(m.model), m.spec)
        except Exception as e:  # noqa: BLE001 - that member still scores, on torch
            notes.append(f"note: {m.name} runs on torch: its ONNX export failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})")
    return notes
