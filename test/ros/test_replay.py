"""deead_replay plays a bag into deead_node running as its own process; every frame is accounted for."""
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from deead_ros.health import DROP_REASONS  # noqa: E402
from deead_ros import bags as topics  # noqa: E402
from deead_ros_msgs.msg import ExitDiagnostics  # noqa: E402

FRAMES_IN_BAG = 40


def frame_counts(counters: dict[str, str]) -> tuple[int, int, int]:
    """(received, planned, dropped) from the node's /diagnostics key-values."""
    dropped = sum(int(counters.get(f"dropped_{reason}", 0)) for reason in DROP_REASONS)
    return int(counters.get("frames_received", 0)), int(counters.get("frames_planned", 0)), dropped


def test_replayed_bag_is_planned_frame_by_frame(small_model, fixture_bag, ros_context):
    remaps = {"image": topics.CAMERA_COMPRESSED, "route": topics.ROUTE, "odometry": topics.ODOMETRY,
              "command": topics.COMMAND}
    command = [sys.executable, "-m", "deead_ros.ros.node", "--ros-args", "-p", f"model_file_path:={small_model}",
               "-p", "exit.first_checkpoint:=2", "-p", "exit.fixed_exit_layer:=3", "-p", "diagnostics.period_s:=0.2"]
    for name, topic in remaps.items():
        command += ["-r", f"~/input/{name}:={topic}"]
    node_process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listener = rclpy.create_node("replay_listener", context=ros_context)
    exits: dict[tuple[int, int], ExitDiagnostics] = {}
    counters: dict[str, str] = {}

    def record_exit(msg: ExitDiagnostics) -> None:
        exits[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def record_counters(msg: DiagnosticArray) -> None:
        counters.update({kv.key: kv.value for status in msg.status for kv in status.values})

    listener.create_subscription(ExitDiagnostics, "/deead_node/output/exit_diagnostics", record_exit, 50)
    listener.create_subscription(DiagnosticArray, "/diagnostics", record_counters, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 30
        while listener.count_publishers("/deead_node/output/exit_diagnostics") == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        replay = subprocess.Popen([sys.executable, "-m", "deead_ros.ros.replay", str(fixture_bag), "--rate", "2",
                                   "--wait-for-subscribers", "10"], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while replay.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        deadline = time.monotonic() + 5                   # the last frames are still being planned
        while time.monotonic() < deadline:
            received, planned, dropped = frame_counts(counters)
            if received == FRAMES_IN_BAG and received == planned + dropped and len(exits) == planned:
                break
            executor.spin_once(timeout_sec=0.05)
        assert replay.wait(timeout=5) == 0
        assert replay.stdout is not None, "stdout=PIPE gives the replay's output"
        assert "published 200 messages" in replay.stdout.read()
    finally:
        node_process.terminate()
        output = node_process.communicate(timeout=20)[0]
        listener.destroy_node()
    received, planned, dropped = frame_counts(counters)
    # Best effort may lose a frame in transport on a loaded machine; every frame the node got is accounted for.
    assert received >= FRAMES_IN_BAG - 2, f"the node received {received} of {FRAMES_IN_BAG} frames:\n{output}"
    assert received == planned + dropped, f"unaccounted frames: {counters}"
    assert len(exits) == planned, f"{planned} planned but {len(exits)} exit diagnostics arrived"
    assert planned >= FRAMES_IN_BAG // 2, f"only {planned} of {received} frames planned at 2x speed: {counters}"
    stamps = sorted(exits)
    assert all(e.prior_source == "route" and e.num_layers == 6 for e in exits.values())
    assert stamps[0][0] >= 1_700_000_000, "trajectories carry the bag's camera stamps"
