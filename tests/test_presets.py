"""The GPU recipes in presets/ are valid params: known sections and keys, registered architectures."""
from pathlib import Path

import pytest
import yaml

from dfdc.config.base import read_params
from dfdc.config.sections import SECTIONS, check_file
from dfdc.models import list_models

PRESETS = sorted((Path(__file__).resolve().parents[1] / "presets").glob("*.yaml"))


def test_there_is_a_preset_per_seed_family():
    assert {p.stem for p in PRESETS} >= {"dfdc_1st_place", "medics_3d_ensemble", "ntech_sequence",
                                         "lstm_frozen_backbone"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_names_registered_models(preset):
    doc = yaml.safe_load(preset.read_text())
    assert set(doc) <= set(SECTIONS)  # whole sections, merged into params.yaml
    sections = check_file(preset)
    entries = sections["train"].all_models() if "train" in sections else {}
    if any(p.inputs == "clips" for p in entries.values()):
        assert "clips" in sections  # clip models come with the clips that feed them
    assert entries
    unknown = sorted({p.arch for p in entries.values()} - set(list_models()))
    assert not unknown, f"{preset.name}: unregistered architectures {unknown}"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_exp_args_apply_a_preset_through_dvcs_overrides(preset, tmp_path):
    """`dfdc exp-args` gives the -S overrides that turn params.yaml into params.yaml with the preset applied
    (the groups it names replaced whole), as DVC's own Hydra code applies them."""
    import shlex

    from dvc.utils.hydra import apply_overrides

    from dfdc.presets import exp_args

    doc = yaml.safe_load(preset.read_text())
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    target = tmp_path / "params.yaml"
    target.write_text(params.read_text())
    args = shlex.split(exp_args(preset, params))
    assert args[::2] == ["-S"] * (len(args) // 2)
    apply_overrides(str(target), args[1::2])
    got, before = read_params(target), read_params(params)  # as the stages read them (DVC writes 2e-05)
    table = [g for g in ("models", "stacked") if g in doc.get("train", {})]
    for group in ("models", "stacked") if table else ():  # the table replaced whole, nothing of params.yaml's left
        assert (got["train"].get(group) or {}) == (doc["train"].get(group) or {})
    def leaves(prefix, value):
        if isinstance(value, dict) and value:
            return [leaf for k, v in value.items() for leaf in leaves((*prefix, k), v)]
        return [(prefix, value)]

    def at(doc, path):
        for k in path:
            doc = doc[k]
        return doc

    for section, body in doc.items():
        if section != "train":
            for path, value in leaves((section,), body):
                assert at(got, path) == value, path
    untouched = set(before) - set(doc)
    assert {k: got[k] for k in untouched} == {k: before[k] for k in untouched}
    check_file(target)  # still valid params


def test_exp_args_refuses_a_preset_that_is_not_whole_sections(tmp_path):
    from dfdc.presets import exp_args

    preset = tmp_path / "entry.yaml"
    preset.write_text("b7: {arch: tf_efficientnet_b7_ns, inputs: crops}\n")
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    with pytest.raises(ValueError, match=r"entry\.yaml: b7 not a params\.yaml section"):
        exp_args(preset, params)
