"""The node's debug output: ~/debug/image and ~/debug/markers, drawn only while someone subscribes.

What is drawn is deead_ros.debug_view's (the offline evaluation draws with the same code); this module
turns it into messages and decides when to draw:
- `~/debug/image` (sensor_msgs/CompressedImage, jpeg): the camera frame as the model saw it, scaled back to
  the camera's aspect ratio at `debug.image_width`, with the bird's-eye inset and the caption; with a
  CameraInfo on `~/input/camera_info` and the camera's mounting (`debug.camera_*`), the plan projected too.
- `~/debug/markers` (visualization_msgs/MarkerArray): a DELETEALL, then every trajectory as a line strip
  and the exit as text, in the output frame, stamped with the camera stamp, with a lifetime
  (`debug.marker_lifetime_s`) so that a stopped node's markers vanish.
Each is drawn only while it has a subscriber (a ROS subscription or, with `foxglove.port`, a Foxglove
client), checked per frame: without one it costs two counts. The node calls `publish` after it has
published the trajectory and the exit diagnostics, so debug output never delays a plan.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from builtin_interfaces.msg import Duration as RosDuration
from geometry_msgs.msg import Point
from PIL import Image as PilImage
from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.logging import LoggingSeverity
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from deead_ros.debug_view import (CameraModel, CameraMounting, LineStrip, Text, encode_jpeg, render_debug_image,
                                  trajectory_markers)
from deead_ros.errors import ConfigError
from deead_ros.ros.params import DebugSettings
from deead_ros.runner import PlanResult

CAMERA_INFO_QOS = qos_profile_sensor_data       # matches a reliable or a best-effort camera driver
DEBUG_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
_THROTTLE_S = 5.0


@dataclass(frozen=True, slots=True)
class Intrinsics:
    """What the debug image needs of a sensor_msgs/CameraInfo: K (row-major 3x3) and the size it belongs to."""

    k: tuple[float, ...]
    width: int
    height: int


def camera_intrinsics(msg: Any) -> Intrinsics:
    """sensor_msgs/CameraInfo -> Intrinsics (no checks: CameraModel.from_intrinsics says what is wrong)."""
    return Intrinsics(tuple(float(v) for v in msg.k), int(msg.width), int(msg.height))


def camera_mounting(settings: DebugSettings) -> CameraMounting:
    return CameraMounting(settings.camera_height_m, settings.camera_pitch_rad, settings.camera_forward_m)


def camera_image_size(msg: Any, raw: bool) -> tuple[int, int] | None:
    """(width, height) of the camera's image as sent (before it was decoded at the model's scale), or None.

    A raw image says it in its fields; a compressed one in its header (read without decoding a pixel).
    """
    if raw:
        return int(msg.width), int(msg.height)
    try:
        with PilImage.open(io.BytesIO(memoryview(msg.data).tobytes())) as image:
            return image.width, image.height
    except (OSError, ValueError):     # it was decoded once already, so this does not happen; then: the frame's size
        return None


def at_camera_aspect(frame_rgb: np.ndarray, camera_wh: tuple[int, int] | None,
                     width: int) -> tuple[np.ndarray, int | None]:
    """The frame and target width to draw at: `width` wide, at the camera's aspect ratio.

    The model's resize may have changed the aspect ratio (a 16:9 camera for a 5:3 model): then the frame
    is scaled back to the camera's here, in pixel blocks (nearest) as the model saw them, and drawn at its
    size (None); otherwise render_debug_image scales it (the same blocks, one copy less).
    """
    frame_h, frame_w = frame_rgb.shape[:2]
    if camera_wh is None or abs(camera_wh[0] * frame_h / max(camera_wh[1] * frame_w, 1) - 1.0) < 0.01:
        return frame_rgb, width
    height = max(1, round(width * camera_wh[1] / max(camera_wh[0], 1)))
    image = PilImage.fromarray(np.ascontiguousarray(frame_rgb[..., :3], dtype=np.uint8))
    return np.asarray(image.resize((width, height), PilImage.Resampling.NEAREST)), None


def _ros_duration(seconds: float) -> RosDuration:
    whole = int(seconds)
    return RosDuration(sec=whole, nanosec=int(round((seconds - whole) * 1e9)))


def _color(rgba: tuple[float, float, float, float]) -> ColorRGBA:
    return ColorRGBA(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))


def marker_array(markers: list[LineStrip | Text], stamp: Any, frame_id: str, lifetime_s: float) -> MarkerArray:
    """Turn debug_view markers into a visualization_msgs/MarkerArray.

    A DELETEALL first (the number of checkpoints changes between frames), then a LINE_STRIP per LineStrip
    and a TEXT_VIEW_FACING per Text, each stamped and framed as given, with lifetime_s (0: until replaced).
    """
    array = MarkerArray()
    delete_all = Marker(action=Marker.DELETEALL)
    delete_all.header.stamp, delete_all.header.frame_id = stamp, frame_id
    array.markers.append(delete_all)
    lifetime = _ros_duration(lifetime_s)
    for item in markers:
        marker = Marker(ns=item.ns, id=int(item.id), action=Marker.ADD, lifetime=lifetime, color=_color(item.rgba))
        marker.header.stamp, marker.header.frame_id = stamp, frame_id
        marker.pose.orientation.w = 1.0
        if isinstance(item, LineStrip):
            marker.type = Marker.LINE_STRIP
            marker.scale.x = float(item.width_m)
            marker.points = [Point(x=x, y=y, z=z) for x, y, z in item.points_m.tolist()]
        else:
            marker.type = Marker.TEXT_VIEW_FACING
            marker.scale.z = float(item.height_m)
            marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = map(float, item.position_m)
            marker.text = item.text
        array.markers.append(marker)
    return array


def compressed_image(jpeg: bytes, stamp: Any, frame_id: str) -> CompressedImage:
    msg = CompressedImage(format="jpeg", data=jpeg)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


class DebugOutput:
    """The node's debug publishers, its CameraInfo, and the optional Foxglove server.

    Thread use: `set_camera_info` runs in the executor (it stores one reference), `publish` in the
    planning thread, `close` after that thread has stopped.
    """

    def __init__(self, node: Node, settings: Callable[[], DebugSettings], count_rejected: Callable[[str], None],
                 topics: dict[str, str]) -> None:
        """Create the publishers, and start the Foxglove server when `foxglove.port` is set.

        Args:
            settings: the debug settings in force (they change on a running node).
            count_rejected: counts a rejected input by topic (the node's diagnostics).
            topics: the resolved names of the node's trajectory and exit diagnostics topics (Foxglove's
                channels carry the same names).
        Raises:
            ConfigError: the Foxglove server is on but foxglove-sdk is missing or the port cannot be served.
        """
        self._log: RcutilsLogger = node.get_logger()
        self._settings = settings
        self._count_rejected = count_rejected
        self._image_pub = node.create_publisher(CompressedImage, "~/debug/image", DEBUG_QOS)
        self._markers_pub = node.create_publisher(MarkerArray, "~/debug/markers", DEBUG_QOS)
        self._intrinsics: Intrinsics | None = None
        self._camera_key: tuple[Any, ...] | None = None       # (intrinsics, mounting, camera size) of _camera
        self._camera: CameraModel | None = None
        self.images_drawn = self.markers_drawn = 0
        self.last_debug_ms = 0.0                               # drawing, encoding and publishing, the last frame
        self.foxglove: Any = None
        start = settings()
        if start.foxglove_port:
            self.foxglove = _start_foxglove(start, node.get_name(), {
                "image": self._image_pub.topic_name, "markers": self._markers_pub.topic_name, **topics})
            self._log.info(f"Foxglove WebSocket server on ws://{start.foxglove_host}:{self.foxglove.port} "
                           "(open it in the Foxglove app with config/foxglove_layout.json)")

    # -- input: the camera's intrinsics ------------------------------------------------------------
    def set_camera_info(self, msg: Any) -> None:
        """Store a CameraInfo, or ignore it (counted, with a throttled warning) when its intrinsics are unusable.

        Its size is checked against the camera's images when the debug image is drawn.
        """
        intrinsics = camera_intrinsics(msg)
        model = CameraModel.from_intrinsics(intrinsics.k, intrinsics.width, intrinsics.height,
                                            camera_mounting(self._settings()))
        if isinstance(model, str):
            self._refuse_camera_info(model)
            return
        self._intrinsics = intrinsics

    def _refuse_camera_info(self, reason: str) -> None:
        self._count_rejected("camera_info")
        self._log.warning(f"camera_info ignored: {reason}; ~/debug/image draws the bird's-eye inset only",
                          throttle_duration_sec=_THROTTLE_S)

    def _camera_model(self, mounting: CameraMounting, camera_wh: tuple[int, int] | None) -> CameraModel | None:
        """The camera model to draw this frame with, or None.

        A CameraInfo whose size has another aspect ratio than the camera's images is refused once per
        (CameraInfo, mounting, image size); it is still handed to the drawing, whose caption then says why
        nothing is projected.
        """
        intrinsics = self._intrinsics
        if intrinsics is None or camera_wh is None:
            return None
        key = (intrinsics, mounting, camera_wh)
        if key != self._camera_key:
            model = CameraModel.from_intrinsics(intrinsics.k, intrinsics.width, intrinsics.height, mounting)
            problem = model if isinstance(model, str) else model.problem_for(*camera_wh)
            if problem:
                self._refuse_camera_info(problem)
            self._camera_key, self._camera = key, model if isinstance(model, CameraModel) else None
        return self._camera

    # -- output ------------------------------------------------------------------------------------
    def publish(self, camera_msg: Any, raw_image: bool, frame_rgb: np.ndarray, result: PlanResult,
                delta_m: float, settings: DebugSettings, path: Any, exit_msg: Any) -> None:
        """Draw and publish what someone subscribes to, for one planned frame.

        Args:
            camera_msg: the camera message the plan was made from (its stamp and frame; its size).
            raw_image: camera_msg is a sensor_msgs/Image (else a CompressedImage).
            frame_rgb: (H, W, 3) uint8, the frame at the model's scale (not modified).
            delta_m: the exit threshold in force (the caption's).
            path, exit_msg: the published trajectory (nav_msgs/Path, in the output frame) and ExitDiagnostics.
        """
        fox = self.foxglove
        if fox is not None:
            fox.log_plan(path, exit_msg)
        ros_image, ros_markers = (pub.get_subscription_count() > 0 for pub in (self._image_pub, self._markers_pub))
        fox_image, fox_markers = (fox.wants_image(), fox.wants_markers()) if fox is not None else (False, False)
        if not (ros_image or ros_markers or fox_image or fox_markers):
            return
        started = time.perf_counter()
        stamp, frame_id = camera_msg.header.stamp, path.header.frame_id
        if ros_markers or fox_markers:
            markers = trajectory_markers(result)
            if ros_markers:
                self._markers_pub.publish(marker_array(markers, stamp, frame_id, settings.marker_lifetime_s))
            if fox_markers:
                fox.log_markers(markers, stamp, frame_id, settings.marker_lifetime_s)
            self.markers_drawn += 1
        drawn_markers = time.perf_counter()
        if ros_image or fox_image:
            camera_wh = camera_image_size(camera_msg, raw_image)
            camera = self._camera_model(camera_mounting(settings), camera_wh)
            frame, target_width = at_camera_aspect(frame_rgb, camera_wh, settings.image_width)
            image = render_debug_image(frame, result, delta_m, camera=camera, target_width=target_width)
            drawn_image = time.perf_counter()
            jpeg = encode_jpeg(image, settings.jpeg_quality)
            encoded = time.perf_counter()
            if ros_image:
                self._image_pub.publish(compressed_image(jpeg, stamp, camera_msg.header.frame_id))
            if fox_image:
                fox.log_image(jpeg, stamp, camera_msg.header.frame_id)
            self.images_drawn += 1
        done = time.perf_counter()
        self.last_debug_ms = (done - started) * 1e3
        if self._log.is_enabled_for(LoggingSeverity.DEBUG):
            image_ms = ((drawn_image - drawn_markers) * 1e3, (encoded - drawn_image) * 1e3,
                        (done - encoded) * 1e3) if ros_image or fox_image else (0.0, 0.0, 0.0)
            self._log.debug(f"debug_ms={self.last_debug_ms:.2f}: markers {(drawn_markers - started) * 1e3:.2f} ms, "
                            "image draw {:.2f} ms, jpeg {:.2f} ms, publish {:.2f} ms".format(*image_ms))

    def close(self) -> None:
        """Stop the Foxglove server (after the planning thread has stopped)."""
        if self.foxglove is not None:
            self.foxglove.stop()
            self.foxglove = None


def _start_foxglove(settings: DebugSettings, name: str, topics: dict[str, str]) -> Any:
    """Start the Foxglove server: foxglove-sdk is imported only here, so that the node runs without it."""
    try:
        from deead_ros.ros.foxglove_bridge import FoxgloveServer
    except ImportError as err:
        raise ConfigError(f"foxglove.port={settings.foxglove_port} needs foxglove-sdk ({err}); install it "
                          "(`pip install foxglove-sdk==0.30.3`, pinned in requirements-lab.txt) or set foxglove.port "
                          "to 0") from err
    from deead_ros_msgs.msg import ExitDiagnostics
    return FoxgloveServer(settings.foxglove_host, settings.foxglove_port, name, topics, ExitDiagnostics)
