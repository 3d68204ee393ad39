from pathlib import Path

import pytest

from dfdc.config import ParamsError, check_file, load_section

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
    s = load_section(p, "sample")
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
        load_section(p, "sample")
    assert message in str(e.value)
    assert str(p) in str(e.value)


def test_unknown_section_and_missing_file(tmp_path):
    p = write(tmp_path, "sampel:\n  seed: 1\n")
    with pytest.raises(ParamsError, match="sampel: unknown section"):
        check_file(p)
    with pytest.raises(ParamsError, match="params file not found"):
        load_section(tmp_path / "nope.yaml", "sample")
