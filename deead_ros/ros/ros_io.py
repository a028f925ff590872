"""Conversions between ROS messages and the plain arrays the runner uses. No maths beyond unpacking.

Decoders raise BadInputError with a reason a person can act on; the node counts and logs it.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from PIL import Image as PilImage
from sensor_msgs.msg import CompressedImage, Image

from deead_ros.errors import BadInputError
from deead_ros.geometry import yaw_from_quaternion
from deead_ros.health import Status
from deead_ros_msgs.msg import ExitCheckpoint, ExitDiagnostics

MAX_IMAGE_SIDE = 8192
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def stamp_s(stamp: Time) -> float:
    """A header stamp in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def decode_image(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) -> (H, W, 3) uint8 RGB."""
    channels = _CHANNELS.get(msg.encoding)
    if channels is None:
        raise BadInputError(f"image encoding '{msg.encoding}' unsupported; publish one of {sorted(_CHANNELS)}")
    h, w, step = msg.height, msg.width, msg.step
    if not (0 < h <= MAX_IMAGE_SIDE and 0 < w <= MAX_IMAGE_SIDE):
        raise BadInputError(f"image size {w}x{h} outside 1..{MAX_IMAGE_SIDE} pixels")
    if step < w * channels:
        raise BadInputError(f"image step {step} < width {w} x {channels} bytes ({msg.encoding})")
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, np.ndarray)) else msg.data, np.uint8)
    if data.size < step * h:
        raise BadInputError(f"image data has {data.size} bytes; {w}x{h} {msg.encoding} with step {step} needs {step * h}")
    pixels = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if msg.encoding.startswith("bgr") else rgb)


def decode_compressed(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> (H, W, 3) uint8 RGB."""
    fmt = msg.format.lower()
    if fmt and "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise BadInputError(f"compressed image format '{msg.format}' unsupported; publish jpeg or png")
    try:
        with PilImage.open(io.BytesIO(bytes(msg.data))) as img:
            if img.width * img.height > MAX_IMAGE_SIDE**2 // 4:
                raise BadInputError(f"compressed image {img.width}x{img.height} is too large")
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:         # PIL's errors for truncated or corrupt data
        raise BadInputError(f"compressed image cannot be decoded ({msg.format or 'no format'}): {err}") from err


def path_points(msg: Path) -> np.ndarray:
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


def ego_state(msg: Odometry) -> EgoState:
    """nav_msgs/Odometry -> EgoState; NaN or inf anywhere is bad input."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    v, w = msg.twist.twist.linear, msg.twist.twist.angular
    values = (p.x, p.y, q.x, q.y, q.z, q.w, v.x, v.y, w.z)
    if not all(math.isfinite(x) for x in values):
        raise BadInputError("odometry has NaN or inf in pose or twist")
    if abs(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w - 1.0) > 0.1:
        raise BadInputError("odometry orientation is not a unit quaternion")
    speed = math.copysign(math.hypot(v.x, v.y), v.x)          # twist is in child_frame_id (the ego)
    return EgoState(p.x, p.y, yaw_from_quaternion(q.x, q.y, q.z, q.w), speed, w.z,
                    msg.header.frame_id, stamp_s(msg.header.stamp))


def trajectory_path(points_m: np.ndarray, stamp: Time, frame_id: str) -> Path:
    """(T, 2) ego-frame waypoints -> nav_msgs/Path, each pose facing along the path."""
    path = Path()
    path.header.stamp, path.header.frame_id = stamp, frame_id
    previous = np.zeros(2)
    for x, y in points_m:
        pose = PoseStamped()
        pose.header = path.header
        pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        yaw = math.atan2(y - previous[1], x - previous[0])
        pose.pose.orientation.z, pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        path.poses.append(pose)
        previous = np.array([x, y])
    return path


def exit_diagnostics(result, stamp: Time, frame_id: str, delta_m: float, prior_age_s: float, backend: str,
                     model_version: str) -> ExitDiagnostics:
    """A runner PlanResult -> deead_ros_msgs/ExitDiagnostics."""
    trace = result.trace
    msg = ExitDiagnostics()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.exit_layer, msg.layers_run, msg.num_layers = trace.exit_layer, trace.layers_run, trace.num_layers
    msg.exited_early, msg.reason, msg.reason_text = trace.exited_early, int(trace.reason), trace.reason_text
    msg.checkpoints = [ExitCheckpoint(layer=c.layer, deviation_m=float(c.deviation_m), next_stride=c.next_stride)
                       for c in trace.checkpoints]
    msg.delta_m, msg.policy = float(delta_m), trace.policy
    msg.prior_source, msg.prior_detail = result.prior.source, result.prior.detail
    msg.prior_age_s = float(prior_age_s) if result.prior.is_valid else -1.0
    msg.stem_ms, msg.layers_ms, msg.checks_ms = result.stem_ms, trace.layers_ms, trace.checks_ms
    msg.total_ms, msg.backend, msg.model_version = result.total_ms, backend, model_version
    return msg


def diagnostic_array(statuses: list[Status], stamp: Time, node_name: str) -> DiagnosticArray:
    """Health statuses -> diagnostic_msgs/DiagnosticArray, shaped like diagnostic_updater's."""
    array = DiagnosticArray()
    array.header.stamp = stamp
    for status in statuses:
        array.status.append(DiagnosticStatus(
            level=bytes([int(status.level)]), name=f"{node_name}: {status.name}", message=status.message,
            hardware_id=node_name, values=[KeyValue(key=k, value=v) for k, v in status.values.items()]))
    return array
