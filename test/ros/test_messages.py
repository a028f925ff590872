"""deead_ros_msgs/ExitDiagnostics crosses a process boundary over Fast DDS on loopback."""
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.ros

PUBLISHER = textwrap.dedent("""
    import sys, time, rclpy
    from deead_ros_msgs.msg import ExitCheckpoint, ExitDiagnostics
    rclpy.init()
    node = rclpy.create_node("exit_diag_publisher")
    pub = node.create_publisher(ExitDiagnostics, "exit_diagnostics", 10)
    msg = ExitDiagnostics(exit_layer=17, layers_run=17, num_layers=24, exited_early=True,
                          reason=ExitDiagnostics.REASON_PRIOR_MATCHED, reason_text="prior matched",
                          checkpoints=[ExitCheckpoint(layer=10, deviation_m=9.5, next_stride=4),
                                       ExitCheckpoint(layer=14, deviation_m=4.5, next_stride=2),
                                       ExitCheckpoint(layer=16, deviation_m=2.5, next_stride=1),
                                       ExitCheckpoint(layer=17, deviation_m=1.25, next_stride=0)],
                          delta_m=2.0, policy="deead", prior_source="route", prior_age_s=0.05,
                          total_ms=12.5, backend="onnxruntime", model_version="test")
    msg.header.stamp.sec, msg.header.frame_id = 42, "base_link"
    deadline = time.time() + float(sys.argv[1])
    while time.time() < deadline:
        pub.publish(msg)
        time.sleep(0.05)
    rclpy.shutdown()
""")


def test_exit_diagnostics_between_two_processes(ros_context):
    import rclpy
    from deead_ros_msgs.msg import ExitDiagnostics
    node = rclpy.create_node("exit_diag_listener", context=ros_context)
    received: list[ExitDiagnostics] = []
    node.create_subscription(ExitDiagnostics, "exit_diagnostics", received.append, 10)
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, "20"], stderr=subprocess.PIPE, text=True)
    try:
        assert publisher.stderr is not None, "stderr=PIPE gives the publisher's stderr"
        executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        deadline = time.time() + 20
        while not received and time.time() < deadline and publisher.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert received, ("no ExitDiagnostics within 20 s; publisher stderr:\n"
                          f"{publisher.stderr.read() if publisher.poll() is not None else ''}")
        msg = received[0]
        assert (msg.exit_layer, msg.num_layers, msg.exited_early, msg.header.stamp.sec) == (17, 24, True, 42)
        assert [c.layer for c in msg.checkpoints] == [10, 14, 16, 17]
        assert [c.deviation_m for c in msg.checkpoints] == [9.5, 4.5, 2.5, 1.25]
        assert msg.reason == ExitDiagnostics.REASON_PRIOR_MATCHED and msg.backend == "onnxruntime"
    finally:
        publisher.kill()
        publisher.wait()
        node.destroy_node()
