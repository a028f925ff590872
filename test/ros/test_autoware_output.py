"""output.autoware_trajectory: the node's plan as autoware_planning_msgs/Trajectory, point for point the nav_msgs one.

No Autoware here: test/fixtures/autoware_planning_msgs holds upstream's Trajectory and TrajectoryPoint, unchanged, and
this module builds it with deead_ros_msgs' CMake recipe into build/autoware_planning_msgs (about 10-20 s; cached under
a digest of its files, the recipe and the interpreter, like the other builds in build/). The node runs as its own
process in the environment a sourced Autoware workspace gives; without the package it refuses to start, saying so.
"""
import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.ros

from deead_ros.paths import demo_manifest_path  # noqa: E402
from deead_ros.trajectory_kinematics import trajectory_kinematics  # noqa: E402
from test.cached_build import BuildStamp, digest, run  # noqa: E402
from test.conftest import REPO_ROOT, RUNTIME_ROOT, distro_suffix  # noqa: E402
from test.ros.test_node import Driver, plan_frames  # noqa: E402

FIXTURE = REPO_ROOT / "test" / "fixtures" / "autoware_planning_msgs"
RECIPE = REPO_ROOT / "deead_ros_msgs" / "cmake" / "pypi_wheel_include_dirs.cmake"
BUILD = REPO_ROOT / "build" / f"autoware_planning_msgs{distro_suffix()}"
INSTALL = BUILD / "install"
SITE_PACKAGES = INSTALL / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
# the libraries the Python module and Fast DDS load, each after the ones it links to
LIBRARIES = ("rosidl_generator_c", "rosidl_typesupport_c", "rosidl_generator_py", "rosidl_typesupport_fastrtps_c",
             "rosidl_typesupport_introspection_c")
NODE_ARGS = ["--ros-args", "--params-file", str(RUNTIME_ROOT / "config" / "deead_node.param.yaml"),
             "-p", "output.autoware_trajectory:=true"]


@pytest.fixture(scope="module")
def autoware_msgs() -> Path:
    """The fixture package built and installed into build/autoware_planning_msgs/install (once per change)."""
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed (the interface build needs it, as `make setup` does)")
    inputs = sorted(p for p in FIXTURE.rglob("*") if p.is_file()) + [RECIPE]
    key, stamp = digest(inputs, sys.executable, sys.version), BuildStamp(BUILD / "built_from")
    if stamp.holds(key):
        return INSTALL
    shutil.rmtree(BUILD, ignore_errors=True)
    venv = Path(sys.prefix)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", "AMENT_PREFIX_PATH": str(venv)}
    run(["cmake", "-S", FIXTURE, "-B", BUILD / "build", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF",
         f"-DCMAKE_PREFIX_PATH={venv}", f"-DCMAKE_INSTALL_PREFIX={INSTALL}", f"-DPython3_EXECUTABLE={sys.executable}"],
        300, env=env)
    run(["cmake", "--build", BUILD / "build", f"-j{os.cpu_count() or 1}"], 900, env=env)
    run(["cmake", "--install", BUILD / "build"], 120, env=env)
    (BUILD / "COLCON_IGNORE").touch()      # its install holds a package.xml: no package of this workspace
    stamp.mark(key)
    return INSTALL


def sourced_env(install: Path | None) -> dict[str, str]:
    """This process's environment (its ROS domain), with the package's install as `source install/setup.bash` puts
    it on the paths; None: without it."""
    env = dict(os.environ)
    if install is not None:
        for name, path in (("AMENT_PREFIX_PATH", install), ("LD_LIBRARY_PATH", install / "lib"),
                           ("PYTHONPATH", SITE_PACKAGES)):
            env[name] = os.pathsep.join([str(path), *filter(None, [env.get(name)])])
    return env


def load_into_this_process(install: Path, monkeypatch) -> Any:
    """autoware_planning_msgs/Trajectory for this test's subscriber. This process started before the build, so its
    loader never saw install/lib: the libraries are loaded by path, and rosidl finds the type support it loads at
    run time on LD_LIBRARY_PATH, which it reads then."""
    monkeypatch.syspath_prepend(str(SITE_PACKAGES))
    monkeypatch.setenv("LD_LIBRARY_PATH", sourced_env(install)["LD_LIBRARY_PATH"])
    for library in LIBRARIES:
        ctypes.CDLL(str(install / "lib" / f"libautoware_planning_msgs__{library}.so"), mode=ctypes.RTLD_GLOBAL)
    from autoware_planning_msgs.msg import Trajectory
    return Trajectory


def seconds(time_msg) -> int:
    return time_msg.sec * 1_000_000_000 + time_msg.nanosec


def test_the_autoware_trajectory_is_the_plan_point_for_point(autoware_msgs, ros_context, monkeypatch):
    if not demo_manifest_path().exists():
        pytest.skip("run `make setup` first: it exports the demo model")
    trajectory_type = load_into_this_process(autoware_msgs, monkeypatch)
    process = subprocess.Popen([sys.executable, "-m", "deead_ros.ros.node", *NODE_ARGS], env=sourced_env(autoware_msgs),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = Driver(ros_context)
    received: dict[tuple[int, int], Any] = {}

    def keep(msg: Any) -> None:
        received[msg.header.stamp.sec, msg.header.stamp.nanosec] = msg
    driver.node.create_subscription(trajectory_type, "/deead_node/output/autoware_trajectory", keep, 50)
    seconds_played = [31, 32, 33]
    try:
        driver.wait_for_node()
        plan_frames(driver, seconds_played, timeout_s=30.0)
        assert driver.spin_until(lambda: all((s, 0) in received for s in seconds_played), 10.0), \
            f"Autoware trajectories for {sorted(received)}, plans for {seconds_played}"
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
        driver.node.destroy_node()
    assert process.returncode == 0, output
    for sec in seconds_played:
        path, trajectory = driver.trajectories[(sec, 0)], received[(sec, 0)]
        assert trajectory.header == path.header and len(trajectory.points) == len(path.poses) > 1
        times_ns = [seconds(p.header.stamp) - seconds(path.header.stamp) for p in path.poses]
        assert [seconds(p.time_from_start) for p in trajectory.points] == times_ns, "time_from_start: k x dt"
        assert all(a.pose == b.pose for a, b in zip(trajectory.points, path.poses)), "the same poses, headings too"
        points = np.array([[p.pose.position.x, p.pose.position.y] for p in path.poses])
        times = np.array(times_ns) * 1e-9
        steps = np.linalg.norm(np.diff(points, axis=0), axis=1) / np.diff(times)      # the plan's own speeds
        motion = trajectory_kinematics(points, times)
        got = {name: np.array([getattr(p, name) for p in trajectory.points]) for name in (
            "longitudinal_velocity_mps", "acceleration_mps2", "heading_rate_rps", "lateral_velocity_mps",
            "front_wheel_angle_rad", "rear_wheel_angle_rad")}
        np.testing.assert_allclose(got["longitudinal_velocity_mps"], np.concatenate([steps[:1], steps]), rtol=1e-6)
        np.testing.assert_allclose(got["acceleration_mps2"], motion.accel_mps2, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(got["heading_rate_rps"], motion.yaw_rate_rps, rtol=1e-6, atol=1e-5)
        for zero in ("lateral_velocity_mps", "front_wheel_angle_rad", "rear_wheel_angle_rad"):
            assert not got[zero].any(), f"{zero} is not filled: 0"


def test_without_autoware_the_node_refuses_to_start_saying_what_to_do(tmp_path):
    result = subprocess.run([sys.executable, "-m", "deead_ros.ros.node", *NODE_ARGS], env=sourced_env(None),
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "autoware" in line]
    assert lines == [
        "deead_node: cannot start: output.autoware_trajectory is true but Autoware's autoware_planning_msgs cannot be "
        "loaded (ModuleNotFoundError: No module named 'autoware_planning_msgs'); source the Autoware workspace (its "
        "install/setup.bash) before starting deead_node, or set output.autoware_trajectory false"], result.stderr
