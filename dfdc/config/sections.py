"""Every params section, for tools that check a whole file (a stage imports only its own)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dfdc.config.base import ParamsError, load_section, read_params
from dfdc.config.clips import ClipsParams
from dfdc.config.crops import CropsParams
from dfdc.config.data import DataParams
from dfdc.config.degrade import DegradeParams
from dfdc.config.detect import DetectParams
from dfdc.config.evaluate import EvaluateParams
from dfdc.config.folds import FoldsParams
from dfdc.config.index import IndexParams
from dfdc.config.landmarks import LandmarksParams
from dfdc.config.predict import PredictParams
from dfdc.config.sample import SampleParams
from dfdc.config.train import TrainParams

SECTIONS: dict[str, type] = {cls.SECTION: cls for cls in (
    SampleParams, DataParams, IndexParams, DetectParams, CropsParams, LandmarksParams, ClipsParams, FoldsParams,
    TrainParams, PredictParams, DegradeParams, EvaluateParams)}


def check_file(path: str | Path) -> dict[str, Any]:
    """Load every section of a params file; an unknown section is an error naming it."""
    doc = read_params(path)
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: {unknown[0]}: unknown section (valid: {', '.join(sorted(SECTIONS))})")
    return {name: load_section(path, name, SECTIONS[name]) for name in doc}
