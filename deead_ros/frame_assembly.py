"""Turn the newest camera, route, odometry and command messages into one runner frame.

Works on any object with the ROS message attributes (rclpy messages in the node, rosbags'
deserialised messages in offline evaluation), so the live node and `deead_eval` build frames with
the same code. Decoders raise BadInputError with a reason a person can act on.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
from PIL import Image as PilImage

from deead_ros.model.encoding import FrameInputs, InputSpec, SpeedHistory
from deead_ros.errors import BadInputError
from deead_ros.geometry import to_ego_frame, yaw_from_quaternion

MAX_IMAGE_SIDE = 8192
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def stamp_s(stamp: Any) -> float:
    """A header stamp (sec, nanosec) in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def decode_image(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) -> (H, W, 3) uint8 RGB."""
    channels = _CHANNELS.get(msg.encoding)
    if channels is None:
        raise BadInputError(f"image encoding '{msg.encoding}' unsupported; publish one of {sorted(_CHANNELS)}")
    h, w, step = msg.height, msg.width, msg.step
    if not (0 < h <= MAX_IMAGE_SIDE and 0 < w <= MAX_IMAGE_SIDE):
        raise BadInputError(f"image size {w}x{h} outside 1..{MAX_IMAGE_SIDE} pixels")
    if step < w * channels:
        raise BadInputError(f"image step {step} < width {w} x {channels} bytes ({msg.encoding})")
    data = np.frombuffer(memoryview(msg.data).tobytes() if not isinstance(msg.data, bytes) else msg.data, np.uint8)
    if data.size < step * h:
        raise BadInputError(f"image data has {data.size} bytes; {w}x{h} {msg.encoding} with step {step} "
                            f"needs {step * h}")
    pixels = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if msg.encoding.startswith("bgr") else rgb)


def decode_compressed(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> (H, W, 3) uint8 RGB."""
    fmt = msg.format.lower()
    if fmt and not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise BadInputError(f"compressed image format '{msg.format}' unsupported; publish jpeg or png")
    try:
        with PilImage.open(io.BytesIO(memoryview(msg.data).tobytes())) as img:
            if img.width > MAX_IMAGE_SIDE or img.height > MAX_IMAGE_SIDE:
                raise BadInputError(f"compressed image {img.width}x{img.height} is larger than {MAX_IMAGE_SIDE} px")
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, PilImage.DecompressionBombError) as err:   # truncated / corrupt
        raise BadInputError(f"compressed image cannot be decoded ({msg.format or 'no format'}): {err}") from err



def path_points(msg: Any) -> np.ndarray:
    """nav_msgs/Path -> (N, 2) float64 points in msg.header.frame_id."""
    return np.array([(p.pose.position.x, p.pose.position.y) for p in msg.poses], dtype=np.float64).reshape(-1, 2)


@dataclass(frozen=True, slots=True)
class EgoState:
    """The ego pose in the odometry frame, and its motion."""

    x: float
    y: float
    yaw: float
    speed_mps: float
    yaw_rate_rps: float
    frame_id: str
    stamp_s: float
    accel_mps2: float = 0.0       # from the odometry stream (LatestInputs), not from one message


def ego_state(msg: Any) -> EgoState:
    """nav_msgs/Odometry -> EgoState; NaN or inf anywhere is bad input."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    v, w = msg.twist.twist.linear, msg.twist.twist.angular
    if not all(math.isfinite(x) for x in (p.x, p.y, q.x, q.y, q.z, q.w, v.x, v.y, w.z)):
        raise BadInputError("odometry has NaN or inf in pose or twist")
    if abs(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w - 1.0) > 0.1:
        raise BadInputError("odometry orientation is not a unit quaternion")
    speed = math.copysign(math.hypot(v.x, v.y), v.x)          # twist is in child_frame_id (the ego)
    return EgoState(p.x, p.y, yaw_from_quaternion(q.x, q.y, q.z, q.w), speed, w.z,
                    msg.header.frame_id, stamp_s(msg.header.stamp))


@dataclass(frozen=True, slots=True)
class AssembledFrame:
    """A frame ready for Runner.plan, and what it was built from."""

    inputs: FrameInputs
    ego_motion_known: bool
    external_ego_m: np.ndarray | None
    camera_stamp_s: float
    prior_age_s: float            # camera stamp - odometry stamp; -1 without fresh odometry


@dataclass
class CameraStampGuard:
    """Refuses camera frames whose stamps cannot be trusted, before any decoding.

    Why: a looping bag sends stamps backwards, an unsynchronised camera sends them from the future
    or late; planning such a frame pairs it with the wrong route and odometry. After a jump back the
    guard takes the new stamp as the newest, so the frame after it is planned normally; a stamp from
    the future is never taken as the newest.
    """

    last_s: float | None = None

    def refuse(self, camera_s: float, now_s: float, max_frame_age_s: float,
               max_future_s: float) -> tuple[str, str] | None:
        """(reason code, what was wrong and what to do) for a frame to drop, or None to plan it."""
        if max_future_s > 0 and camera_s - now_s > max_future_s:
            return "stamp_future", (f"camera stamp {camera_s - now_s:.3f} s ahead of the node clock "
                                    f"(> io.max_future_s={max_future_s}); check the camera's clock sync or use_sim_time")
        previous, self.last_s = self.last_s, camera_s
        if previous is not None and camera_s < previous:
            return "stamp_backwards", (f"camera stamp went back {previous - camera_s:.3f} s (a looping bag or a "
                                       "restarted driver?); following frames are planned from the new time")
        if max_frame_age_s > 0 and now_s - camera_s > max_frame_age_s:
            return "stale_frame", (f"camera frame {(now_s - camera_s) * 1e3:.0f} ms old "
                                   f"(> io.max_frame_age_s={max_frame_age_s}); check the camera's clock sync")
        return None


@dataclass
class LatestInputs:
    """The newest route, odometry, command and external path, and how to turn them into a frame.

    Setters are called from subscription callbacks (or a bag loop); `assemble` from the planning
    thread. Each setter stores one immutable value in one assignment.
    """

    frame_id: str = "base_link"
    on_rejected: Callable[[str, str], None] = lambda topic, reason: None
    accel_window_s: float = InputSpec().accel_window_s   # the model's: Runner.encoder.accel_window_s
    route: Any = None
    odometry: EgoState | None = None
    command: str = ""
    external: Any = None

    def __post_init__(self) -> None:
        self._speeds = SpeedHistory(self.accel_window_s)   # written by set_odometry alone

    def set_odometry(self, msg: Any) -> None:
        try:
            ego = ego_state(msg)
        except BadInputError as err:
            self.on_rejected("odometry", str(err))
            return
        self._speeds.add(ego.stamp_s, ego.speed_mps)
        self.odometry = replace(ego, accel_mps2=self._speeds.acceleration_mps2())

    def set_route(self, msg: Any) -> None:
        self.route = msg

    def set_command(self, msg: Any) -> None:
        self.command = msg.data

    def set_external(self, msg: Any) -> None:
        self.external = msg

    def assemble(self, camera_msg: Any, raw_image: bool, max_input_age_s: float, use_external: bool) -> AssembledFrame:
        """Decode the camera message and attach the fresh inputs (BadInputError for an unusable image)."""
        camera_s = stamp_s(camera_msg.header.stamp)
        image = decode_image(camera_msg) if raw_image else decode_compressed(camera_msg)
        ego = self.odometry
        if ego is not None and abs(camera_s - ego.stamp_s) > max_input_age_s:
            ego = None
        route = self._in_ego_frame("route", self.route, ego, camera_s, max_input_age_s)
        external = self._in_ego_frame("external", self.external, ego, camera_s, max_input_age_s) \
            if use_external else None
        inputs = FrameInputs(image, route, ego.speed_mps if ego else 0.0, ego.yaw_rate_rps if ego else 0.0,
                             self.command, ego.accel_mps2 if ego else 0.0)
        return AssembledFrame(inputs, ego is not None, external, camera_s, camera_s - ego.stamp_s if ego else -1.0)

    def _in_ego_frame(self, key: str, msg: Any, ego: EgoState | None, camera_s: float,
                      max_age_s: float) -> np.ndarray | None:
        """A path in the ego frame, or None when missing, stale or unusable (a stamp of 0 never goes stale)."""
        if msg is None:
            return None
        stamp = stamp_s(msg.header.stamp)
        if stamp > 0 and abs(camera_s - stamp) > max_age_s:
            return None
        points = path_points(msg)
        if len(points) == 0 or not np.isfinite(points).all():
            self.on_rejected(key, f"{key} is empty or has NaN/inf points")
            return None
        frame = msg.header.frame_id
        if frame == self.frame_id:
            ego_points = points
        elif ego is not None and frame == ego.frame_id:
            ego_points = to_ego_frame(points, ego.x, ego.y, ego.yaw)
        else:
            known = self.frame_id + (f" or {ego.frame_id}" if ego else " (or the odometry frame, once odometry arrives)")
            self.on_rejected(key, f"{key} in frame '{frame}'; expected {known} (no TF lookup in this node)")
            return None
        return ego_points
