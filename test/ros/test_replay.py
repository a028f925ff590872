"""deead_replay plays a bag into deead_node running as its own process; every frame is accounted for."""
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from deead_ros.tools import bags as topics  # noqa: E402
from deead_ros_msgs.msg import ExitDiagnostics  # noqa: E402


def test_replayed_bag_is_planned_frame_by_frame(small_model, fixture_bag, ros_context):
    remaps = {"image": topics.CAMERA_COMPRESSED, "route": topics.ROUTE, "odometry": topics.ODOMETRY,
              "command": topics.COMMAND}
    command = [sys.executable, "-m", "deead_ros.ros.node", "--ros-args", "-p", f"model_file_path:={small_model}",
               "-p", "exit.first_checkpoint:=2", "-p", "exit.fixed_exit_layer:=3"]
    for name, topic in remaps.items():
        command += ["-r", f"~/input/{name}:={topic}"]
    node_process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listener = rclpy.create_node("replay_listener", context=ros_context)
    exits = {}
    listener.create_subscription(ExitDiagnostics, "/deead_node/output/exit_diagnostics",
                                 lambda m: exits.__setitem__((m.header.stamp.sec, m.header.stamp.nanosec), m), 50)
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
        deadline = time.monotonic() + 3                   # the last frames are still being planned
        while len(exits) < 40 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert replay.wait(timeout=5) == 0
        assert "published 200 messages" in replay.stdout.read()
    finally:
        node_process.terminate()
        output = node_process.communicate(timeout=20)[0]
        listener.destroy_node()
    assert len(exits) >= 38, f"only {len(exits)} of 40 frames planned at 2x speed:\n{output}"
    stamps = sorted(exits)
    assert all(e.prior_source == "route" and e.num_layers == 6 for e in exits.values())
    assert stamps[0][0] >= 1_700_000_000, "trajectories carry the bag's camera stamps"
