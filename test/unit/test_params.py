"""The parameter table, config/deead.yaml and the validation agree."""
import pytest
import yaml

from deead_ros.exit import ExitSettings, PriorSettings
from deead_ros.ros.params import PARAMETERS, SPECS, config_from_values
from test.conftest import REPO_ROOT


def flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.fixture(scope="module")
def yaml_values():
    doc = yaml.safe_load((REPO_ROOT / "config" / "deead.yaml").read_text())
    assert list(doc) == ["/**"], "config must use the /**: ros__parameters: form"
    return dict(flatten(doc["/**"]["ros__parameters"]))


def test_yaml_lists_exactly_the_declared_parameters(yaml_values):
    assert set(yaml_values) == set(SPECS), (f"only in yaml: {set(yaml_values) - set(SPECS)}; "
                                            f"only in the table: {set(SPECS) - set(yaml_values)}")


def test_yaml_defaults_match_the_table_and_its_ranges(yaml_values):
    for spec in PARAMETERS:
        assert yaml_values[spec.name] == spec.default, f"{spec.name}: yaml {yaml_values[spec.name]} != {spec.default}"
        if spec.range:
            assert spec.range[0] <= spec.default <= spec.range[1], f"{spec.name} default outside its range"
        assert spec.doc, f"{spec.name} needs a description"


def test_every_exit_and_prior_setting_is_a_parameter():
    from dataclasses import fields
    for section, cls in (("exit", ExitSettings), ("prior", PriorSettings)):
        for f in fields(cls):
            assert f"{section}.{f.name}" in SPECS, f"{section}.{f.name} is not declared"


def test_defaults_build_a_valid_config_for_24_layers():
    config = config_from_values({spec.name: spec.default for spec in PARAMETERS})
    assert config.problem(num_layers=24) is None
    assert config.exit.strides == (8, 4, 2, 1) and config.exit.first_checkpoint == 10
    assert "outside the model's layers" in config.problem(num_layers=8)
