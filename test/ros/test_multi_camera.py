"""Six cameras, the IMU and a model memory, live: deead_replay plays the six-camera bag into deead_node running the
six-camera, stateful test model, and every plan it publishes is the plan deead_eval's frames give offline.

The model remembers its last four plans, so a frame planned live matches offline only when every frame before
it was planned in the same order, from the same synchronised set of six views, with the same IMU sample, and
the memory was made from the same exit layer (delta 3 m: some frames exit at layer 2, the rest at 4).
"""
import json
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

from deead_ros import bags as topics  # noqa: E402
from deead_ros.frame_assembly import path_points, stamp_s  # noqa: E402
from deead_lab.make_bag import ORION_CAMERAS  # noqa: E402
from deead_ros_msgs.msg import ExitDiagnostics  # noqa: E402
from test.conftest import MULTI_VIEW_LAYERS, REPO_ROOT  # noqa: E402

FRAMES_IN_BAG = 40
FIRST_CHECKPOINT, DELTA_M = 2, 3.0
# A random model's plans stop or start harder than a car can; these limits let every plan through, so that
# what is compared is the model's plan (the node's fallbacks depend on its ego pose history).
LIMITS = {"validation.max_decel_mps2": 100.0, "validation.max_accel_mps2": 100.0}


def node_command(model) -> list[str]:
    command = [sys.executable, "-m", "deead_ros.ros.node", "--ros-args", "-p", f"model_file_path:={model}",
               "-p", f"exit.first_checkpoint:={FIRST_CHECKPOINT}", "-p", f"exit.delta_m:={DELTA_M}",
               "-p", "io.odometry_wait_s:=1.0", "-p", f"cameras:=[{','.join(ORION_CAMERAS)}]",
               "-p", "diagnostics.period_s:=0.2"]
    for name, value in LIMITS.items():
        command += ["-p", f"{name}:={value}"]
    remaps = {"route": topics.ROUTE, "odometry": topics.ODOMETRY, "command": topics.COMMAND, "imu": topics.IMU}
    for camera in ORION_CAMERAS:
        compressed, _, info = topics.camera_topics(camera)
        remaps |= {f"{camera}/image": compressed, f"{camera}/camera_info": info}
    for name, topic in remaps.items():
        command += ["-r", f"~/input/{name}:={topic}"]
    return command


def offline_plans(model, bag) -> tuple[dict, list[int]]:
    """deead_eval's frames of the bag planned in order with the node's settings: ({stamp: plan}, exit layers)."""
    from deead_ros.engines import make_engine
    from deead_ros.engines.manifest import load_manifest
    from deead_ros.exit import ExitSettings, PriorSettings
    from deead_ros.exit.validation import ValidationLimits
    from deead_ros.runner import Runner
    from deead_lab.eval import bag_frames
    runner = Runner(make_engine("onnxruntime", model), ExitSettings(first_checkpoint=FIRST_CHECKPOINT, delta_m=DELTA_M),
                    PriorSettings(), validation_limits=ValidationLimits(max_decel_mps2=100.0, max_accel_mps2=100.0))
    plans, layers = {}, []
    for frame in bag_frames(bag, runner.encoder.accel_window_s, sensors=load_manifest(model).sensors):
        result = runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known)
        plans[frame.camera_stamp_s] = result.trajectory_m
        layers.append(result.trace.exit_layer)
    return plans, layers


def test_live_plans_from_six_cameras_match_deead_eval(multi_view_model, six_camera_bag, ros_context):
    node = subprocess.Popen(node_command(multi_view_model), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listener = rclpy.create_node("multi_camera_listener", context=ros_context)
    plans: dict[float, np.ndarray] = {}
    exits: dict[float, ExitDiagnostics] = {}
    counters: dict[str, str] = {}

    def on_plan(msg: Path) -> None:
        plans[stamp_s(msg.header.stamp)] = path_points(msg)

    def on_exit(msg: ExitDiagnostics) -> None:
        exits[stamp_s(msg.header.stamp)] = msg

    def on_diagnostics(msg: DiagnosticArray) -> None:
        counters.update({kv.key: kv.value for status in msg.status for kv in status.values})

    listener.create_subscription(Path, "/deead_node/output/trajectory", on_plan, 50)
    listener.create_subscription(ExitDiagnostics, "/deead_node/output/exit_diagnostics", on_exit, 50)
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 60          # a loaded machine: the node may exist well before it spins
        while not counters and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        # Half speed: a frame superseded while the model is busy would leave the live memory behind offline's.
        replay = subprocess.Popen([sys.executable, "-m", "deead_ros.ros.replay", str(six_camera_bag), "--rate", "0.5",
                                   "--wait-for-subscribers", "10"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while replay.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        settle = time.monotonic() + 5.0           # the last frames are still being planned
        while time.monotonic() < settle and len(plans) < FRAMES_IN_BAG:
            executor.spin_once(timeout_sec=0.05)
        assert replay.wait(timeout=5) == 0
    finally:
        node.terminate()
        output = node.communicate(timeout=20)[0]
        listener.destroy_node()
    offline, layers = offline_plans(multi_view_model, six_camera_bag)
    assert len(offline) == FRAMES_IN_BAG and {2, MULTI_VIEW_LAYERS} <= set(layers), layers
    assert len(plans) == FRAMES_IN_BAG, (f"planned {len(plans)} of {FRAMES_IN_BAG} sets live; counters {counters}"
                                         f"\n{output}")
    differ = [f"{s - 1.7e9:.2f} s: {np.abs(plans[s] - offline[s]).max():.5f} m" for s in sorted(offline)
              if s not in plans or not np.allclose(plans[s], offline[s], atol=1e-4)]
    assert not differ, f"live and deead_eval plans differ: {differ}\n{output}"
    assert [exits[s].exit_layer for s in sorted(exits)] == layers
    assert "planning with onnxruntime on 4 layers" in output


def test_deead_eval_runs_the_six_camera_bag(multi_view_model, six_camera_bag, tmp_path):
    result = subprocess.run([sys.executable, "-m", "deead_lab.eval", str(six_camera_bag), "--model",
                             str(multi_view_model), "--first-checkpoint", str(FIRST_CHECKPOINT), "--delta",
                             str(DELTA_M), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["full"]["frames"] == FRAMES_IN_BAG and summary["full"]["mean_exit_layer"] == MULTI_VIEW_LAYERS


def test_the_node_names_the_cameras_a_model_needs_and_resets_its_memory_on_deactivation_and_odometry_resets(
        multi_view_model, ros_context):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from deead_ros.ros.node import DeeadNode
    ok = TransitionCallbackReturn.SUCCESS

    def node(**values):
        return DeeadNode(context=ros_context, parameter_overrides=[
            Parameter("autostart", value=False), Parameter("model_file_path", value=str(multi_view_model)),
            Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT),
            *(Parameter(name, value=value) for name, value in values.items())])

    unnamed = node()
    try:
        assert unnamed.trigger_configure() != ok and unnamed.lifecycle_state == "unconfigured"
        assert "set the parameter cameras: ['front', 'front_left'" in unnamed._failure
    finally:
        unnamed.destroy_node()
    named = node(cameras=list(ORION_CAMERAS[::-1]))           # any order: the views go in the manifest's
    try:
        assert named.trigger_configure() == ok and named.trigger_activate() == ok
        runner = named._runner
        assert runner is not None and runner.memory is not None
        assert named._cameras.names == ORION_CAMERAS
        for trigger, reason in ((named.trigger_deactivate, "the node was deactivated"),
                                (lambda: named._input_notice("odometry_reset", "odometry pose jumped"),
                                 "odometry pose jumped")):
            runner.memory.store("live", ("a plan",), 5.0)
            trigger()
            assert runner.memory.take("live", 5.1) == ((), reason)
    finally:
        named.trigger_shutdown()
        named.destroy_node()
