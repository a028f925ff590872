"""deead_node: plans a trajectory per camera frame with action-guided early exit.

Thin by design: subscription callbacks only store the newest message; one worker thread owns the
engines, converts the newest frame, calls the runner and publishes. Frames that arrive while the
model is busy replace the waiting one and are counted as superseded, so latency stays bounded.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any, Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.experimental import EventsExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import Imu
from std_msgs.msg import Float64, String

from deead_ros.engines import make_engine
from deead_ros.errors import BadInputError, ConfigError, DeeadError
from deead_ros.frame_assembly import PATH_HISTORY, AssembledFrame, CameraStampGuard, LatestInputs, stamp_s
from deead_ros.parameter_files import check_params_files, params_file_paths
from deead_ros.paths import demo_manifest_path
from deead_ros.health import FrameStats, assess, lifecycle_status
from deead_ros.ros import ros_io
from deead_ros.ros.autoware import AutowareTrajectoryOutput
from deead_ros.ros.cameras import Cameras, frame_message
from deead_ros.ros.debug import DebugOutput
from deead_ros.ros.params import (GuardedParameterService, NodeConfig, candidate_values, config_from_values,
                                  declare_all, sensor_problem, with_declared_types)
from deead_ros.runner import EgoPose, Runner
from deead_ros.trajectory_kinematics import trajectory_kinematics
from deead_ros_msgs.msg import ExitDiagnostics

INPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
ODOMETRY_QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)   # the history wants every sample (IMU too)
ROUTE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Routes: a few kept (LatestInputs picks the one of the camera's instant by stamp), none lost to a busy executor.
PATH_QOS = QoSProfile(depth=PATH_HISTORY, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
_THROTTLE_S = 5.0


def _ego_pose(frame: AssembledFrame) -> EgoPose | None:
    """The ego pose at the camera stamp, for carrying the last valid plan forward; None when unknown."""
    ego = frame.ego
    if ego is None:
        return None
    return EgoPose(frame.camera_stamp_s, ego.x, ego.y, ego.yaw)


def build_runner(config: NodeConfig) -> Runner:
    """Load the engines the configuration names and wrap them in a Runner (fails with a clear error)."""
    chain = make_engine(config.backend, config.model_file_path or demo_manifest_path(),
                        num_threads=config.num_threads, precision=config.precision,
                        engine_cache_dir=config.engine_cache_dir or None,
                        force_engine_update=config.force_engine_update,
                        execution_provider=config.execution_provider)
    return Runner(chain, config.exit, config.prior, validation_limits=config.validation,
                  memory_max_gap_s=config.memory_max_gap_s)


def guard_change_state(node: LifecycleNode) -> None:
    """Make an impossible lifecycle transition (activate while unconfigured, say) answer success = false.

    rclpy's ChangeState service raises inside the executor on a transition the current state does not
    have, which would end the node; here it is refused and logged with the transitions that are possible.
    """
    service = node._service_change_state
    change_state = service.callback

    def guarded(request: Any, response: Any) -> Any:
        try:
            return change_state(request, response)
        except RuntimeError as err:     # rclpy's RCLError: no such transition from this state
            node.get_logger().warning(
                f"lifecycle transition {request.transition.label or request.transition.id} refused in state "
                f"{node._state_machine.current_state[1]}: {err}")
            response.success = False
            return response
    service.callback = guarded


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


class DeeadNode(LifecycleNode):
    """A managed node: subscribes to camera, route, odometry and command; publishes the early-exit trajectory.

    Lifecycle (rclpy.lifecycle, as Nav2's nodes): configure checks the parameters as a whole and loads or
    builds the engines; activate subscribes and starts planning; deactivate stops planning (inputs are still
    received and counted); cleanup releases the engines; shutdown is clean from every state. With
    `autostart` (the default) the constructor configures and activates, so `deead_node` alone plans, and a
    failed configure raises ConfigError with the reason.
    """

    def __init__(self, **kwargs: Any) -> None:
        # rclpy's parameter services raise inside the executor on a malformed request: ours refuse it.
        super().__init__("deead_node", **{**kwargs, "start_parameter_services": False})
        # The one settings snapshot (frozen): swapped whole on a parameter change, read once per frame by the worker.
        self._config = config_from_values(declare_all(self))   # ConfigError: a start-up value's type or range
        self._runner: Runner | None = None        # the engines: loaded at configure, released at cleanup
        self._inputs: LatestInputs | None = None
        self._failure = ""                        # why the last transition failed ("" after one that succeeded)
        self.add_pre_set_parameters_callback(with_declared_types)     # an integer for a double: that double
        self.add_on_set_parameters_callback(self._on_set_parameters)  # validates only
        self.add_post_set_parameters_callback(self._after_set_parameters)   # swaps in the new snapshot
        self._parameter_service = GuardedParameterService(self)
        guard_change_state(self)

        self.stats = FrameStats(window_s=self._config.io.diagnostics_window_s)
        self._mailbox = Mailbox()
        self._stamps = CameraStampGuard()
        self._input_subscriptions: list[Any] = []
        self._planning = threading.Event()        # set while active: the camera callback fills the mailbox
        self._worker: threading.Thread | None = None
        self._trajectory_pub = self.create_lifecycle_publisher(Path, "~/output/trajectory", OUTPUT_QOS)
        self._trajectory_msg, self._prior_msg = ros_io.PathWriter(), ros_io.PathWriter()   # the worker's, reused
        self._exit_pub = self.create_lifecycle_publisher(ExitDiagnostics, "~/output/exit_diagnostics", OUTPUT_QOS)
        self._prior_pub = self.create_lifecycle_publisher(Path, "~/debug/prior", OUTPUT_QOS)
        self._time_pub = self.create_lifecycle_publisher(Float64, "~/debug/processing_time_ms", OUTPUT_QOS)
        self._autoware: AutowareTrajectoryOutput | None = None   # made at configure (output.autoware_trajectory)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)   # in every state
        # ~/debug/image and ~/debug/markers (drawn only while subscribed), and the optional Foxglove server
        self.debug = DebugOutput(self, lambda: self._config.debug, self.stats.note_rejected_input,
                                  {"trajectory": self._trajectory_pub.topic_name,
                                   "exit_diagnostics": self._exit_pub.topic_name})
        self.create_timer(self._config.io.diagnostics_period_s, self._publish_diagnostics)
        self._starting = self._config.autostart   # a failure then ends the start, saying why once (main prints it)
        if self._starting:
            for transition in (self.trigger_configure, self.trigger_activate):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    raise ConfigError(self._failure)
            self._starting = False

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def lifecycle_state(self) -> str:
        """unconfigured | inactive | active | finalized, or a transition state (configuring, ...)."""
        return str(self._state_machine.current_state[1])

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check the parameters, load or build the engines (minutes for a TensorRT build), check them together."""
        config = self._config
        log = self.get_logger()
        try:
            problem = config.problem(None)
            if problem:
                raise ConfigError(problem)
            if config.autoware_trajectory and self._autoware is None:
                self._autoware = AutowareTrajectoryOutput(self, OUTPUT_QOS)   # imports autoware_planning_msgs
            model = config.model_file_path or demo_manifest_path()
            log.info(f"configuring: opening {model} on {config.backend} (a TensorRT build can take minutes)")
            opened = time.perf_counter()
            runner = build_runner(config)
            self._runner = runner
            log.info(f"configuring: {runner.num_layers} layers ready on {runner.chain.backend} "
                     f"in {time.perf_counter() - opened:.1f} s")
            problem = config.problem(runner.num_layers) or sensor_problem(config, runner.chain.manifest.sensors)
            if problem:
                raise ConfigError(problem)
        except Exception as err:   # the transition boundary: the node stays unconfigured, saying why
            self._release_engines()
            self._failure = str(err) if isinstance(err, DeeadError) else f"{type(err).__name__}: {err}"
            if not self._starting:
                log.error(f"configure failed, the node stays unconfigured: {self._failure}")
            return TransitionCallbackReturn.FAILURE
        self._inputs = LatestInputs(on_rejected=self._reject_input, on_notice=self._input_notice,
                                    accel_window_s=runner.encoder.accel_window_s, source=lambda: self._config.inputs,
                                    decode_threads=config.decode_threads)
        self._cameras = Cameras(config, runner, self._inputs, self.stats, self._mailbox_put, self.get_logger(),
                                lambda: self._config.io.camera_sync_tolerance_s)
        self._manifest = runner.chain.manifest
        self._failure = ""
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe (first activation) and start the worker."""
        if not self._input_subscriptions:
            self._subscribe()
        self._planning.set()
        self._worker = threading.Thread(target=self._work, name="deead_inference", daemon=True)
        self._worker.start()
        config, runner = self._config, self._runner
        assert runner is not None   # activate follows a successful configure
        self.get_logger().info(
            f"planning with {runner.chain.backend} on {runner.num_layers} layers "
            f"(model {self._manifest.model_version}); policy {config.exit.policy}, "
            f"delta {config.exit.delta_m} m, prior {config.prior.source}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop planning; the subscriptions stay, so inputs are still received and counted."""
        if not self._stop_worker():
            return TransitionCallbackReturn.FAILURE
        if self._runner is not None:
            self._runner.reset_memory("the node was deactivated")   # a model with memory starts afresh
        self._cameras.clear()
        self.get_logger().info("deactivated: frames are counted, not planned")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and release the engines (sessions, TensorRT contexts, device memory)."""
        self._unsubscribe()
        self._release_engines()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop the worker, unsubscribe, release the engines."""
        self._stop_worker()
        self._unsubscribe()
        self._release_engines()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release what it held; the node returns to unconfigured."""
        self._failure = self._failure or f"a transition from {state.label} raised (see the log)"
        self._stop_worker()
        self._unsubscribe()
        self._release_engines()
        return TransitionCallbackReturn.SUCCESS

    def _subscribe(self) -> None:
        inputs = self._inputs
        assert inputs is not None
        # The cameras last: the executor runs the ready callbacks of one wait in creation order, so the
        # route and odometry that arrived with a frame are stored before the worker can take it.
        subscriptions = (("route", Path, inputs.set_route, PATH_QOS),
                         ("odometry", Odometry, inputs.set_odometry, ODOMETRY_QOS),
                         ("imu", Imu, inputs.set_imu, ODOMETRY_QOS),
                         ("command", String, inputs.set_command, ROUTE_QOS),
                         ("external_prior", Path, inputs.set_external, INPUT_QOS),
                         *self._cameras.subscriptions(self._camera_info))
        self._input_subscriptions = [
            self.create_subscription(msg_type, f"~/input/{name}", self._counted(name, store), qos)
            for name, msg_type, store, qos in subscriptions]

    def _unsubscribe(self) -> None:
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []

    def _stop_worker(self) -> bool:
        """Stop taking frames and join the worker; False when a frame is still in the engine after 5 s."""
        self._planning.clear()
        worker, self._worker = self._worker, None
        if worker is None:
            return True
        worker.join(timeout=5.0)
        if worker.is_alive():
            self._worker = worker
            self.get_logger().warning("the planning thread did not stop within 5 s (a frame still in the engine); "
                                      "the engines stay open rather than be freed under it")
            return False
        if self._mailbox.take(timeout_s=0.0) is not None:
            self.stats.note_dropped("inactive")
        return True

    def _release_engines(self) -> None:
        runner, self._runner, inputs, self._inputs = self._runner, None, self._inputs, None
        if inputs is not None:
            inputs.close()                                  # the decoding threads of several cameras
        if runner is not None and self._worker is None:     # never under a worker still in the engine
            runner.chain.close()

    # -- parameters -------------------------------------------------------------------------------
    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Validate the candidate configuration as a whole; change nothing (the post-set callback applies)."""
        runner = self._runner
        problem = config_from_values(candidate_values(self._config.values, params)).problem(
            runner.num_layers if runner is not None else None)
        return SetParametersResult(successful=problem is None, reason=problem or "")

    def _after_set_parameters(self, params: list) -> None:
        """Apply parameters rclpy has accepted and stored: a new snapshot, swapped in one assignment (a frame in
        flight keeps the one it read; the input callbacks read the new one from their next message)."""
        self._config = config_from_values(candidate_values(self._config.values, params))

    # -- inputs: store the newest message, nothing else --------------------------------------------
    def _counted(self, topic: str, store: Callable[[Any], None]) -> Callable[[Any], None]:
        is_path = topic in ("route", "external_prior")     # a path stamped 0 is static (latched): never stale

        def callback(msg: Any) -> None:
            self.stats.note_input(topic, static=is_path and stamp_s(msg.header.stamp) == 0.0)
            store(msg)
        return callback

    def _mailbox_put(self, msg: Any) -> None:
        if not self._planning.is_set():
            self.stats.note_dropped("inactive")
        elif self._mailbox.put(msg):
            self.stats.note_dropped("superseded")

    def _camera_info(self, camera: str, msg: Any) -> None:     # several: for the views; the first: debug image
        if self._inputs is not None and self._cameras.sync is not None:
            self._inputs.set_camera_info(camera, msg)
        if camera == self._cameras.names[0]:
            self.debug.set_camera_info(msg)

    def _input_notice(self, key: str, reason: str) -> None:
        """An input used after a change worth counting (odometry history reset, command truncated)."""
        self.stats.note_rejected_input(key)
        if key == "odometry_reset" and self._runner is not None:
            self._runner.reset_memory(reason)              # a model with memory starts afresh
        self.get_logger().warning(reason, throttle_duration_sec=_THROTTLE_S)

    def _reject_input(self, topic: str, reason: str) -> None:
        self.stats.note_rejected_input(topic)
        self.get_logger().warning(f"{reason}; planning without it", throttle_duration_sec=_THROTTLE_S)

    # -- the worker: sole user of the engines ------------------------------------------------------
    def _work(self) -> None:
        runner, inputs = self._runner, self._inputs
        assert runner is not None and inputs is not None     # the worker runs only while active
        while self._planning.is_set():
            msg = self._mailbox.take(timeout_s=0.1)
            if msg is None:
                continue
            try:
                self._plan(msg, runner, inputs)
            except BadInputError as err:                   # bad_input, or camera_mismatch (refused)
                self.stats.note_dropped(err.drop_reason)
                self.get_logger().warning(f"camera frame rejected: {err}", throttle_duration_sec=_THROTTLE_S)
            except Exception as err:   # the thread boundary: an engine failure must not end planning
                self.stats.note_dropped("engine_error")
                self.get_logger().error(f"planning failed ({type(err).__name__}: {err}); frame dropped",
                                        throttle_duration_sec=_THROTTLE_S)

    def _plan(self, item: Any, runner: Runner, inputs: LatestInputs) -> None:
        """Plan a camera message, or a set of several cameras' (stamped as its first camera)."""
        taken, config = time.perf_counter(), self._config        # this frame's settings: read once, passed down
        msg = frame_message(item)
        now_s = self.get_clock().now().nanoseconds * 1e-9
        refusal = self._stamps.refuse(stamp_s(msg.header.stamp), now_s, config.io.max_frame_age_s,
                                      config.io.max_future_s)
        if refusal is not None:
            reason, message = refusal
            self.stats.note_dropped(reason)
            self.get_logger().warning(f"camera frame dropped: {message}", throttle_duration_sec=_THROTTLE_S)
            return
        assembling = time.perf_counter()
        inputs.wait_for_instant(stamp_s(msg.header.stamp), settings=config.inputs)   # odometry, a due route: bounded
        frame = self._cameras.assemble(item, config)
        assembly_ms = (time.perf_counter() - assembling) * 1e3 - frame.decode_ms
        result = runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known,
                             external_ego_m=frame.external_ego_m, ego_pose=_ego_pose(frame), settings=config.runner)
        if result.memory_reset:                              # a model with memory started afresh: counted
            self._input_notice("memory_reset", result.memory_reset)
        if result.fallback:
            self.get_logger().error(
                f"trajectory failed validation ({result.validation.reason}); published the {result.fallback} "
                "fallback instead (ExitDiagnostics.valid = false)", throttle_duration_sec=_THROTTLE_S)
        frame_id, stamp = config.io.frame_id, msg.header.stamp
        path = self._trajectory_msg.fill(result.trajectory_m, stamp, frame_id, runner.times_s)   # each pose when due
        self._trajectory_pub.publish(path)
        if self._autoware is not None:     # the same plan, as Autoware's Trajectory (output.autoware_trajectory)
            self._autoware.publish(path, trajectory_kinematics(result.trajectory_m, runner.times_s))
        node_ms = (time.perf_counter() - taken) * 1e3
        exit_msg = ros_io.exit_diagnostics(
            result, stamp, frame_id, config.exit.delta_m, frame.prior_age_s, runner.chain.backend,
            self._manifest.model_version, input_wait_ms=(now_s - frame.camera_stamp_s) * 1e3, node_ms=node_ms,
            decode_ms=frame.decode_ms, assembly_ms=assembly_ms)
        self._exit_pub.publish(exit_msg)
        if result.prior.trajectory_m is not None:           # a valid prior
            self._prior_pub.publish(self._prior_msg.fill(result.prior.trajectory_m, stamp, frame_id, runner.times_s))
        self._time_pub.publish(Float64(data=result.total_ms))
        self.stats.note_planned(result.trace.exit_layer, result.trace.num_layers, result.total_ms, result.prior.source,
                                fallback=result.fallback, refused_exits=result.trace.refused_exits,
                                validation=result.validation.reason, over_budget=result.trace.over_budget)
        try:    # after the plan is out: drawing never delays it, and never costs it (the frame is planned)
            self.debug.publish(msg, config.camera_format == "raw", frame.inputs.image_rgb, result,
                                config.exit.delta_m, config.debug, path, exit_msg)
        except Exception as err:   # PIL, the middleware, the Foxglove server: debug output must not end planning
            self.get_logger().error(f"debug output failed ({type(err).__name__}: {err}); the plan was published",
                                    throttle_duration_sec=_THROTTLE_S)

    # -- diagnostics -------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        """The lifecycle state in every state; the planning statuses once the engines are loaded."""
        config, runner = self._config, self._runner
        statuses = [lifecycle_status(self.lifecycle_state, self._failure)]
        if runner is not None:
            required = ("odometry",) + {"route": ("route",), "external": ("external_prior",)}.get(
                config.prior.source, ())
            statuses += assess(self.stats.snapshot(), config.io.latency_deadline_ms, runner.chain.backend,
                               self._manifest.model_version, max_input_age_s=config.io.max_input_age_s,
                               required_inputs=required) + [self._cameras.contract.status()]
        self._diag_pub.publish(ros_io.diagnostic_array(statuses, self.get_clock().now().to_msg(), self.get_name()))

    @property
    def executor_name(self) -> str:
        return self._config.executor

    def shutdown(self) -> None:
        """The shutdown transition from whatever state the node is in (the worker joined before the engines go),
        then the debug output closed; call before destroy_node."""
        if self.lifecycle_state != "finalized":
            self.trigger_shutdown()
        self.debug.close()


def make_executor(name: str) -> Executor:
    """The executor the `executor` parameter names (events: rclpy's EventsExecutor, less CPU per callback)."""
    return EventsExecutor() if name == "events" else SingleThreadedExecutor()


def spin_until_signalled(executor: Executor) -> None:
    """Spin until SIGINT or SIGTERM, seen within 0.1 s; the signals only ask the loop to stop.

    In slices of spin_once: rclpy 7.1's EventsExecutor.spin() neither returns on a signal nor idles.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass


def main(argv: list[str] | None = None) -> int:
    """Run deead_node: `deead_node --ros-args --params-file config/deead_node.param.yaml [-p name:=value]`."""
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="deead_node", description=__doc__.splitlines()[0],
        epilog="ROS arguments follow --ros-args: --params-file config/deead_node.param.yaml, -p exit.delta_m:=1.0, "
               "-r ~/input/image:=/camera/image/compressed. Parameters: README.md or `ros2 param describe`.")
    try:
        parser.parse_args(remove_ros_args(argv)[1:])
        # No rclpy signal handlers: they shut the context down while the worker may still publish.
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as err:   # rclpy's RCLError family (not public): a params file missing or not YAML, ...
        print(f"deead_node: cannot start: bad ROS arguments: {err}", file=sys.stderr)
        return 2
    try:
        check_params_files(params_file_paths(argv))
        node = DeeadNode()
    except DeeadError as err:
        print(f"deead_node: cannot start: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 130
    # SIGINT / SIGTERM only ask the loop to stop; then, in order: the worker stops and is joined (nothing
    # publishes after that), the node is destroyed, and only then the context shuts down.
    executor = make_executor(node.executor_name)
    executor.add_node(node)
    try:
        spin_until_signalled(executor)
    finally:
        node.shutdown()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
