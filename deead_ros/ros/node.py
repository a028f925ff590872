"""deead_node: plans a trajectory per camera frame with action-guided early exit.

Thin by design: subscription callbacks only store the newest message; one worker thread owns the
engines, converts the newest frame, calls the runner and publishes. Frames that arrive while the
model is busy replace the waiting one and are counted as superseded, so latency stays bounded.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError, UnknownROSArgsError
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64, String

from deead_ros.engines import make_engine
from deead_ros.errors import BadInputError, ConfigError, DeeadError
from deead_ros.frame_assembly import CameraStampGuard, LatestInputs, stamp_s
from deead_ros.paths import demo_manifest_path
from deead_ros.health import FrameStats, assess
from deead_ros.ros import ros_io
from deead_ros.ros.params import NodeConfig, candidate_values, config_from_values, declare_all
from deead_ros.runner import Runner
from deead_ros_msgs.msg import ExitDiagnostics

# Sensor-data QoS (best effort, depth 5): a frame that waits while the executor is busy still reaches the
# mailbox, where it is counted as superseded, instead of vanishing uncounted in the middleware's queue.
CAMERA_QOS = qos_profile_sensor_data
INPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
ROUTE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
_THROTTLE_S = 5.0


def build_runner(config: NodeConfig) -> Runner:
    """Load the engines the configuration names and wrap them in a Runner (fails with a clear error)."""
    chain = make_engine(config.backend, config.model_file_path or demo_manifest_path(),
                        num_threads=config.num_threads, precision=config.precision,
                        engine_cache_dir=config.engine_cache_dir or None,
                        force_engine_update=config.force_engine_update)
    return Runner(chain, config.exit, config.prior)


class Mailbox:
    """A one-slot mailbox: put() replaces what waits there; take() waits for the next item."""

    def __init__(self) -> None:
        self._item: Any = None
        self._ready = threading.Condition()

    def put(self, item: Any) -> bool:
        """Store item; return True when it replaced one nobody took (a superseded frame)."""
        with self._ready:
            replaced = self._item is not None
            self._item = item
            self._ready.notify()
        return replaced

    def take(self, timeout_s: float) -> Any:
        with self._ready:
            if self._item is None:
                self._ready.wait(timeout_s)
            item, self._item = self._item, None
        return item


class DeeadNode(Node):
    """Subscribes to camera, route, odometry and command; publishes the early-exit trajectory."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("deead_node", **kwargs)
        self._values = declare_all(self)
        self._config = config_from_values(self._values)
        if self._config.camera_format not in ("raw", "compressed"):
            raise ConfigError(f"camera_format='{self._config.camera_format}' must be raw or compressed")
        self._runner = build_runner(self._config)
        self._manifest = self._runner.chain.manifest
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.stats = FrameStats(window_s=self._config.io.diagnostics_window_s)
        self._mailbox = Mailbox()
        self._stamps = CameraStampGuard()
        self._inputs = LatestInputs(frame_id=self._config.io.frame_id, on_rejected=self._reject_input,
                                    accel_window_s=self._runner.encoder.accel_window_s)
        image_type = Image if self._config.camera_format == "raw" else CompressedImage
        subscriptions = (("image", image_type, self._mailbox_put, CAMERA_QOS),
                         ("route", Path, self._inputs.set_route, ROUTE_QOS),
                         ("odometry", Odometry, self._inputs.set_odometry, INPUT_QOS),
                         ("command", String, self._inputs.set_command, ROUTE_QOS),
                         ("external_prior", Path, self._inputs.set_external, INPUT_QOS))
        for name, msg_type, store, qos in subscriptions:
            self.create_subscription(msg_type, f"~/input/{name}", self._counted(name, store), qos)
        self._trajectory_pub = self.create_publisher(Path, "~/output/trajectory", OUTPUT_QOS)
        self._exit_pub = self.create_publisher(ExitDiagnostics, "~/output/exit_diagnostics", OUTPUT_QOS)
        self._prior_pub = self.create_publisher(Path, "~/debug/prior", OUTPUT_QOS)
        self._time_pub = self.create_publisher(Float64, "~/debug/processing_time_ms", OUTPUT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self._config.io.diagnostics_period_s, self._publish_diagnostics)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="deead_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"planning with {self._runner.chain.backend} on {self._runner.num_layers} layers "
            f"(model {self._manifest.model_version}); policy {self._config.exit.policy}, "
            f"delta {self._config.exit.delta_m} m, prior {self._config.prior.source}")

    # -- parameters -------------------------------------------------------------------------------
    def _on_set_parameters(self, params: list) -> SetParametersResult:
        values = candidate_values(self._values, params)
        config = config_from_values(values)
        problem = config.problem(self._runner.num_layers)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        self._runner.configure(config.exit, config.prior)
        self._inputs.frame_id = config.io.frame_id
        self._values, self._config = values, config
        return SetParametersResult(successful=True)

    # -- inputs: store the newest message, nothing else --------------------------------------------
    def _counted(self, topic: str, store: Callable[[Any], None]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            self.stats.note_input(topic)
            store(msg)
        return callback

    def _mailbox_put(self, msg: Any) -> None:
        if self._mailbox.put(msg):
            self.stats.note_dropped("superseded")

    def _reject_input(self, topic: str, reason: str) -> None:
        self.stats.note_rejected_input(topic)
        self.get_logger().warning(f"{reason}; planning without it", throttle_duration_sec=_THROTTLE_S)

    # -- the worker: sole user of the engines ------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            msg = self._mailbox.take(timeout_s=0.1)
            if msg is None:
                continue
            try:
                self._plan(msg)
            except BadInputError as err:
                self.stats.note_dropped("bad_input")
                self.get_logger().warning(f"camera frame rejected: {err}", throttle_duration_sec=_THROTTLE_S)
            except Exception as err:   # the thread boundary: an engine failure must not end planning
                self.stats.note_dropped("engine_error")
                self.get_logger().error(f"planning failed ({type(err).__name__}: {err}); frame dropped",
                                        throttle_duration_sec=_THROTTLE_S)

    def _plan(self, msg: Any) -> None:
        taken = time.perf_counter()
        config = self._config
        now_s = self.get_clock().now().nanoseconds * 1e-9
        refusal = self._stamps.refuse(stamp_s(msg.header.stamp), now_s, config.io.max_frame_age_s,
                                      config.io.max_future_s)
        if refusal is not None:
            reason, message = refusal
            self.stats.note_dropped(reason)
            self.get_logger().warning(f"camera frame dropped: {message}", throttle_duration_sec=_THROTTLE_S)
            return
        frame = self._inputs.assemble(msg, config.camera_format == "raw", config.io.max_input_age_s,
                                      use_external=config.prior.source == "external")
        result = self._runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known,
                                   external_ego_m=frame.external_ego_m)
        frame_id, stamp = config.io.frame_id, msg.header.stamp
        self._trajectory_pub.publish(ros_io.trajectory_path(result.trajectory_m, stamp, frame_id))
        node_ms = (time.perf_counter() - taken) * 1e3
        self._exit_pub.publish(ros_io.exit_diagnostics(
            result, stamp, frame_id, config.exit.delta_m, frame.prior_age_s, self._runner.chain.backend,
            self._manifest.model_version, input_wait_ms=(now_s - frame.camera_stamp_s) * 1e3, node_ms=node_ms))
        if result.prior.is_valid:
            self._prior_pub.publish(ros_io.trajectory_path(result.prior.trajectory_m, stamp, frame_id))
        self._time_pub.publish(Float64(data=result.total_ms))
        self.stats.note_planned(result.trace.exit_layer, result.trace.num_layers, result.total_ms, result.prior.source)

    # -- diagnostics -------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        statuses = assess(self.stats.snapshot(), self._config.io.latency_deadline_ms, self._runner.chain.backend,
                          self._manifest.model_version)
        self._diag_pub.publish(ros_io.diagnostic_array(statuses, self.get_clock().now().to_msg(), self.get_name()))

    def shutdown(self) -> None:
        """Stop and join the worker before the node is destroyed."""
        self._stop.set()
        self._worker.join(timeout=5.0)


def main(argv: list[str] | None = None) -> int:
    """Run deead_node: `deead_node --ros-args --params-file config/deead.yaml [-p name:=value]`."""
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="deead_node", description=__doc__.splitlines()[0],
        epilog="ROS arguments follow --ros-args: --params-file config/deead.yaml, -p exit.delta_m:=1.0, "
               "-r ~/input/image:=/camera/image/compressed. Parameters: README.md or `ros2 param describe`.")
    try:
        parser.parse_args(remove_ros_args(argv)[1:])
        rclpy.init(args=argv)
    except (RCLError, UnknownROSArgsError) as err:   # e.g. a --params-file that does not exist or is not YAML
        print(f"deead_node: cannot start: bad ROS arguments: {err}", file=sys.stderr)
        return 2
    try:
        node = DeeadNode()
    except DeeadError as err:
        print(f"deead_node: cannot start: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
