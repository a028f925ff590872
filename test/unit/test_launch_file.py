"""launch/deead.launch.py, read without `launch` (not on PyPI): its arguments and its DDS policy."""
import ast

from test.conftest import RUNTIME_ROOT

LAUNCH = RUNTIME_ROOT / "launch" / "deead.launch.py"


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_it_declares_the_topics_the_params_file_and_the_model():
    tree = ast.parse(LAUNCH.read_text())
    topics = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                  and isinstance(n.targets[0], ast.Name) and n.targets[0].id == "TOPICS")
    assert isinstance(topics, ast.Dict), "TOPICS must be a dict literal"
    names = {k.value for k in topics.keys if isinstance(k, ast.Constant)}
    names |= {c.args[0].value for c in calls(tree, "DeclareLaunchArgument") if isinstance(c.args[0], ast.Constant)}
    assert {"image", "route", "odometry", "command", "external_prior", "params_file", "model_file_path",
            "localhost_dds"} <= names


def test_the_localhost_profile_is_set_only_under_a_condition():
    tree = ast.parse(LAUNCH.read_text())
    for call in calls(tree, "SetEnvironmentVariable"):
        assert any(k.arg == "condition" for k in call.keywords), \
            "an unconditional DDS profile would replace the vehicle's own DDS configuration"


def test_it_compiles():
    compile(LAUNCH.read_text(), str(LAUNCH), "exec")


class _Recorded:
    """Stands in for a launch / launch_ros class: records what it was built with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


def launch_description(monkeypatch, share):
    """Run generate_launch_description() with minimal stand-ins for launch and launch_ros (not on PyPI)."""
    import importlib.util
    import sys
    import types
    names = {"launch": ["LaunchContext", "LaunchDescription"],
             "launch.actions": ["DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable"],
             "launch.conditions": ["IfCondition"], "launch.substitutions": ["LaunchConfiguration"],
             "launch_ros.actions": ["Node"], "launch_ros": [], "ament_index_python.packages": []}
    for module, classes in names.items():
        stub = types.ModuleType(module)
        for name in classes:
            setattr(stub, name, _LaunchConfiguration if name == "LaunchConfiguration" else
                    type(name, (_Recorded,), {}))
        monkeypatch.setitem(sys.modules, module, stub)
    monkeypatch.setattr(sys.modules["ament_index_python.packages"], "get_package_share_directory",
                        lambda package: str(share), raising=False)
    spec = importlib.util.spec_from_file_location("deead_launch", LAUNCH)
    assert spec is not None and spec.loader is not None, f"{LAUNCH} cannot be loaded as a module"
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    return launch_file.generate_launch_description()


def effective_parameters(monkeypatch, tmp_path, params: dict, **arguments) -> dict:
    """The node's parameters as launch_ros gives them: the launch description's entries applied in order."""
    import yaml
    description = launch_description(monkeypatch, tmp_path)
    entities = description.args[0]
    given = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    params_file = tmp_path / "user.param.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    context = type("Context", (), {"launch_configurations": {**given, "params_file": str(params_file), **arguments}})
    (node,) = next(e for e in entities if type(e).__name__ == "OpaqueFunction").kwargs["function"](context)
    values: dict = {}
    for entry in node.kwargs["parameters"]:
        values.update(entry if isinstance(entry, dict)
                      else yaml.safe_load(open(entry))["/**"]["ros__parameters"])
    return values


def test_the_users_params_file_wins_over_the_launch_defaults(monkeypatch, tmp_path):
    mine = {"model_file_path": "/vehicle/model/manifest.json", "exit.delta_m": 1.0}
    assert effective_parameters(monkeypatch, tmp_path, mine) == mine


def test_a_model_given_on_the_command_line_wins_over_the_params_file(monkeypatch, tmp_path):
    values = effective_parameters(monkeypatch, tmp_path, {"model_file_path": "/in/the/file.json"},
                                  model_file_path="/on/the/command/line.json")
    assert values["model_file_path"] == "/on/the/command/line.json"


def test_the_localhost_profile_is_set_where_this_distros_fast_dds_reads_it(monkeypatch, tmp_path):
    from deead_ros.ros import dds
    for rclpy_version, variable in (("7.1.6", "FASTRTPS_DEFAULT_PROFILES_FILE"),      # Jazzy: Fast DDS 2
                                    ("9.1.2", "FASTDDS_DEFAULT_PROFILES_FILE")):      # Kilted: Fast DDS 3
        monkeypatch.setattr(dds.importlib.metadata, "version", lambda name, v=rclpy_version: v)
        entities = launch_description(monkeypatch, tmp_path).args[0]
        settings = [e.args for e in entities if type(e).__name__ == "SetEnvironmentVariable"]
        assert settings == [(variable, str(tmp_path / "config" / "fastdds_localhost_shm.xml"))]


def test_the_distro_is_told_by_rclpys_major_version(monkeypatch):
    from deead_ros.ros import dds
    for rclpy_version, distro in (("7.1.6", "jazzy"), ("9.1.2", "kilted"), ("10.0.1", "rclpy 10")):
        monkeypatch.setattr(dds.importlib.metadata, "version", lambda name, v=rclpy_version: v)
        assert dds.ros_distro() == distro


def test_the_localhost_profile_is_put_in_force_only_where_dds_is_not_configured(tmp_path):
    from deead_ros.ros import dds
    environ: dict[str, str] = {}
    assert dds.use_localhost_profile(tmp_path, environ) == str(tmp_path / dds.LOCALHOST_PROFILE)
    assert environ == {dds.fast_dds_profile_variable(): str(tmp_path / dds.LOCALHOST_PROFILE)}
    for setting in dds.DDS_SETTINGS:                  # the user's own configuration wins, whichever it is
        environ = {setting: "theirs"}
        assert dds.use_localhost_profile(tmp_path, environ) is None and environ == {setting: "theirs"}
