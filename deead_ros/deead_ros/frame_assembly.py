"""Turn camera, route, odometry and command messages into one runner frame, at the camera's instant.

Works on any object with the ROS message attributes (rclpy messages in the node, rosbags' deserialised messages in
offline evaluation), so the live node and `deead_eval` build frames with the same code. The ego state is the one at the
camera stamp (OdometryHistory), routes and external paths are moved into the ego frame with that pose, and inputs
outside physical ranges (InputSettings) are refused with a reason before they can reach the prior or the model.
Decoders raise BadInputError with a reason a person can act on; they read an image's size from its header and refuse
oversized ones before decoding, and decode a JPEG larger than the model's input straight to (about) the model's scale.
"""
from __future__ import annotations

import io
import math
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import simplejpeg
from PIL import Image as PilImage

from deead_ros.camera_sync import Intrinsics, camera_intrinsics
from deead_ros.engines.manifest import CameraSpec
from deead_ros.errors import BadInputError
from deead_ros.geometry import to_ego_frame, yaw_from_quaternion
from deead_ros.imu_history import ImuHistory, imu_sample
from deead_ros.model.encoding import CameraView, FrameInputs, ImuSample, InputSpec, fit_image
from deead_ros.odometry_history import EgoState, OdometryHistory
from deead_ros.parameters import default

MAX_IMAGE_SIDE = 8192
PATH_HISTORY = 8                   # routes / external paths kept to pick the one of the camera's instant
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}
_COMPRESSED_FORMATS = ("JPEG", "PNG")   # PIL decoders ever used: other bytes (DDS, GIF, ...) are bad input
_JPEG_START = b"\xff\xd8\xff"         # SOI marker, then a segment
# What a corrupt or hostile jpeg/png can make simplejpeg or PIL raise while reading it.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, NotImplementedError,
                  MemoryError, struct.error, PilImage.DecompressionBombError)


@dataclass(frozen=True, slots=True)
class InputSettings:
    """How a frame's inputs are paired in time, which are plausible and the ego frame's name (the `io.odometry_*`,
    `input_limits.*` and `output.frame_id` parameters; defaults from the parameter table)."""

    frame_id: str = default("output.frame_id")
    odometry_max_gap_s: float = default("io.odometry_max_gap_s")
    odometry_max_extrapolation_s: float = default("io.odometry_max_extrapolation_s")
    odometry_wait_s: float = default("io.odometry_wait_s")
    max_speed_mps: float = default("input_limits.max_speed_mps")
    max_yaw_rate_rps: float = default("input_limits.max_yaw_rate_rps")
    max_route_points: int = default("input_limits.max_route_points")
    max_route_distance_m: float = default("input_limits.max_route_distance_m")
    max_command_chars: int = default("input_limits.max_command_chars")
    max_image_pixels: int = default("input_limits.max_image_pixels")
    imu_max_gap_s: float = default("io.imu_max_gap_s")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> InputSettings:
        """From {parameter name: value}; names it does not know are ignored, missing ones keep the defaults."""
        return cls(**{f.name: values[name] for f in fields(cls)
                      if (name := PARAMETER_NAMES[f.name]) in values})


PARAMETER_NAMES = {f.name: ("output.frame_id" if f.name == "frame_id" else f"io.{f.name}"
                          if f.name.startswith(("odometry_", "imu_")) else f"input_limits.{f.name}")
                   for f in fields(InputSettings)}


def model_image_hw(encoder: Any) -> tuple[int, int] | None:
    """The (H, W) an encoder feeds its model, or None when it does not say (decode at full size)."""
    hw = getattr(getattr(encoder, "spec", None), "image_hw", None)
    return (int(hw[0]), int(hw[1])) if hw is not None else None


def stamp_s(stamp: Any) -> float:
    """A header stamp (sec, nanosec) in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """Refuse an image by the size its header states, before any pixel is read."""
    if not (0 < height and 0 < width):
        raise BadInputError(f"{what} size {width}x{height} outside 1..{MAX_IMAGE_SIDE} pixels")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
        raise BadInputError(f"{what} size {width}x{height} outside 1..{MAX_IMAGE_SIDE} pixels (larger than "
                            f"{MAX_IMAGE_SIDE} px a side); refused before decoding")
    if width * height > max_pixels:
        raise BadInputError(f"{what} {width}x{height} has {width * height} pixels, larger than "
                            f"input_limits.max_image_pixels={max_pixels}; refused before decoding "
                            "(send the camera at a lower resolution or raise the limit)")


def decode_image(msg: Any, max_pixels: int = default("input_limits.max_image_pixels"),
                 target_hw: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) -> (H, W, 3) uint8 RGB, at target_hw when given.

    The pixels are read in place (no copy of the message's buffer) and resized to target_hw (the
    model's (H, W)) before anything else touches them; None: full size.
    """
    channels = _CHANNELS.get(msg.encoding)
    if channels is None:
        raise BadInputError(f"image encoding '{msg.encoding}' unsupported; publish one of {sorted(_CHANNELS)}")
    h, w, step = msg.height, msg.width, msg.step
    _check_pixels(w, h, max_pixels, "image")
    if step < w * channels:
        raise BadInputError(f"image step {step} < width {w} x {channels} bytes ({msg.encoding})")
    try:
        data = np.frombuffer(msg.data, np.uint8)      # bytes, array.array (rclpy), memoryview: no copy
    except TypeError:                                 # a list of ints
        data = np.asarray(msg.data, np.uint8)
    if data.size < step * h:
        raise BadInputError(f"image data has {data.size} bytes; {w}x{h} {msg.encoding} with step {step} "
                            f"needs {step * h}")
    pixels = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    rgb = np.repeat(pixels, 3, axis=2) if channels == 1 else pixels[..., :3]
    if target_hw is not None:
        rgb = fit_image(rgb, target_hw)              # per channel: the same before or after the swap below
    return np.ascontiguousarray(rgb[..., ::-1] if msg.encoding.startswith("bgr") else rgb)


def decode_compressed(msg: Any, max_pixels: int = default("input_limits.max_image_pixels"),
                      target_hw: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> (H, W, 3) uint8 RGB, at target_hw when given.

    The size is read from the header and checked against max_pixels before any pixel is decoded, and the message's
    bytes are read in place. A JPEG larger than target_hw (the model's (H, W)) is decoded by DCT scaling straight to
    the smallest of 1/2, 1/4, 1/8 of its size that is still at least target_hw, a fraction of the work; fit_image (the
    encoder's resize) does the rest. None: full size. YCbCr and grey JPEGs (what cameras send) go through
    libjpeg-turbo's own API (simplejpeg: the fastest decoder measured, docs/results.md); the pixels are those Pillow's
    `draft` gives, which decodes PNG and the rare CMYK/YCCK JPEG.
    """
    fmt = msg.format.lower()
    if fmt and not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise BadInputError(f"compressed image format '{msg.format}' unsupported; publish jpeg or png")
    try:
        data = memoryview(msg.data)                   # bytes, array.array (rclpy), numpy (rosbags): no copy
    except TypeError:                                 # a list of ints
        data = memoryview(bytes(msg.data))
    try:
        rgb = _decode_jpeg(data, max_pixels, target_hw)
        if rgb is None:
            rgb = _decode_with_pillow(data, max_pixels, target_hw)
    except _DECODE_ERRORS as err:   # not jpeg/png, truncated, corrupt
        raise BadInputError(f"compressed image cannot be decoded ({msg.format or 'no format'}): "
                            f"{type(err).__name__}: {err}") from err
    return fit_image(rgb, target_hw) if target_hw is not None else rgb


def _decode_jpeg(data: memoryview, max_pixels: int, target_hw: tuple[int, int] | None) -> np.ndarray | None:
    """A YCbCr or grey JPEG -> RGB at 1/scale of its size (the largest of 8, 4, 2, 1 that keeps it >= target_hw,
    as Pillow's draft picks); None for other bytes (Pillow decodes them or says why not)."""
    if data[:3].tobytes() != _JPEG_START:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:                                # a header it cannot read: Pillow's verdict
        return None
    if colorspace not in ("YCbCr", "Gray"):           # CMYK, YCCK: converted to RGB unlike Pillow
        return None
    _check_pixels(width, height, max_pixels, "compressed image (JPEG)")
    fits = min(height // target_hw[0], width // target_hw[1]) if target_hw is not None else 1
    scale = next(s for s in (8, 4, 2, 1) if s <= max(fits, 1))
    return simplejpeg.decode_jpeg(data, "RGB", min_height=-(-height // scale), min_width=-(-width // scale),
                                  min_factor=scale)


def _decode_with_pillow(data: memoryview, max_pixels: int, target_hw: tuple[int, int] | None) -> np.ndarray:
    """PNG, or a JPEG simplejpeg does not take, -> RGB; a JPEG larger than target_hw through `draft`."""
    with PilImage.open(io.BytesIO(data), formats=_COMPRESSED_FORMATS) as img:
        _check_pixels(img.width, img.height, max_pixels, f"compressed image ({img.format})")
        if (target_hw is not None and img.format == "JPEG"
                and (img.height > target_hw[0] or img.width > target_hw[1])):
            img.draft("RGB", (int(target_hw[1]), int(target_hw[0])))
        return np.asarray(img.convert("RGB"))


def decode_camera(msg: Any, raw: bool, max_pixels: int, target_hw: tuple[int, int] | None) -> np.ndarray:
    """A camera message (raw Image or CompressedImage) -> (H, W, 3) uint8 RGB at about target_hw."""
    return decode_image(msg, max_pixels, target_hw) if raw else decode_compressed(msg, max_pixels, target_hw)


def path_points(msg: Any) -> np.ndarray:
    """nav_msgs/Path -> (N, 2) float64 points in msg.header.frame_id."""
    return np.array([(p.pose.position.x, p.pose.position.y) for p in msg.poses], dtype=np.float64).reshape(-1, 2)


def ego_state(msg: Any, max_speed_mps: float = math.inf, max_yaw_rate_rps: float = math.inf) -> EgoState:
    """nav_msgs/Odometry -> EgoState; NaN or inf anywhere, or motion beyond the limits, is bad input."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    v, w = msg.twist.twist.linear, msg.twist.twist.angular
    if not all(math.isfinite(x) for x in (p.x, p.y, q.x, q.y, q.z, q.w, v.x, v.y, w.z)):
        raise BadInputError("odometry has NaN or inf in pose or twist")
    if abs(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w - 1.0) > 0.1:
        raise BadInputError("odometry orientation is not a unit quaternion")
    speed = math.copysign(math.hypot(v.x, v.y), v.x)          # twist is in child_frame_id (the ego)
    if not abs(speed) <= max_speed_mps:
        raise BadInputError(f"odometry speed {speed:.4g} m/s beyond input_limits.max_speed_mps={max_speed_mps:g}")
    if not abs(w.z) <= max_yaw_rate_rps:
        raise BadInputError(f"odometry yaw rate {w.z:.4g} rad/s beyond "
                            f"input_limits.max_yaw_rate_rps={max_yaw_rate_rps:g}")
    return EgoState(p.x, p.y, yaw_from_quaternion(q.x, q.y, q.z, q.w), speed, w.z,
                    msg.header.frame_id, stamp_s(msg.header.stamp))


@dataclass(frozen=True, slots=True)
class AssembledFrame:
    """A frame ready for Runner.plan, and what it was built from."""

    inputs: FrameInputs
    ego_motion_known: bool
    external_ego_m: np.ndarray | None
    camera_stamp_s: float
    prior_age_s: float            # from the camera stamp to the nearest odometry sample, s; -1 without odometry
    ego: EgoState | None = None   # the ego state at the camera stamp (odometry frame); None without odometry
    decode_ms: float = 0.0        # of assembling: decoding the camera message


@dataclass
class CameraStampGuard:
    """Refuses camera frames whose stamps cannot be trusted, before any decoding: a looping bag sends stamps
    backwards, an unsynchronised camera from the future or late, pairing the frame with the wrong route and
    odometry. After a jump back the new stamp is the newest (the next frame is planned); a future one never is."""

    last_s: float | None = None

    def refuse(self, camera_s: float, now_s: float, max_frame_age_s: float,
               max_future_s: float) -> tuple[str, str] | None:
        """(reason code, what was wrong and what to do) for a frame to drop, or None to plan it."""
        if max_future_s > 0 and camera_s - now_s > max_future_s:
            return "stamp_future", (f"camera stamp {camera_s - now_s:.3f} s ahead of the node clock "
                                    f"(> io.max_future_s={max_future_s}); "
                                    "check the camera's clock sync or use_sim_time")
        previous, self.last_s = self.last_s, camera_s
        if previous is not None and camera_s < previous:
            return "stamp_backwards", (f"camera stamp went back {previous - camera_s:.3f} s (a looping bag or a "
                                       "restarted driver?); following frames are planned from the new time")
        if max_frame_age_s > 0 and now_s - camera_s > max_frame_age_s:
            return "stale_frame", (f"camera frame {(now_s - camera_s) * 1e3:.0f} ms old "
                                   f"(> io.max_frame_age_s={max_frame_age_s}); check the camera's clock sync")
        return None


@dataclass(frozen=True, slots=True)
class StampedPath:
    """A route or external path, converted once when it arrives."""

    points: np.ndarray | None      # (N, 2) float64 in frame_id, read-only; None: the message was refused
    frame_id: str
    stamp_s: float                 # 0: static (never stale)


STAMP_TOLERANCE_S = 5e-4          # stamps this close are the same instant (float seconds of a ROS time)


def path_due(paths: tuple[StampedPath, ...], camera_s: float) -> bool:
    """Whether the path of the camera's instant can still arrive: a stamped stream whose next message (one
    period, its last two stamps apart, after the newest) is due by camera_s. Paths are in arrival order."""
    stamped = [p.stamp_s for p in paths if p.stamp_s > 0]
    if len(stamped) < 2 or paths[-1].stamp_s == 0 or stamped[-1] >= camera_s - STAMP_TOLERANCE_S:
        return False
    period = stamped[-1] - stamped[-2]
    return period > 0 and stamped[-1] + period <= camera_s + STAMP_TOLERANCE_S


def pick_path(paths: tuple[StampedPath, ...], camera_s: float) -> StampedPath | None:
    """The path of the camera's instant: the newest stamped at or before it (a static one: the newest
    message); else the earliest after it. Paths are in arrival order."""
    if not paths:
        return None
    if paths[-1].stamp_s == 0:
        return paths[-1]
    stamped = [p for p in paths if p.stamp_s > 0]
    before = [p for p in stamped if p.stamp_s <= camera_s]
    if before:
        return max(before, key=lambda p: p.stamp_s)
    return min(stamped, key=lambda p: p.stamp_s)


@dataclass
class LatestInputs:
    """Recent route, odometry, command and external path, and how to turn them into a frame.

    Setters (subscription callbacks, or a bag loop) convert and check a message once with `current()` settings
    and store it with one assignment (the odometry in a thread-safe OdometryHistory); the planning thread's
    `wait_for_instant` and `assemble` take the frame's settings (read once per frame). on_rejected(topic, reason):
    a message (or, at assembly, an input of this frame) cannot be used; the frame is planned without it.
    on_notice(key, reason): an input was used after a change worth counting ("odometry_reset": a pose jump, a
    changed frame or a restarted stream reset the history; "command_truncated").
    """

    on_rejected: Callable[[str, str], None] = lambda topic, reason: None
    on_notice: Callable[[str, str], None] = lambda key, reason: None
    accel_window_s: float = InputSpec().accel_window_s   # the model's: Runner.encoder.accel_window_s
    settings: InputSettings = InputSettings()            # fixed (deead_eval, tests), unless `source` is given
    source: Callable[[], InputSettings] | None = None    # the node's: its current settings snapshot's
    command: str = ""
    decode_threads: int = 1                              # several cameras: views decoded in parallel
    intrinsics: dict[str, Intrinsics] = field(default_factory=dict)   # newest CameraInfo per camera

    def __post_init__(self) -> None:
        self.history = OdometryHistory(max_jump_speed_mps=self.current().max_speed_mps)
        self.imu = ImuHistory()
        self._decoders: ThreadPoolExecutor | None = None
        self._routes: tuple[StampedPath, ...] = ()
        self._externals: tuple[StampedPath, ...] = ()
        self._arrived = threading.Condition()          # odometry or a route arrived: wait_for_instant looks again

    def current(self) -> InputSettings:
        """What a message is stored with; a frame's settings are passed with it (read once per frame)."""
        return self.source() if self.source is not None else self.settings

    @property
    def odometry(self) -> EgoState | None:
        """The newest odometry sample (its acceleration is computed at assembly), or None."""
        return self.history.newest()

    # -- setters: subscription callbacks ---------------------------------------------------------
    def set_odometry(self, msg: Any) -> None:
        settings = self.current()
        try:
            ego = ego_state(msg, settings.max_speed_mps, settings.max_yaw_rate_rps)
        except BadInputError as err:
            self.on_rejected("odometry", str(err))
            return
        self.history.max_jump_speed_mps = settings.max_speed_mps
        reason = self.history.add(ego)                # ego_state checked it finite: a reason is a reset
        if reason is not None:
            self.on_notice("odometry_reset", reason)
        with self._arrived:
            self._arrived.notify_all()

    def set_camera_info(self, camera: str, msg: Any) -> None:
        """Keep a camera's calibration (CameraInfo, usually latched or repeated) for its views."""
        try:
            self.intrinsics = {**self.intrinsics, camera: camera_intrinsics(msg)}
        except BadInputError as err:
            self.on_rejected(f"{camera}/camera_info" if camera else "camera_info", str(err))

    def set_imu(self, msg: Any) -> None:
        try:
            self.imu.add(*imu_sample(msg))
        except BadInputError as err:
            self.on_rejected("imu", str(err))

    def set_route(self, msg: Any) -> None:
        self._routes = (*self._routes[-(PATH_HISTORY - 1):], self._stamped_path("route", msg))
        with self._arrived:
            self._arrived.notify_all()

    def set_external(self, msg: Any) -> None:
        self._externals = (*self._externals[-(PATH_HISTORY - 1):], self._stamped_path("external", msg))

    def set_command(self, msg: Any) -> None:
        text, limit = msg.data, self.current().max_command_chars
        if len(text) > limit:
            self.on_notice("command_truncated", f"command of {len(text)} characters cut to "
                                                f"input_limits.max_command_chars={limit}")
            text = text[:limit]
        self.command = text

    def _stamped_path(self, key: str, msg: Any) -> StampedPath:
        """Convert a nav_msgs/Path once; a refused one is stored too, so frames of its instant go without it."""
        stamp, frame = stamp_s(msg.header.stamp), msg.header.frame_id
        limit = self.current().max_route_points
        if len(msg.poses) > limit:
            self.on_rejected(key, f"{key} has {len(msg.poses)} points, more than "
                                  f"input_limits.max_route_points={limit}")
            return StampedPath(None, frame, stamp)
        points = path_points(msg)
        if len(points) == 0 or not np.isfinite(points).all():
            self.on_rejected(key, f"{key} is empty or has NaN/inf points")
            return StampedPath(None, frame, stamp)
        points.flags.writeable = False
        return StampedPath(points, frame, stamp)

    # -- the planning thread ---------------------------------------------------------------------
    def wait_for_instant(self, camera_s: float, timeout_s: float | None = None,
                         settings: InputSettings | None = None) -> bool:
        """Wait (at most io.odometry_wait_s) for the inputs of camera_s's instant: odometry stamped at or after
        it (at most io.odometry_max_gap_s after: not a restarted stream's), and its route when one is due
        (`path_due`). deead_eval applies it at timeout 0 after each message, so live = offline. Returns
        whether they arrived; without odometry yet and no route due it does not wait."""
        settings = settings or self.current()
        timeout_s = settings.odometry_wait_s if timeout_s is None else timeout_s
        with_odometry = bool(len(self.history))
        if not with_odometry and not path_due(self._routes, camera_s):
            return False

        def arrived() -> bool:
            return ((not with_odometry or self.history.has_after(camera_s, settings.odometry_max_gap_s))
                    and not path_due(self._routes, camera_s))
        with self._arrived:
            return self._arrived.wait_for(arrived, timeout_s)

    def ego_at(self, camera_s: float, settings: InputSettings | None = None) -> EgoState | None:
        """The ego state at camera_s with its acceleration, or None (stale: reported through on_rejected)."""
        settings = settings or self.current()
        state = self.history.at(camera_s, settings.odometry_max_gap_s, settings.odometry_max_extrapolation_s)
        if isinstance(state, str):
            if len(self.history):                     # none at all is not a rejection: /diagnostics says so
                self.on_rejected("odometry", f"odometry stale: {state}")
            return None
        return replace(state, accel_mps2=self.history.acceleration_at(camera_s, self.accel_window_s))

    def assemble(self, camera_msg: Any, raw_image: bool, max_input_age_s: float, use_external: bool,
                 image_hw: tuple[int, int] | None = None, settings: InputSettings | None = None) -> AssembledFrame:
        """Decode the camera message and attach the inputs of its instant (BadInputError for an unusable image).

        image_hw: the model's (H, W); a larger JPEG is decoded straight to about that scale. None: full size.
        """
        camera_s, settings, started = stamp_s(camera_msg.header.stamp), settings or self.current(), time.perf_counter()
        image = decode_camera(camera_msg, raw_image, settings.max_image_pixels, image_hw)
        return self._attach(camera_s, image, (), (time.perf_counter() - started) * 1e3, max_input_age_s, use_external,
                            settings)

    def assemble_set(self, camera_s: float, messages: Sequence[tuple[str, Any]], raw_image: bool,
                     max_input_age_s: float, use_external: bool, cameras: Sequence[CameraSpec],
                     mountings: Mapping[str, tuple[float, ...]] | None = None,
                     settings: InputSettings | None = None) -> AssembledFrame:
        """Several cameras' images of one instant (camera_s) -> one frame with a view per camera, in `cameras`
        order: each decoded straight to about its model size (in parallel with decode_threads > 1), with its
        intrinsics from the newest CameraInfo (None before one arrived) and its mounting (`mountings` by
        name, else the manifest's). BadInputError for an unusable image."""
        by_name = dict(messages)
        settings = settings or self.current()
        max_pixels = settings.max_image_pixels
        started = time.perf_counter()

        def decode(camera: CameraSpec) -> np.ndarray:
            return decode_camera(by_name[camera.name], raw_image, max_pixels, camera.image_hw)

        if self.decode_threads > 1 and len(cameras) > 1:
            if self._decoders is None:
                self._decoders = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="deead_decode")
            images = list(self._decoders.map(decode, cameras))
        else:
            images = [decode(camera) for camera in cameras]
        decode_ms = (time.perf_counter() - started) * 1e3
        intrinsics = self.intrinsics
        views = tuple(CameraView(camera.name, image, intrinsics[camera.name].at_size(*image.shape[:2])
                                 if camera.name in intrinsics else None,
                                 (mountings or {}).get(camera.name, camera.mounting))
                      for camera, image in zip(cameras, images))
        return self._attach(camera_s, images[0], views, decode_ms, max_input_age_s, use_external, settings)

    def _attach(self, camera_s: float, image: np.ndarray, views: tuple[CameraView, ...], decode_ms: float,
                max_input_age_s: float, use_external: bool, settings: InputSettings) -> AssembledFrame:
        """The decoded image(s) with the ego state, route, external path, command and IMU of their instant."""
        ego, imu = self.ego_at(camera_s, settings), self.imu_at(camera_s, settings)
        route = self._in_ego_frame("route", pick_path(self._routes, camera_s), ego, camera_s, max_input_age_s, settings)
        external = (self._in_ego_frame("external", pick_path(self._externals, camera_s), ego, camera_s,
                                       max_input_age_s, settings) if use_external else None)
        inputs = FrameInputs(image, route, ego.speed_mps if ego else 0.0, ego.yaw_rate_rps if ego else 0.0,
                             self.command, ego.accel_mps2 if ego else 0.0, views, imu, camera_s)
        age = self.history.nearest_gap_s(camera_s) if ego else -1.0
        return AssembledFrame(inputs, ego is not None, external, camera_s, age, ego, decode_ms)

    def imu_at(self, camera_s: float, settings: InputSettings | None = None) -> ImuSample | None:
        """The IMU at camera_s, or None (none published; stale: reported through on_rejected)."""
        sample = self.imu.at(camera_s, (settings or self.current()).imu_max_gap_s)
        if isinstance(sample, str):
            self.on_rejected("imu", f"IMU stale: {sample}")
            return None
        return sample

    def close(self) -> None:
        """Stop the decoding threads (several cameras)."""
        if self._decoders is not None:
            self._decoders.shutdown(wait=True)
            self._decoders = None

    def _in_ego_frame(self, key: str, path: StampedPath | None, ego: EgoState | None, camera_s: float,
                      max_age_s: float, settings: InputSettings) -> np.ndarray | None:
        """A path in the ego frame, or None when missing, refused, stale or unusable (stamp 0 never goes stale)."""
        if path is None or path.points is None:
            return None
        if path.stamp_s > 0 and abs(camera_s - path.stamp_s) > max_age_s:
            return None
        if path.frame_id == settings.frame_id:
            ego_points = path.points
        elif ego is not None and path.frame_id == ego.frame_id:
            with np.errstate(over="ignore", invalid="ignore"):      # absurd coordinates are refused below
                ego_points = to_ego_frame(path.points, ego.x, ego.y, ego.yaw)
        else:
            known = settings.frame_id + (f" or {ego.frame_id}" if ego else
                                     " (or the odometry frame, with odometry at the camera stamp)")
            self.on_rejected(key, f"{key} in frame '{path.frame_id}'; expected {known} (no TF lookup in this node)")
            return None
        limit = settings.max_route_distance_m
        with np.errstate(over="ignore", invalid="ignore"):
            farthest = float(np.max(np.hypot(ego_points[:, 0], ego_points[:, 1])))
        if not farthest <= limit:
            self.on_rejected(key, f"{key} has a point {farthest:.3g} m from the ego, farther than "
                                  f"input_limits.max_route_distance_m={limit:g}")
            return None
        return ego_points
