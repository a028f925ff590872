"""deead_node end to end: in-process and as its own process, on a small exported model (onnxruntime)."""
import io
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image as PilImage

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402  (after the marker: conftest skips without rclpy)
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from deead_ros_msgs.msg import ExitDiagnostics  # noqa: E402
from test.conftest import RUNTIME_ROOT, SMALL_MODEL_LAYERS  # noqa: E402

NUM_LAYERS = SMALL_MODEL_LAYERS
FIRST_CHECKPOINT = 2


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PilImage.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


class Driver:
    """Plays the vehicle: publishes camera, odometry and route; records what deead_node publishes."""

    def __init__(self, context, node_name="deead_node"):
        self.node = rclpy.create_node("test_driver", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.camera = self.node.create_publisher(CompressedImage, f"/{node_name}/input/image", 10)
        self.odometry = self.node.create_publisher(Odometry, f"/{node_name}/input/odometry", 10)
        self.route = self.node.create_publisher(Path, f"/{node_name}/input/route", latched)
        self.trajectories: dict[tuple[int, int], Path] = {}
        self.exits: dict[tuple[int, int], ExitDiagnostics] = {}
        self.diagnostics: list[DiagnosticArray] = []
        stamp = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec)  # noqa: E731
        self.node.create_subscription(Path, f"/{node_name}/output/trajectory",
                                      lambda m: self.trajectories.__setitem__(stamp(m), m), 50)
        self.node.create_subscription(ExitDiagnostics, f"/{node_name}/output/exit_diagnostics",
                                      lambda m: self.exits.__setitem__(stamp(m), m), 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.set_params = self.node.create_client(SetParameters, f"/{node_name}/set_parameters")

    def spin_until(self, condition, timeout_s=20.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not condition():
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def wait_for_node(self):
        publishers = (self.camera, self.odometry, self.route)
        matched = lambda: (all(p.get_subscription_count() > 0 for p in publishers)  # noqa: E731
                           and self.set_params.service_is_ready())
        assert self.spin_until(matched, 30.0), "deead_node did not come up within 30 s"

    def send_frame(self, sec: int, data: bytes | None = None, speed=8.0):
        odom = Odometry()
        odom.header.frame_id, odom.header.stamp.sec = "map", sec
        odom.pose.pose.orientation.w = 1.0
        odom.twist.twist.linear.x = speed
        self.odometry.publish(odom)
        route = Path()
        route.header.frame_id, route.header.stamp.sec = "map", sec
        for x in np.arange(-10.0, 120.0, 2.0):
            route.poses.append(_pose(x))
        self.route.publish(route)
        for publisher in (self.odometry, self.route):       # inputs land before the camera frame
            assert publisher.wait_for_all_acked(Duration(seconds=10)), "deead_node did not take the inputs"
        self.spin_until(lambda: False, 0.05)
        image = CompressedImage(format="jpeg", data=data if data is not None else jpeg(sec))
        image.header.stamp.sec = sec
        self.camera.publish(image)

    def set(self, **values):
        request = SetParameters.Request(parameters=[Parameter(k.replace("__", "."), value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        assert self.set_params.wait_for_service(timeout_sec=10.0)
        future = self.set_params.call_async(request)
        assert self.spin_until(future.done, 10.0), "set_parameters did not answer"
        return future.result().results


def _pose(x):
    from geometry_msgs.msg import PoseStamped
    pose = PoseStamped()
    pose.pose.position.x = float(x)
    pose.pose.orientation.w = 1.0
    return pose


def plan_frames(driver, seconds, timeout_s=20.0):
    for sec in seconds:
        driver.send_frame(sec)
        key = (sec, 0)
        assert driver.spin_until(lambda key=key: key in driver.exits, timeout_s), f"no plan for the frame at {sec} s"
    return [driver.exits[(sec, 0)] for sec in seconds]


def check_plans(driver, seconds):
    for sec in seconds:
        exit_msg, path = driver.exits[(sec, 0)], driver.trajectories[(sec, 0)]
        assert path.header.frame_id == "base_link" and len(path.poses) == 6
        assert exit_msg.layers_run == exit_msg.exit_layer <= exit_msg.num_layers == NUM_LAYERS
        assert exit_msg.checkpoints[-1].layer == exit_msg.exit_layer
        assert exit_msg.prior_source == "route" and exit_msg.backend == "onnxruntime"
        assert exit_msg.node_ms >= exit_msg.total_ms > 0, "the node's time for a frame includes the runner's"
        assert all(math.isfinite(p.pose.position.x) for p in path.poses)
        due = [p.header.stamp.sec + p.header.stamp.nanosec * 1e-9 for p in path.poses]
        assert sec < due[0] and all(b > a for a, b in zip(due, due[1:])), f"poses not stamped when due: {due}"


def test_node_in_process_plans_tunes_and_survives_bad_input(small_model, ros_context):
    from deead_ros.ros.node import DeeadNode
    overrides = [Parameter("model_file_path", value=str(small_model)),
                 Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT),
                 Parameter("exit.fixed_exit_layer", value=3), Parameter("exit.delta_m", value=20.0),
                 Parameter("diagnostics.period_s", value=0.2)]
    node = DeeadNode(context=ros_context, parameter_overrides=overrides)
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    try:
        driver.wait_for_node()
        wide = plan_frames(driver, [1, 2, 3])
        check_plans(driver, [1, 2, 3])
        assert all(m.exit_layer == FIRST_CHECKPOINT and m.exited_early for m in wide), \
            f"delta 20 m: expected exits at layer {FIRST_CHECKPOINT}, got {[m.exit_layer for m in wide]}"
        assert all(m.reason == ExitDiagnostics.REASON_PRIOR_MATCHED for m in wide)

        results = driver.set(exit__delta_m=0.0)
        assert results[0].successful
        strict = plan_frames(driver, [4, 5])
        assert [m.exit_layer for m in strict] == [NUM_LAYERS] * 2, "delta 0 must run to full depth"

        refused = driver.set(exit__first_checkpoint=NUM_LAYERS + 3)
        assert not refused[0].successful and "outside the model's layers [1, 6]" in refused[0].reason
        refused = driver.set(exit__stride_table=[8.0, 1.0, 4.0, 2.0, 2.0, 4.0, 8.0])
        assert not refused[0].successful and "must not increase" in refused[0].reason
        assert list(node.get_parameter("exit.stride_table").value) == [8, 8, 4, 4, 2, 2, 1], \
            "a refused value changes nothing"
        assert not driver.set(backend="torch")[0].successful, "read-only parameters cannot change"

        driver.send_frame(6, data=b"\xff\xd8 this is no jpeg")
        assert driver.spin_until(lambda: node.stats.snapshot().drops.get("bad_input", 0) == 1, 10.0)
        assert driver.set(exit__policy="fixed")[0].successful
        fixed = plan_frames(driver, [7])
        assert fixed[0].exit_layer == 3 and fixed[0].reason == ExitDiagnostics.REASON_FIXED_LAYER

        dropped = lambda reason: node.stats.snapshot().drops.get(reason, 0)  # noqa: E731
        planned_before = len(driver.exits)
        driver.send_frame(3)                                  # a looping bag: the stamp goes back
        assert driver.spin_until(lambda: dropped("stamp_backwards") == 1, 10.0)
        driver.send_frame(int(time.time()) + 3600)            # an unsynchronised camera clock
        assert driver.spin_until(lambda: dropped("stamp_future") == 1, 10.0)
        plan_frames(driver, [8])
        assert len(driver.exits) == planned_before + 1, "refused frames are never planned"

        assert driver.spin_until(lambda: any(s.name.endswith("drops") for a in driver.diagnostics for s in a.status))
        # a frame is counted as planned after its outputs are published: its ExitDiagnostics can arrive first
        accounted = lambda: (lambda s: s.received == s.planned + s.dropped)(node.stats.snapshot())  # noqa: E731
        assert driver.spin_until(accounted, 5.0), f"unaccounted frames: {node.stats.snapshot()}"
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()


@pytest.mark.parametrize("executor", ["events", "single_threaded"])
def test_node_as_its_own_process(small_model, ros_context, executor):
    env = dict(os.environ)
    command = [sys.executable, "-m", "deead_ros.ros.node", "--ros-args", "--params-file",
               str(RUNTIME_ROOT / "config" / "deead_node.param.yaml"), "-p", f"model_file_path:={small_model}",
               "-p", f"exit.first_checkpoint:={FIRST_CHECKPOINT}", "-p", "exit.fixed_exit_layer:=3",
               "-p", f"executor:={executor}"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = Driver(ros_context)
    try:
        driver.wait_for_node()
        plan_frames(driver, [11, 12, 13, 14], timeout_s=30.0)
        check_plans(driver, [11, 12, 13, 14])
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
        driver.node.destroy_node()
    assert "planning with onnxruntime on 6 layers" in output, output


def start_fails(args: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", "deead_ros.ros.node", "--ros-args", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, f"expected exit code 2, got {result.returncode}: {result.stderr}"
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_node_refuses_to_start_on_bad_model_files_and_settings(small_model, tmp_path):
    import shutil
    model = tmp_path / "model"
    shutil.copytree(small_model.parent, model)
    assert "missing" in start_fails(["-p", f"model_file_path:={tmp_path / 'nothing' / 'manifest.json'}"])
    layer = model / "layer_03.onnx"
    layer.write_bytes(layer.read_bytes()[:-100])
    assert "layer_03.onnx" in start_fails(["-p", f"model_file_path:={model / 'manifest.json'}"])
    message = start_fails(["-p", f"model_file_path:={small_model}", "-p", "backend:=tensorflow"])
    assert "tensorflow" in message and "onnxruntime" in message
    message = start_fails(["-p", f"model_file_path:={small_model}", "-p", "backend:=tensorrt"])
    assert "tensorrt" in message.lower() and ("GPU" in message or "CUDA" in message or "driver" in message)
    assert "outside the model's layers" in start_fails(["-p", f"model_file_path:={small_model}"])


def invalid_values(spec):
    """Values a parameter must refuse: the wrong type, and beyond its range."""
    wrong_type = {"string": 3, "bool": "yes", "integer": "ten", "double": "two", "double_array": ["a", "b"],
                  "integer_array": [0.5], "string_array": [1, 2]}
    values = [wrong_type[spec.type]]
    if spec.range:
        values.append(type(spec.default)(spec.range[1]) * 2 + 1)
        values.append(type(spec.default)(spec.range[0]) - 1)
    if spec.type == "double":
        values += [math.nan, math.inf, -math.inf]
    if spec.type == "double_array":
        values += [[math.nan] * len(spec.default), [math.inf] + list(spec.default[1:]), []]
    if spec.name == "output.frame_id":
        values += ["", " base_link", "/base_link"]
    return values


CROSS_FIELD: list[tuple[dict[str, str | float | list[float]], str]] = [
    ({"exit.stride_table": [8.0, 1.0, 4.0, 2.0, 2.0, 4.0, 8.0]}, "must not increase"),
    ({"exit.stride_table": [8.0, 8.0, 4.0, 4.0, 2.0, 2.0]}, "odd number of entries"),
    ({"exit.stride_table": [2.0, 8.0, 4.0, 4.0, 8.0, 2.0, 1.0]}, "strictly decrease"),
    ({"exit.stride_table": [8.0, 8.0, 4.0, 4.0, -2.0, 2.0, 1.0]}, "> 0"),
    ({"exit.stride_table": [math.nan] * 7}, "whole numbers"),
    ({"exit.stride_table": [math.nan, 8.0, math.nan, 4.0, math.nan, 2.0, 1.0]}, "finite"),
    ({"exit.stride_table": [math.inf, 8.0, 4.0, 4.0, 2.0, 2.0, 1.0]}, "finite"),
    ({"exit.stride_table": [8.0, 8.5, 4.0, 4.0, 2.0, 2.0, 1.0]}, "whole numbers"),
    ({"validation.stop_decel_mps2": 15.0, "validation.max_decel_mps2": 12.0}, "stopping fallback"),
    ({"exit.first_checkpoint": NUM_LAYERS + 1}, "outside the model's layers"),
    ({"exit.min_exit_layer": NUM_LAYERS + 1}, "outside the model's layers"),
    ({"exit.policy": "fixed", "exit.fixed_exit_layer": NUM_LAYERS + 2}, "fixed_exit_layer"),
    ({"exit.policy": "fastest"}, "unknown"),
    ({"prior.source": "lidar"}, "unknown"),
]


def test_a_budget_that_runs_out_publishes_the_deepest_plan_reached_flagged(small_model, ros_context):
    from deead_ros.ros.node import DeeadNode
    overrides = [Parameter("model_file_path", value=str(small_model)), Parameter("exit.delta_m", value=0.0),
                 Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT),
                 Parameter("exit.budget_ms", value=0.001), Parameter("diagnostics.period_s", value=0.2)]
    node = DeeadNode(context=ros_context, parameter_overrides=overrides)
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    try:
        driver.wait_for_node()
        out_of_time = plan_frames(driver, [1, 2])
        check_plans(driver, [1, 2])
        assert all(m.over_budget and m.reason == ExitDiagnostics.REASON_BUDGET and m.exit_layer == 1
                   and m.exited_early for m in out_of_time), "a 1 us budget ends every frame after its first layer"
        assert driver.spin_until(lambda: any(s.name.endswith("latency") and s.level == b"\x01"
                                             for a in driver.diagnostics for s in a.status), 10.0), \
            "frames ended by the budget raise a WARN on /diagnostics"
        assert driver.set(exit__budget_ms=0.0)[0].successful
        unbounded = plan_frames(driver, [3])
        assert not unbounded[0].over_budget and unbounded[0].exit_layer == NUM_LAYERS
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()      # its latched route must not reach the nodes of later tests


def test_every_parameter_refuses_invalid_values_atomically(small_model, ros_context):
    from deead_ros.ros.node import DeeadNode
    from deead_ros.ros.params import PARAMETERS
    node = DeeadNode(context=ros_context, parameter_overrides=[Parameter("model_file_path", value=str(small_model)),
                                                               Parameter("exit.first_checkpoint", value=2)])
    try:
        before = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
        refused = 0
        for spec in PARAMETERS:
            for value in invalid_values(spec):
                result = node.set_parameters_atomically([Parameter(spec.name, value=value)])
                assert not result.successful, f"{spec.name}={value!r} was accepted"
                assert result.reason, f"{spec.name}={value!r} refused without a reason"
                refused += 1
        for changes, reason in CROSS_FIELD:
            batch = [Parameter("exit.delta_m", value=7.5)] + [Parameter(k, value=v) for k, v in changes.items()]
            result = node.set_parameters_atomically(batch)
            assert not result.successful and reason in result.reason, f"{changes}: {result.reason!r}"
            refused += 1
        after = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
        assert after == before, "a refused batch must change nothing (exit.delta_m rode along with each)"
        assert refused > 2 * len(PARAMETERS)
        ok = node.set_parameters_atomically([Parameter("exit.delta_m", value=0.5),
                                             Parameter("exit.stride_table", value=[4.0, 2.0, 2.0, 1.0, 1.0])])
        assert ok.successful and node._config.runner.exit.stride_table == (4.0, 2.0, 2.0, 1.0, 1.0)
    finally:
        node.shutdown()
        node.destroy_node()


def test_overload_latest_frame_wins_and_every_frame_is_accounted_for(small_model, ros_context):
    from deead_ros.ros.node import DeeadNode
    node = DeeadNode(context=ros_context, parameter_overrides=[Parameter("model_file_path", value=str(small_model)),
                                                               Parameter("exit.first_checkpoint", value=2),
                                                               Parameter("exit.policy", value="full")])
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    try:
        driver.wait_for_node()
        data = jpeg(0)
        for i in range(300):                       # far faster than the model plans
            image = CompressedImage(format="jpeg", data=data)
            image.header.stamp.sec, image.header.stamp.nanosec = 100 + i // 1000, (i % 1000) * 1_000_000
            driver.camera.publish(image)
            driver.executor.spin_once(timeout_sec=0.0005)
        settled = lambda: (lambda s: s.received > 0 and s.received == s.planned + s.dropped)(node.stats.snapshot())  # noqa: E731
        assert driver.spin_until(settled, 20.0), f"frames unaccounted for: {node.stats.snapshot()}"
        snap = node.stats.snapshot()
        assert snap.drops.get("superseded", 0) > 0, f"a slow model must drop superseded frames: {snap}"
        assert snap.planned >= 1 and set(snap.drops) <= {"superseded"}
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()


def test_node_with_a_missing_params_file_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "deead_ros.ros.node", "--ros-args", "--params-file",
                             str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "bad ROS arguments" in result.stderr and "nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_odometry_the_node_plans_at_full_depth_and_recovers(small_model, ros_context):
    from deead_ros.ros.node import DeeadNode
    node = DeeadNode(context=ros_context, parameter_overrides=[
        Parameter("model_file_path", value=str(small_model)), Parameter("exit.first_checkpoint", value=2),
        Parameter("exit.delta_m", value=20.0), Parameter("diagnostics.period_s", value=0.2)])
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    try:
        driver.wait_for_node()
        image = CompressedImage(format="jpeg", data=jpeg(1))
        image.header.stamp.sec = 50
        driver.camera.publish(image)                     # no odometry, no route yet
        assert driver.spin_until(lambda: (50, 0) in driver.exits)
        blind = driver.exits[(50, 0)]
        assert blind.exit_layer == NUM_LAYERS and blind.reason == ExitDiagnostics.REASON_NO_PRIOR
        assert blind.prior_source == "none" and blind.prior_age_s == -1.0
        assert driver.spin_until(lambda: any(s.name.endswith("planning") and s.level == b"\x01"
                                             for a in driver.diagnostics for s in a.status)), \
            "/diagnostics must WARN while frames run without a prior"
        recovered = plan_frames(driver, [51])[0]           # odometry and route are back
        assert recovered.exit_layer == 2 and recovered.prior_source == "route"
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()
