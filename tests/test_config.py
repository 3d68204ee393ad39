from pathlib import Path

import pytest

from dfdc.config.base import ParamsError, load_section
from dfdc.config.sample import SampleParams
from dfdc.config.sections import check_file

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_repo_params_file_loads():
    sections = check_file(REPO / "params.yaml")
    assert sections["sample"].parts >= 4
    assert sections["sample"].fakes_per_real == 2
    assert sections["data"].root == "data/sample"


def test_values_and_defaults(tmp_path):
    p = write(tmp_path, "sample:\n  seed: 3\n  seconds_min: 1\n")
    s = SampleParams.load(p)
    assert s.seed == 3 and s.seconds_min == 1.0 and isinstance(s.seconds_min, float) and s.parts == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("sample:\n  sed: 1\n", "sample.sed: unknown key"),
        ("sample:\n  parts: two\n", "sample.parts: expected an integer, got 'two'"),
        ("sample:\n  parts: 0\n", "sample.parts: must be >= 1, got 0"),
        ("sample:\n  parts: true\n", "sample.parts: expected an integer"),
        ("sample:\n  seconds_min: 3\n  seconds_max: 2\n", "sample.seconds_max: must be >= seconds_min"),
        ("sample: 5\n", "sample: expected a mapping"),
        ("- 1\n", "top level must be a mapping"),
    ],
)
def test_errors_name_key_and_file(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ParamsError) as e:
        SampleParams.load(p)
    assert message in str(e.value)
    assert str(p) in str(e.value)


def test_unknown_section_and_missing_file(tmp_path):
    p = write(tmp_path, "sampel:\n  seed: 1\n")
    with pytest.raises(ParamsError, match="sampel: unknown section"):
        check_file(p)
    with pytest.raises(ParamsError, match="params file not found"):
        load_section(tmp_path / "nope.yaml", "sample", SampleParams)


TRAIN = """
train:
  models:
    a: {arch: resnet18, inputs: crops}
  stacked:
%s
"""


@pytest.mark.parametrize(
    "stacked, message",
    [
        ("    b: {arch: resnet18, inputs: crops}", "train.stacked.b.backbone_from: required"),
        ("    b: {arch: resnet18, inputs: crops, backbone_from: z}", "train.stacked.b.backbone_from: no model 'z'"),
        ("    a: {arch: resnet18, inputs: crops, backbone_from: a}",
         "train.stacked.a: the key is also in train.models"),
        ("    b: {arch: resnet18, inputs: crops, backbone_from: c}\n"
         "    c: {arch: resnet18, inputs: crops, backbone_from: b}",
         "train.stacked.b.backbone_from: a cycle: b -> c -> b"),
    ],
)
def test_stacked_models_name_a_trained_backbone(tmp_path, stacked, message):
    from dfdc.config.train import TrainParams

    with pytest.raises(ParamsError) as e:
        TrainParams.load(write(tmp_path, TRAIN % stacked))
    assert message in str(e.value) and str(tmp_path) in str(e.value)


def test_one_table_of_models_and_what_each_reads(tmp_path):
    from dfdc.config.train import TrainParams

    t = TrainParams.load(write(tmp_path, TRAIN % "    b: {arch: lstm_regnetx_002, inputs: clips, backbone_from: a, "
                                                  "pretrained: hub}"))
    assert sorted(t.all_models()) == ["a", "b"] and t.group_of("b") == "stacked" and t.group_of("a") == "models"
    assert t.stacked["b"].pretrained == "hub" and t.stacked["b"].inputs == "clips"
    for entry, message in (
            ("{arch: resnet18, inputs: crops, backbone_from: a}",
             "train.models.a.backbone_from: an entry that starts from another model's checkpoint goes under "
             "train.stacked"),
            ("{arch: r3d_mini, inputs: crops}",
             "train.models.a.inputs: r3d_mini is a clip model, it reads clips, not crops; set inputs: clips"),
            ("{arch: resnet18, inputs: clips}",
             "train.models.a.inputs: resnet18 is a frame model, it reads crops, not clips; set inputs: crops"),
            ("{arch: resnet18}", "train.models.a.inputs: required: crops or clips"),
            ("{arch: resnet1800, inputs: crops}", "train.models.a.arch: unknown model 'resnet1800'"),
            ("{arch: resnet18, inputs: frames}", "train.models.a.inputs: expected one of ['crops', 'clips']")):
        with pytest.raises(ParamsError) as e:
            TrainParams.load(write(tmp_path, f"train:\n  models:\n    a: {entry}\n"))
        assert message in str(e.value) and str(tmp_path) in str(e.value), (entry, str(e.value))


def test_degrade_section_errors_name_the_key(tmp_path):
    from dfdc.config.base import ParamsError
    from dfdc.config.degrade import DegradeParams

    path = tmp_path / "params.yaml"
    for text, key in (("degrade: {shares: {blur: 1}}", "degrade.shares: unknown degradation 'blur'"),
                      ("degrade: {jpeg_quality: [60, 30]}", "degrade.jpeg_quality"),
                      ("degrade: {scale: 0}", "degrade.scale")):
        path.write_text(text)
        with pytest.raises(ParamsError, match=key):
            DegradeParams.load(path)
    path.write_text("predict: {strategy: thresholds, thresholds: {levels: 5}}")
    from dfdc.config.predict import PredictParams

    with pytest.raises(ParamsError, match="predict.thresholds.levels"):
        PredictParams.load(path)


def test_floats_as_dvc_writes_them_are_numbers(tmp_path):
    """`dvc exp run -S lr=0.00002` writes `lr: 2e-05`, which YAML 1.1 alone reads as a string."""
    from dfdc.config.train import TrainParams

    f = tmp_path / "params.yaml"
    f.write_text("train:\n  models:\n    m: {arch: resnet18, inputs: crops, lr: 2e-05, min_lr: 1e-6}\n")
    p = TrainParams.load(f).models["m"]
    assert p.lr == 2e-05 and p.min_lr == 1e-06
