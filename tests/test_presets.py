"""The GPU recipes in presets/ are valid params: known sections and keys, registered architectures."""
from pathlib import Path

import pytest
import yaml

from dfdc.config.base import from_dict
from dfdc.config.sections import SECTIONS, check_file
from dfdc.config.train import ModelParams
from dfdc.models import list_models

PRESETS = sorted((Path(__file__).resolve().parents[1] / "presets").glob("*.yaml"))


def test_there_is_a_preset_per_seed_family():
    assert {p.stem for p in PRESETS} >= {"dfdc_1st_place", "medics_3d_ensemble", "ntech_sequence",
                                         "lstm_frozen_backbone"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_names_registered_models(preset):
    doc = yaml.safe_load(preset.read_text())
    if set(doc) <= set(SECTIONS):  # whole sections, merged into params.yaml
        sections = check_file(preset)
        entries = sections["train"].all_models() if "train" in sections else {}
        if sections["train"].clips or sections["train"].clips_stacked:
            assert "clips" in sections  # clip models come with the clips that feed them
    else:  # entries of train.models
        entries = {k: from_dict(ModelParams, v, f"train.models.{k}", str(preset)) for k, v in doc.items()}
    assert entries
    unknown = sorted({p.arch for p in entries.values()} - set(list_models()))
    assert not unknown, f"{preset.name}: unregistered architectures {unknown}"
