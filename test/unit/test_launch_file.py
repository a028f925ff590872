"""launch/deead.launch.py, read without `launch` (not on PyPI): its arguments and its DDS policy."""
import ast

from test.conftest import RUNTIME_ROOT

LAUNCH = RUNTIME_ROOT / "launch" / "deead.launch.py"


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_it_declares_the_topics_the_params_file_and_the_model():
    tree = ast.parse(LAUNCH.read_text())
    topics = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == "TOPICS")
    names = {k.value for k in topics.keys} | {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")
                                              if isinstance(c.args[0], ast.Constant)}
    assert {"image", "route", "odometry", "command", "external_prior", "params_file", "model_file_path",
            "localhost_dds"} <= names


def test_the_localhost_profile_is_set_only_under_a_condition():
    tree = ast.parse(LAUNCH.read_text())
    for call in calls(tree, "SetEnvironmentVariable"):
        assert any(k.arg == "condition" for k in call.keywords), \
            "an unconditional DDS profile would replace the vehicle's own DDS configuration"


def test_it_compiles():
    compile(LAUNCH.read_text(), str(LAUNCH), "exec")
