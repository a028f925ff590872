"""The vehicle's install is the runtime alone: in a venv built from requirements-runtime.txt only, with no torch,
transformers, matplotlib or Ray, deead_node plans the demo bag on ONNX Runtime.

The venv lives in build/runtime_venv and is rebuilt only when requirements-runtime.txt changes (the first build
takes a minute or two from the local wheels; later runs reuse it). deead_ros is installed into it as a vehicle
would (non-editable, with its share/ files); the messages are the ones `make setup` built, copied file by file
from .venv as their install manifest lists them; the model is the one `make setup` exported on this workstation,
read from .venv's share/ (a vehicle receives those files, never the code that made them).
Run by Kilted's interpreter (`make test-kilted`), the same on Kilted: requirements-runtime-kilted.txt,
build/runtime_venv-kilted, the messages build/kilted_venv was set up with.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from test.cached_build import BuildStamp, clone_files, digest, run
from test.conftest import REPO_ROOT, distro_suffix

pytestmark = pytest.mark.ros

MAIN_VENV = Path(sys.prefix)
VENV = REPO_ROOT / "build" / f"runtime_venv{distro_suffix()}"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = REPO_ROOT / f"requirements-runtime{distro_suffix()}.txt"
MSGS_MANIFEST = REPO_ROOT / "build" / f"deead_ros_msgs{distro_suffix()}" / "install_manifest.txt"
EXPORTED = MAIN_VENV / "share" / "deead_ros" / "models" / "demo" / "onnx" / "manifest.json"
LAB_ONLY = ("torch", "transformers", "matplotlib", "ray", "deead_lab")


@pytest.fixture(scope="module")
def runtime_venv() -> Path:
    """build/runtime_venv with the runtime's requirements, deead_ros and the messages, and nothing else."""
    if not MSGS_MANIFEST.exists() or not EXPORTED.exists():
        pytest.skip("run `make setup` first: it builds the messages and exports the demo model")
    stamps = {name: BuildStamp(VENV / f".stamp_{name}") for name in ("requirements", "messages", "deead_ros")}
    key = digest([REQUIREMENTS], sys.version)
    if not stamps["requirements"].holds(key):
        shutil.rmtree(VENV, ignore_errors=True)
        run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", VENV], 120)
        run([PYTHON, "-m", "pip", "install", "-q", "-r", REQUIREMENTS], 900)
        stamps["requirements"].mark(key)
    msgs = list(map(Path, MSGS_MANIFEST.read_text().split()))
    key = digest(msgs)
    if not stamps["messages"].holds(key):
        for source in msgs:
            target = VENV / source.relative_to(MAIN_VENV)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        stamps["messages"].mark(key)
    key = digest(REPO_ROOT / name for name in clone_files("deead_ros"))
    if not stamps["deead_ros"].holds(key):
        run([PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", REPO_ROOT / "deead_ros"], 300)
        stamps["deead_ros"].mark(key)
    return VENV


def runtime_env() -> dict[str, str]:
    """This process's environment (its private ROS domain) pointed at the runtime venv, nothing of the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "AMENT_PREFIX_PATH": str(VENV), "PATH": f"{VENV / 'bin'}:{env.get('PATH', '')}"}


def test_the_runtime_venv_lacks_the_labs_research_stack(runtime_venv, tmp_path):
    code = ("import importlib.util as u; import deead_ros.ros.node, deead_ros_msgs.msg; "
            f"print(','.join(m for m in {LAB_ONLY!r} if u.find_spec(m)))")
    found = run([PYTHON, "-c", code], 120, cwd=tmp_path, env=runtime_env()).strip()
    assert found == "", f"the runtime's requirements pulled in {found}"


def test_the_torch_backend_says_what_to_install(runtime_venv, tmp_path):
    code = ("from deead_ros.engines import make_engine; from deead_ros.errors import BackendUnavailableError\n"
            "try:\n"
            f"    make_engine('torch', {str(EXPORTED)!r})\n"
            "except BackendUnavailableError as err:\n"
            "    print(err)\n")
    message = run([PYTHON, "-c", code], 120, cwd=tmp_path, env=runtime_env())
    assert "pip install torch" in message and "onnxruntime" in message, message


def test_the_node_plans_the_demo_bag_on_onnxruntime_without_the_lab(runtime_venv, tmp_path):
    out = tmp_path / "demo.json"
    run([PYTHON, "-m", "deead_ros.ros.demo", "--rate", "8", "--model", EXPORTED, "--out", out, "--timeout", "180"],
        600, cwd=tmp_path, env=runtime_env())
    demo = json.loads(out.read_text())
    full, deead = demo["passes"]["full"], demo["passes"]["deead"]
    assert demo["backend"] == "onnxruntime"
    assert full["frames_planned"] > 0 and deead["frames_planned"] > 0, demo
    assert full["mean_exit_layer"] == full["num_layers"] == demo["summary"]["num_layers"]
    assert deead["mean_exit_layer"] < deead["num_layers"] and deead["early_exits"] > 0, deead
    assert full["l2_3s_m"] < 3.0, "the plans are far from the expert: the model did not run as on the workstation"
