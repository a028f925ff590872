"""The params YAML, its JSON schema and the README's table are the parameter table, written out (and current)."""
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from deead_ros import parameter_files
from deead_ros.parameters import PARAMETERS
from test.conftest import REPO_ROOT


@pytest.mark.parametrize("path, expected", [
    (parameter_files.YAML_PATH, parameter_files.params_yaml),
    (parameter_files.SCHEMA_PATH, lambda: json.dumps(parameter_files.json_schema(), indent=2) + "\n"),
    (parameter_files.README_PATH, lambda: parameter_files.readme_with_table((REPO_ROOT / "README.md").read_text())),
])
def test_the_committed_files_are_what_the_table_writes(path, expected):
    assert (REPO_ROOT / path).read_text() == expected(), \
        f"{path} differs from the parameter table: run `python -m deead_ros.parameter_files`"


def test_the_yaml_holds_every_default_once_and_the_schema_accepts_it():
    doc = yaml.safe_load((REPO_ROOT / parameter_files.YAML_PATH).read_text())
    values = doc["/**"]["ros__parameters"]
    flat = {f"{k}.{leaf}" if isinstance(v, dict) else k: (w if isinstance(v, dict) else v)
            for k, v in values.items() for leaf, w in (v.items() if isinstance(v, dict) else [(None, v)])}
    assert flat == {spec.name: spec.default for spec in PARAMETERS}
    jsonschema.validate(doc, parameter_files.json_schema())


@pytest.mark.parametrize("change, message", [
    (lambda p: p["exit"].update(delta_m="abc"), "is not of type 'number'"),
    (lambda p: p["exit"].update(delta=1.0), "Additional properties are not allowed"),
    (lambda p: p["exit"].update(delta_m=500.0), "is greater than the maximum"),
    (lambda p: p.pop("prior"), "'prior' is a required property"),
    (lambda p: p.update(backend="tensorrtt"), "'tensorrtt' is not one of \\['torch', 'onnxruntime', 'tensorrt'\\]"),
    (lambda p: p["exit"].update(policy="fastest"), "'fastest' is not one of"),
])
def test_the_schema_refuses_a_wrong_type_a_misnamed_a_missing_or_an_out_of_range_parameter(change, message):
    doc = yaml.safe_load((REPO_ROOT / parameter_files.YAML_PATH).read_text())
    change(doc["/**"]["ros__parameters"])
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(doc, parameter_files.json_schema())


def test_params_files_are_checked_for_misnamed_and_missing_parameters(tmp_path):
    from deead_ros.errors import ConfigError
    full = REPO_ROOT / parameter_files.YAML_PATH
    override = tmp_path / "calibrated.yaml"
    override.write_text("/**:\n  ros__parameters:\n    exit:\n      delta_m: 0.5\n")
    parameter_files.check_params_files([full, override])        # the defaults, then a file that overrides some
    parameter_files.check_params_files([])                      # no file: the table's defaults
    with pytest.raises(ConfigError, match="leave out backend, model_file_path"):
        parameter_files.check_params_files([override])
    typo = tmp_path / "typo.yaml"
    typo.write_text(full.read_text().replace("min_speed_mps: 1.0", "min_sped_mps: 1.0"))
    with pytest.raises(ConfigError, match="'prior.min_sped_mps'.*did you mean prior.min_speed_mps"):
        parameter_files.check_params_files([typo])
    assert parameter_files.params_file_paths(["deead_node", "--ros-args", "-p", "a:=1", "--params-file", "x.yaml",
                                              "--params-file", "y.yaml"]) == [Path("x.yaml"), Path("y.yaml")]


def test_a_value_outside_a_parameters_set_is_refused_at_start_with_the_allowed_values(tmp_path):
    from deead_ros.errors import ConfigError
    typo = tmp_path / "typo.yaml"
    typo.write_text((REPO_ROOT / parameter_files.YAML_PATH).read_text().replace(
        'backend: "onnxruntime"', 'backend: "tensorrtt"'))
    with pytest.raises(ConfigError, match="backend='tensorrtt' is unknown; one of: torch, onnxruntime, tensorrt"):
        parameter_files.check_params_files([typo])


def test_every_fixed_set_of_names_in_the_code_is_the_tables():
    from deead_ros.engines.protocol import BACKENDS, EXECUTION_PROVIDERS, PRECISIONS
    from deead_ros.exit.policies import POLICY_NAMES
    from deead_ros.exit.prior import PRIOR_SOURCES
    from deead_ros.parameters import choices
    assert (BACKENDS, PRECISIONS, POLICY_NAMES, PRIOR_SOURCES) == (
        choices("backend"), choices("precision"), choices("exit.policy"), choices("prior.source"))
    assert tuple(EXECUTION_PROVIDERS) == choices("execution_provider")
