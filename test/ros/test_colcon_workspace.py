"""The repository as a colcon workspace source: colcon finds and builds every package from a clean copy (what a
clone holds), and deead_node runs from that install, not from this checkout or its venv.

The build (~40 s, mostly rosidl) is cached in build/colcon_ws (build/colcon_ws-kilted on Kilted) under a digest of
every file a clone would hold, so it runs again only when one of them changed.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

from test.cached_build import BuildStamp, clone_files, digest, run  # noqa: E402
from test.conftest import REPO_ROOT, distro_suffix  # noqa: E402
from test.ros.test_node import FIRST_CHECKPOINT, Driver, check_plans, plan_frames  # noqa: E402

VENV_BIN = Path(sys.executable).parent
COLCON = VENV_BIN / "colcon"
WORKSPACE = REPO_ROOT / "build" / f"colcon_ws{distro_suffix()}"
PACKAGES = {"deead_ros_msgs", "deead_ros", "deead_lab"}


def clean_env() -> dict[str, str]:
    """This process's environment (its ROS domain) without the checkout's source on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{VENV_BIN}:{env.get('PATH', '')}", "AMENT_PREFIX_PATH": str(VENV_BIN.parent),
            "CMAKE_PREFIX_PATH": str(VENV_BIN.parent)}


@pytest.fixture(scope="module")
def workspace() -> Path:
    """build/colcon_ws: src/deead_ros a copy of the files a clone holds, built by `colcon build`."""
    if not COLCON.exists():
        pytest.skip("colcon is not installed: `make setup` installs it (requirements-dev.txt)")
    files = clone_files()
    key, stamp = digest(REPO_ROOT / name for name in files), BuildStamp(WORKSPACE / "built_from")
    if stamp.holds(key):
        return WORKSPACE
    shutil.rmtree(WORKSPACE, ignore_errors=True)
    for name in files:
        target = WORKSPACE / "src" / "deead_ros" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    run([COLCON, "build", "--event-handlers", "console_direct-", "--cmake-args", "-DBUILD_TESTING=OFF",
         f"-DPython3_EXECUTABLE={sys.executable}"], 900, cwd=WORKSPACE, env=clean_env())
    stamp.mark(key)
    return WORKSPACE


def install_env(workspace: Path) -> dict[str, str]:
    """The environment after `source install/setup.bash`, as a user of the workspace has it."""
    out = run(["bash", "-c", "source install/setup.bash && env -0"], 60, cwd=workspace, env=clean_env())
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def test_colcon_finds_every_package_in_a_clone(workspace):
    listed = run([COLCON, "list", "--names-only"], 60, cwd=workspace, env=clean_env()).split()
    assert set(listed) == PACKAGES, f"colcon list found {listed}"
    order = run([COLCON, "list", "--names-only", "--topological-order"], 60, cwd=workspace, env=clean_env()).split()
    assert order.index("deead_ros_msgs") < order.index("deead_ros") < order.index("deead_lab")


def test_the_node_runs_from_the_workspace_install(workspace, small_model, ros_context):
    env = install_env(workspace)
    install = workspace / "install"
    where = run([sys.executable, "-c", "import deead_ros, deead_ros_msgs; print(deead_ros.__file__); "
                 "print(deead_ros_msgs.__file__)"], 60, cwd=workspace, env=env).split()
    assert all(Path(w).is_relative_to(install) for w in where), f"imported from {where}, not from {install}"
    node = install / "deead_ros" / "lib" / "deead_ros" / "deead_node"
    params = install / "deead_ros" / "share" / "deead_ros" / "config" / "deead_node.param.yaml"
    process = subprocess.Popen([node, "--ros-args", "--params-file", params, "-p", f"model_file_path:={small_model}",
                                "-p", f"exit.first_checkpoint:={FIRST_CHECKPOINT}"], cwd=workspace, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = Driver(ros_context)
    try:
        driver.wait_for_node()
        plan_frames(driver, [21, 22], timeout_s=30.0)
        check_plans(driver, [21, 22])
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
        driver.node.destroy_node()
    assert process.returncode == 0 and "planning with onnxruntime on 6 layers" in output, output
