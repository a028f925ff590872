"""Inputs of the camera's instant: two live replays of a bag publish the same plans, and deead_eval agrees.

The node takes the ego state at each frame's stamp (waiting, bounded, for odometry at or after it)
and the route of that instant, so what it plans no longer depends on thread timing; deead_eval
assembles the bag's frames with the same code and the same rule.
"""
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Path  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from deead_ros.frame_assembly import model_image_hw, path_points, stamp_s  # noqa: E402
from deead_ros import bags as topics  # noqa: E402

FRAMES_IN_BAG = 40
LAST_STAMP_S = 1_700_000_000 + 9.4                       # the fixture bag's last camera stamp (make_bag's epoch)
FIRST_CHECKPOINT = 2


def node_command(model) -> list[str]:
    # The default wait for odometry (0.1 s) bounds latency on a vehicle; a loaded test machine can take
    # longer to deliver a message, and what is under test is that the same samples give the same plan.
    command = [sys.executable, "-m", "deead_ros.ros.node", "--ros-args", "-p", f"model_file_path:={model}",
               "-p", f"exit.first_checkpoint:={FIRST_CHECKPOINT}", "-p", "io.odometry_wait_s:=1.0"]
    for name, topic in {"image": topics.CAMERA_COMPRESSED, "route": topics.ROUTE, "odometry": topics.ODOMETRY,
                        "command": topics.COMMAND}.items():
        command += ["-r", f"~/input/{name}:={topic}"]
    return command


def published_plans(listener: Node) -> dict[float, np.ndarray]:
    """{camera stamp: trajectory} of the node's plans, filled as the listener spins."""
    plans: dict[float, np.ndarray] = {}

    def record(msg: Path) -> None:
        plans[stamp_s(msg.header.stamp)] = path_points(msg)

    listener.create_subscription(Path, "/deead_node/output/trajectory", record, 50)
    return plans


def replay(executor, bag, plans: dict, rate: float) -> dict:
    """Play the bag once into the running node; return {camera stamp: trajectory} published meanwhile."""
    plans.clear()
    process = subprocess.Popen([sys.executable, "-m", "deead_ros.ros.replay", str(bag), "--rate", str(rate),
                                "--wait-for-subscribers", "10"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    settle = time.monotonic() + 3.0                      # the last frames are still being planned
    while time.monotonic() < settle and max(plans, default=0.0) < LAST_STAMP_S - 0.05:
        executor.spin_once(timeout_sec=0.05)
    assert process.wait(timeout=5) == 0
    return dict(plans)


def offline_plans(model, bag) -> dict:
    """deead_eval's frames of the bag, planned with the node's defaults: {camera stamp: trajectory}."""
    from deead_ros.engines import make_engine
    from deead_ros.exit import ExitSettings, PriorSettings
    from deead_ros.runner import Runner
    from deead_lab.eval import bag_frames
    runner = Runner(make_engine("onnxruntime", model, num_threads=1), ExitSettings(first_checkpoint=FIRST_CHECKPOINT),
                    PriorSettings())
    plans = {}
    for frame in bag_frames(bag, runner.encoder.accel_window_s, model_image_hw(runner.encoder)):
        result = runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known, external_ego_m=frame.external_ego_m)
        plans[frame.camera_stamp_s] = result.trajectory_m
    return plans


def test_two_replays_publish_the_same_plans_and_agree_with_deead_eval(small_model, fixture_bag, ros_context):
    node = subprocess.Popen(node_command(small_model), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listener = rclpy.create_node("instants_listener", context=ros_context)
    plans = published_plans(listener)
    spinning: list[DiagnosticArray] = []          # the node's /diagnostics timer fires only once its executor spins
    listener.create_subscription(DiagnosticArray, "/diagnostics", spinning.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 30          # a loaded machine: the node may exist well before it spins
        while not spinning and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        first = replay(executor, fixture_bag, plans, rate=1.0)
        second = replay(executor, fixture_bag, plans, rate=2.0)   # faster, and after a jump back in time
    finally:
        node.terminate()
        output = node.communicate(timeout=20)[0]
        listener.destroy_node()
    offline = offline_plans(small_model, fixture_bag)
    assert len(offline) == FRAMES_IN_BAG
    # Best effort may lose a frame in transport, a busy machine supersedes some at 2x, and the second
    # pass's first frame goes back in time (dropped as stamp_backwards); every frame planned must match.
    common = sorted(set(first) & set(second))
    assert len(common) >= FRAMES_IN_BAG // 2, f"planned {len(first)} and {len(second)} frames:\n{output}"
    def differ(a: dict, b: dict) -> list[str]:
        return [f"{s - 1.7e9:.1f} s: {np.abs(a[s] - b[s]).max():.4f} m" for s in sorted(set(a) & set(b))
                if not np.allclose(a[s], b[s], atol=1e-4)]
    assert not differ(first, second), f"the two replays planned frames differently: {differ(first, second)}\n{output}"
    assert not differ(first, offline), f"replay 1 and deead_eval differ: {differ(first, offline)}\n{output}"
    assert not differ(second, offline), f"replay 2 and deead_eval differ: {differ(second, offline)}\n{output}"


def test_a_route_recorded_after_its_camera_frame_is_waited_for_live_as_offline(small_model, tmp_path, ros_context):
    from deead_lab.make_bag import write_bag
    from test.conftest import REPO_ROOT
    episode = REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz"
    bag, route_first = tmp_path / "route_after_camera", tmp_path / "route_before_camera"
    write_bag([episode], bag, route_delay_s=0.03)
    write_bag([episode], route_first)
    node = subprocess.Popen(node_command(small_model), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listener = rclpy.create_node("route_after_listener", context=ros_context)
    plans = published_plans(listener)
    spinning: list[DiagnosticArray] = []
    listener.create_subscription(DiagnosticArray, "/diagnostics", spinning.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 30
        while not spinning and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        live = replay(executor, bag, plans, rate=1.0)
    finally:
        node.terminate()
        output = node.communicate(timeout=20)[0]
        listener.destroy_node()
    offline = offline_plans(small_model, bag)
    assert not [s for s in sorted(offline)[2:] if not np.allclose(offline[s], live.get(s, offline[s]), atol=1e-4)], \
        "live and deead_eval differ on the same bag"
    offline = offline_plans(small_model, route_first)     # each frame with the route of its instant
    stamps = sorted(offline)[2:]             # from the route's second message on, its period is known
    common = [s for s in stamps if s in live]
    assert len(common) >= len(stamps) // 2, f"planned {len(live)} of {len(offline)} frames:\n{output}"
    differ = [f"{s - 1.7e9:.1f} s" for s in common if not np.allclose(live[s], offline[s], atol=1e-4)]
    assert not differ, f"live plans not made with the route of their instant: {differ}\n{output}"
