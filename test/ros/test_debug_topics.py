"""deead_node's debug output: ~/debug/image and ~/debug/markers only while subscribed, CameraInfo, Foxglove.

In-process, on the small exported model (onnxruntime), driven like test_node.py's tests.
"""
import io
import json
import socket
import struct
import time

import numpy as np
import pytest
from PIL import Image as PilImage

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402,F401  (after the marker: conftest skips without rclpy)
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from test.ros.test_node import FIRST_CHECKPOINT, Driver, jpeg, plan_frames  # noqa: E402

NODE = "/deead_node"


def start_node(small_model, context, **extra):
    from deead_ros.ros.node import DeeadNode
    overrides = [Parameter("model_file_path", value=str(small_model)),
                 Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT),
                 Parameter("exit.delta_m", value=0.0)]           # full depth: a checkpoint at every layer from 2
    overrides += [Parameter(name.replace("__", "."), value=value) for name, value in extra.items()]
    node = DeeadNode(context=context, parameter_overrides=overrides)
    driver = Driver(context)
    driver.executor.add_node(node)
    driver.wait_for_node()
    return node, driver


def stop(node, driver):
    node.shutdown()
    node.destroy_node()
    driver.node.destroy_node()


class DebugListener:
    """Subscribes to the node's debug topics and keeps what arrives by camera stamp (seconds)."""

    def __init__(self, driver):
        self.images: dict[int, CompressedImage] = {}
        self.markers: dict[int, MarkerArray] = {}
        driver.node.create_subscription(CompressedImage, f"{NODE}/debug/image",
                                        lambda m: self.images.__setitem__(m.header.stamp.sec, m), 10)
        driver.node.create_subscription(MarkerArray, f"{NODE}/debug/markers",
                                        lambda m: self.markers.__setitem__(m.markers[0].header.stamp.sec, m), 10)


def wait_for_debug_subscribers(node, driver):
    publishers = (node.debug._image_pub, node.debug._markers_pub)
    assert driver.spin_until(lambda: all(p.get_subscription_count() > 0 for p in publishers), 20.0), \
        "deead_node did not see the debug subscriptions"


def decoded(image_msg) -> np.ndarray:
    assert image_msg.format == "jpeg"
    return np.asarray(PilImage.open(io.BytesIO(bytes(image_msg.data))).convert("RGB"))


def test_nothing_is_drawn_without_a_subscriber_and_both_topics_arrive_with_one(small_model, ros_context):
    node, driver = start_node(small_model, ros_context, debug__marker_lifetime_s=0.5)
    try:
        plan_frames(driver, [1, 2])
        # a frame counts as planned once its outputs are out; its drawing step (drawn or not) comes right after
        assert driver.spin_until(lambda: node.stats.snapshot().planned == 2, 5.0), node.stats.snapshot()
        assert (node.debug.images_drawn, node.debug.markers_drawn) == (0, 0), \
            "nobody subscribes to ~/debug/*: nothing may be drawn"

        listener = DebugListener(driver)
        wait_for_debug_subscribers(node, driver)
        plan_frames(driver, [3])
        assert driver.spin_until(lambda: 3 in listener.images and 3 in listener.markers, 10.0), \
            f"expected the debug image and markers of the frame at 3 s, got {sorted(listener.images)}, " \
            f"{sorted(listener.markers)}"
        # frame 2 too, only if its drawing step still came after the subscriber matched (then it was delivered:
        # in order, before frame 3's); never frame 1 (Kilted under load once drew frame 2 this way)
        drawn = 2 if 2 in listener.images else 1
        assert 1 not in listener.images and (node.debug.images_drawn, node.debug.markers_drawn) == (drawn, drawn)
        exit_msg, path = driver.exits[(3, 0)], driver.trajectories[(3, 0)]

        image = decoded(listener.images[3])
        assert image.shape == (384, 640, 3), f"expected 640x384 (160x96 at debug.image_width=640), got {image.shape}"

        markers = listener.markers[3].markers
        assert markers[0].action == Marker.DELETEALL, "the first marker must clear the last frame's"
        assert all(m.header.frame_id == "base_link" and (m.header.stamp.sec, m.header.stamp.nanosec) == (3, 0)
                   for m in markers), "markers are in the output frame at the camera stamp"
        added = markers[1:]
        assert all(m.action == Marker.ADD and (m.lifetime.sec, m.lifetime.nanosec) == (0, 500_000_000)
                   for m in added)
        strips = {(m.ns, m.id): m for m in added if m.type == Marker.LINE_STRIP}
        checkpoint_ids = sorted(i for ns, i in strips if ns == "checkpoints")
        assert checkpoint_ids == [c.layer for c in exit_msg.checkpoints], \
            f"one strip per checkpoint: expected layers {[c.layer for c in exit_msg.checkpoints]}, got {checkpoint_ids}"
        assert ("prior", 0) in strips
        published = strips[("trajectory", 0)]
        expected = [(0.0, 0.0)] + [(p.pose.position.x, p.pose.position.y) for p in path.poses]
        np.testing.assert_allclose([(p.x, p.y) for p in published.points], expected, atol=1e-6,
                                   err_msg="the trajectory strip starts at the ego and follows the published path")
        texts = [m for m in added if m.type == Marker.TEXT_VIEW_FACING]
        assert len(texts) == 1 and texts[0].ns == "exit"
        assert texts[0].text.startswith(f"exit {exit_msg.exit_layer}/{exit_msg.num_layers}"), texts[0].text
    finally:
        stop(node, driver)


def camera_info(k, width=160, height=96) -> CameraInfo:
    info = CameraInfo(width=width, height=height)
    info.k = [float(v) for v in k]
    return info


GOOD_K = (100.0, 0.0, 80.0, 0.0, 100.0, 48.0, 0.0, 0.0, 1.0)


def test_an_inconsistent_camera_info_is_ignored_with_a_reason_and_the_image_still_arrives(small_model, ros_context,
                                                                                         capfd):
    node, driver = start_node(small_model, ros_context, debug__camera_pitch_rad=0.1)
    info_pub = driver.node.create_publisher(CameraInfo, f"{NODE}/input/camera_info", 10)
    listener = DebugListener(driver)
    rejected = lambda: node.stats.snapshot().rejected_inputs.get("camera_info", 0)  # noqa: E731
    same_picture = jpeg(0)
    try:
        wait_for_debug_subscribers(node, driver)
        assert driver.spin_until(lambda: info_pub.get_subscription_count() > 0, 10.0)
        info_pub.publish(camera_info((0.0, 0.0, 80.0, 0.0, 0.0, 48.0, 0.0, 0.0, 1.0)))   # zero focal length
        assert driver.spin_until(lambda: rejected() == 1, 10.0), "a zero focal length is a rejected input"
        driver.send_frame(1, data=same_picture)
        assert driver.spin_until(lambda: 1 in listener.images, 10.0), "the image arrives without a camera model"

        info_pub.publish(camera_info(GOOD_K, width=320, height=320))      # square: not the camera's 160x96
        driver.spin_until(lambda: False, 0.3)
        driver.send_frame(2, data=same_picture)
        assert driver.spin_until(lambda: 2 in listener.images, 10.0), "the image arrives with a misfit CameraInfo"
        assert rejected() == 2, f"a CameraInfo of another aspect ratio is rejected once, got {rejected()}"
        driver.send_frame(3, data=same_picture)
        assert driver.spin_until(lambda: 3 in listener.images, 10.0)
        assert rejected() == 2, "the same misfit CameraInfo is counted once, not per frame"

        info_pub.publish(camera_info(GOOD_K))
        driver.spin_until(lambda: False, 0.3)
        driver.send_frame(4, data=same_picture)
        assert driver.spin_until(lambda: 4 in listener.images, 10.0)
        assert rejected() == 2, "a consistent CameraInfo is not rejected"

        # The same picture and plan: below the caption and left of the inset the images differ only where
        # the plan is projected, and only the frame with a consistent camera model projects it.
        without, misfit, projected = (decoded(listener.images[s])[200:, :400].astype(int) for s in (1, 2, 4))
        assert (np.abs(misfit - without).max(axis=2) > 60).sum() < 20, "a refused camera must not project"
        changed = (np.abs(projected - without).max(axis=2) > 60).sum()
        assert changed > 100, f"a consistent CameraInfo projects the plan onto the image; {changed} pixels changed"
    finally:
        stop(node, driver)
    logged = capfd.readouterr().err
    assert "camera_info ignored: camera focal length fx=0, fy=0 px must be > 0" in logged, logged[-2000:]


# -- Foxglove ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def protobuf_fields(data: bytes) -> dict[int, list]:
    """A protobuf message's fields by number: varints as int, fixed64 as float (double), the rest as bytes."""
    fields: dict[int, list] = {}
    i = 0

    def varint():
        nonlocal i
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value
    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, i = struct.unpack_from("<d", data, i)[0], i + 8
        elif wire == 2:
            length = varint()
            value, i = data[i:i + length], i + length
        elif wire == 5:
            value, i = struct.unpack_from("<f", data, i)[0], i + 4
        else:
            raise AssertionError(f"unexpected protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def pose_xy(pose: bytes) -> tuple[float, float]:
    position = protobuf_fields(protobuf_fields(pose).get(1, [b""])[0])
    return position.get(1, [0.0])[0], position.get(2, [0.0])[0]      # proto3 leaves zeros out


def test_the_foxglove_server_serves_the_plan_to_a_websocket_client(small_model, ros_context):
    from websockets.sync.client import connect
    from websockets.typing import Subprotocol

    port = free_port()
    node, driver = start_node(small_model, ros_context, foxglove__port=port)
    try:
        with connect(f"ws://127.0.0.1:{port}", subprotocols=[Subprotocol("foxglove.sdk.v1")], open_timeout=10) as ws:
            channels: dict[str, dict[str, object]] = {}
            deadline = time.monotonic() + 10
            while len(channels) < 4 and time.monotonic() < deadline:
                msg = json.loads(ws.recv(timeout=10))
                if msg["op"] == "advertise":
                    channels.update({c["topic"]: c for c in msg["channels"]})
            schemas = {topic: c["schemaName"] for topic, c in channels.items()}
            assert schemas == {f"{NODE}/output/trajectory": "foxglove.PosesInFrame",
                               f"{NODE}/debug/image": "foxglove.CompressedImage",
                               f"{NODE}/debug/markers": "foxglove.SceneUpdate",
                               f"{NODE}/output/exit_diagnostics": "deead_ros_msgs/msg/ExitDiagnostics"}, schemas
            roles = {1: f"{NODE}/output/trajectory", 2: f"{NODE}/output/exit_diagnostics", 3: f"{NODE}/debug/image",
                     4: f"{NODE}/debug/markers"}
            ws.send(json.dumps({"op": "subscribe", "subscriptions": [
                {"id": sub, "channelId": channels[topic]["id"]} for sub, topic in roles.items()]}))
            fox = node.debug.foxglove
            assert driver.spin_until(lambda: fox.trajectory.has_sinks() and fox.image.has_sinks(), 10.0), \
                "the server did not take the subscription"

            plan_frames(driver, [5])
            received: dict[int, bytes] = {}
            deadline = time.monotonic() + 10
            while len(received) < 4 and time.monotonic() < deadline:
                frame = ws.recv(timeout=10)
                if isinstance(frame, bytes) and frame[0] == 1:          # opcode 1: a message on a subscription
                    received[struct.unpack_from("<I", frame, 1)[0]] = frame[13:]
            assert sorted(received) == [1, 2, 3, 4], f"expected a message on every channel, got {sorted(received)}"
    finally:
        stop(node, driver)
    path, exit_msg = driver.trajectories[(5, 0)], driver.exits[(5, 0)]

    trajectory = protobuf_fields(received[1])
    assert protobuf_fields(trajectory[1][0]).get(1) == [5], "the trajectory is stamped with the camera stamp"
    assert trajectory[2] == [b"base_link"]
    np.testing.assert_allclose([pose_xy(p) for p in trajectory[3]],
                               [(p.pose.position.x, p.pose.position.y) for p in path.poses], atol=1e-9,
                               err_msg="the Foxglove trajectory is the published one")

    diagnostics = json.loads(received[2])
    assert diagnostics["header"]["stamp"] == {"sec": 5, "nsec": 0}
    assert diagnostics["exit_layer"] == exit_msg.exit_layer and diagnostics["num_layers"] == exit_msg.num_layers
    assert [c["layer"] for c in diagnostics["checkpoints"]] == [c.layer for c in exit_msg.checkpoints]

    image = next(v for v in protobuf_fields(received[3]).values() if isinstance(v[0], bytes)
                 and v[0][:2] == b"\xff\xd8")[0]
    assert PilImage.open(io.BytesIO(image)).size == (640, 384)
    assert b"checkpoints/" in received[4] and b"trajectory/0" in received[4]


def test_a_foxglove_port_that_is_taken_stops_the_start_with_the_parameter_named(small_model, ros_context):
    from deead_ros.errors import ConfigError
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"foxglove.port={port}: cannot serve"):
            from deead_ros.ros.node import DeeadNode
            DeeadNode(context=ros_context, parameter_overrides=[
                Parameter("model_file_path", value=str(small_model)),
                Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT), Parameter("foxglove.port", value=port)])
