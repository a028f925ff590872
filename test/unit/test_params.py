"""The parameter table, config/deead_node.param.yaml and the validation agree."""
import pytest
import yaml

from deead_ros.exit import ExitSettings, PriorSettings
from deead_ros.ros.params import PARAMETERS, SPECS, config_from_values
from test.conftest import RUNTIME_ROOT
from test.expect import reported


def flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.fixture(scope="module")
def yaml_values():
    doc = yaml.safe_load((RUNTIME_ROOT / "config" / "deead_node.param.yaml").read_text())
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
    assert config.exit.stride_table == (8.0, 8.0, 4.0, 4.0, 2.0, 2.0, 1.0) and config.exit.first_checkpoint == 13
    assert "outside the model's layers" in reported(config.problem(num_layers=8))


def test_every_validation_limit_is_a_parameter_and_reaches_the_config():
    from dataclasses import fields

    from deead_ros.exit.validation import ValidationLimits
    values = {spec.name: spec.default for spec in PARAMETERS}
    for f in fields(ValidationLimits):
        assert f"validation.{f.name}" in SPECS, f"validation.{f.name} is not declared"
    config = config_from_values({**values, "validation.max_speed_mps": 33.0})
    assert config.validation == ValidationLimits(max_speed_mps=33.0)
    assert config.values["validation.max_speed_mps"] == 33.0


def test_every_double_has_a_range_so_ros_refuses_nan_and_inf():
    for spec in PARAMETERS:
        if spec.type == "double":
            assert spec.range is not None, f"{spec.name} needs a range (NaN and inf fail a range check)"


@pytest.mark.parametrize("frame_id, message", [("", "not empty"), ("base link", "without spaces"),
                                               (" base_link", "without spaces"), ("/base_link", "must not start")])
def test_frame_id_is_checked(frame_id, message):
    values = {spec.name: spec.default for spec in PARAMETERS}
    problem = config_from_values({**values, "output.frame_id": frame_id}).problem(num_layers=24)
    assert problem and "output.frame_id" in problem and message in problem


@pytest.mark.parametrize("name, value, message", [
    ("camera_format", "png", "camera_format"),
    ("validation.max_speed_mps", float("nan"), "validation.max_speed_mps"),
    ("validation.max_decel_mps2", 2.0, "stopping fallback"),
    ("io.max_input_age_s", float("inf"), "io.max_input_age_s"),
    ("exit.stride_table", [8.0, 8.0], "odd number"),
])
def test_config_problems_name_the_parameter(name, value, message):
    values = {spec.name: spec.default for spec in PARAMETERS}
    assert message in reported(config_from_values({**values, name: value}).problem(num_layers=24))


def test_integers_are_taken_for_doubles_and_nothing_else_is_converted():
    from rclpy.parameter import Parameter

    from deead_ros.ros.params import as_declared_type, with_declared_types
    assert as_declared_type(SPECS["exit.delta_m"], 1) == 1.0 and isinstance(as_declared_type(SPECS["exit.delta_m"], 1),
                                                                            float)
    assert as_declared_type(SPECS["exit.stride_table"], [8, 8, 1]) == [8.0, 8.0, 1.0]
    for spec_name, value, expected in [("exit.delta_m", "abc", "expected a double (e.g. 2.0), got the string 'abc'"),
                                       ("exit.delta_m", True, "got the bool True"),
                                       ("num_threads", 2.0, "expected an integer, got the double 2.0"),
                                       ("backend", 3, "expected a string, got the integer 3"),
                                       ("exit.stride_table", ["a"], "expected a double array")]:
        with pytest.raises(TypeError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            as_declared_type(SPECS[spec_name], value)
    converted = with_declared_types([Parameter("exit.delta_m", value=1),
                                     Parameter("exit.stride_table", value=[4, 4, 1]), Parameter("num_threads", value=3),
                                     Parameter("exit.policy", value="full"), Parameter("not.ours", value=1)])
    assert [(p.name, p.type_, p.value) for p in converted] == [
        ("exit.delta_m", Parameter.Type.DOUBLE, 1.0),
        ("exit.stride_table", Parameter.Type.DOUBLE_ARRAY, [4.0, 4.0, 1.0]),
        ("num_threads", Parameter.Type.INTEGER, 3), ("exit.policy", Parameter.Type.STRING, "full"),
        ("not.ours", Parameter.Type.INTEGER, 1)]


def test_a_malformed_parameter_message_is_refused_with_a_reason():
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue

    from deead_ros.ros.params import parameter_from_msg
    param, reason = parameter_from_msg(ParameterMsg(name="exit.delta_m", value=ParameterValue(type=99)))
    assert param is None and "malformed" in reason and "99" in reason
    param, reason = parameter_from_msg(ParameterMsg(name="exit.delta_m",
                                                    value=ParameterValue(type=ParameterType.PARAMETER_NOT_SET)))
    assert param is None and "cannot be unset" in reason
    param, reason = parameter_from_msg(ParameterMsg(name="exit.delta_m", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=1.5)))
    assert param is not None and param.value == 1.5 and reason == ""


def test_cameras_and_their_mountings_are_checked_against_each_other_and_the_model():
    from deead_ros.engines.manifest import CameraSpec, SensorContract
    from deead_ros.ros.params import mountings_by_camera, sensor_problem
    defaults = {spec.name: spec.default for spec in PARAMETERS}
    six = ["front", "front_left", "front_right", "back", "back_left", "back_right"]
    model = SensorContract(tuple(CameraSpec(name, (48, 80)) for name in six), imu=True, memory=True)
    single = config_from_values(defaults)
    assert sensor_problem(single, SensorContract()) is None
    assert "set the parameter cameras" in reported(sensor_problem(single, model))
    config = config_from_values({**defaults, "cameras": six[::-1], "camera_mountings": [0.5] * 36})
    assert config.problem(24) is None and sensor_problem(config, model) is None
    assert mountings_by_camera(config)["back_right"] == (0.5,) * 6
    assert "name those" in reported(sensor_problem(config_from_values({**defaults, "cameras": six[:5]}), model))
    too_few_mountings = config_from_values({**defaults, "cameras": six, "camera_mountings": [0.0] * 6})
    assert "6 per camera" in reported(too_few_mountings.problem(24))
    assert "each camera once" in reported(config_from_values({**defaults, "cameras": ["front", "front"]}).problem(24))
