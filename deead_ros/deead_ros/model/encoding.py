"""The model's input contract: what a frame is (FrameInputs) and how an encoder turns it into stem tensors.

A model owns its encoder. The manifest names it (`encoder.name`, a name registered here or an
importable `module:Class`) and carries its configuration, so an exported chain is self-describing:
the Runner encodes each frame once and hands the engines named tensors. numpy only.

The encoder shipped here, `driving_frame` (the demo VLA and the Llama VLA use it), writes these stem
inputs (batch B; shapes for the default spec):
    image        (B, 3, 96, 160) float32   RGB resized to the model's size, (x/255 - mean) / std
    route        (B, K, 2)       float32   route ahead in the ego frame (x forward, y left) / route_scale_m:
                                           the route prior's points first, then spaced ones (exit.prior.RouteAhead)
    ego          (B, 4)          float32   speed / speed_scale_mps, yaw rate / yaw_rate_scale_rps, route valid,
                                           acceleration / accel_scale_mps2 (speed change over accel_window_s;
                                           0 when the spec's acceleration_input is off)
    command_ids  (B, C)          int32     word ids of the text command, <pad>=0 after the last word
"""
from __future__ import annotations

import functools
import importlib
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Protocol, Sequence

import numpy as np
from PIL import Image as PilImage

from deead_ros.engines.manifest import SensorContract, TensorSpec
from deead_ros.errors import ModelFileError
from deead_ros.exit.prior import PriorSettings, RouteAhead

EGO_FEATURES = 4
ACCEL_FEATURE = 3                      # the ego token's acceleration column
PAD, UNK = "<pad>", "<unk>"

# Words of the data set's commands (deead_lab.dataset_format.COMMANDS) and of the commands a
# route planner or a person is likely to send; anything else encodes as <unk>.
DEFAULT_VOCABULARY = (
    PAD, UNK,
    "follow", "the", "lane", "turn", "left", "right", "at", "junction", "go", "straight", "change", "to",
    "keep", "stay", "in", "continue", "ahead", "stop", "slow", "down", "yield", "merge", "take", "exit",
    "first", "second", "third", "roundabout", "intersection", "next", "and", "on", "into", "of",
)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass in JSON-ready form (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def config_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Inverse of config_to_dict; unknown keys are an error so that a typo cannot pass silently."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True, slots=True)
class CameraView:
    """One camera's image of a frame, with what a multi-view encoder needs to project into it."""

    name: str                          # as the manifest's sensors.cameras and the node's `cameras` name it
    image_rgb: np.ndarray              # (H, W, 3) uint8 RGB, as decoded (about the model's size)
    intrinsics: np.ndarray | None      # (3, 3) pinhole K at this image's size (CameraInfo.k scaled); None: unknown
    mounting: tuple[float, ...]        # x, y, z, roll, pitch, yaw of the camera body in the ego frame (m, rad)


@dataclass(frozen=True, slots=True)
class ImuSample:
    """sensor_msgs/Imu's motion at the camera stamp, in the IMU's frame (SI units)."""

    linear_accel_mps2: tuple[float, float, float]
    angular_velocity_rps: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class FrameInputs:
    """What the model sees of one frame, in the units the node receives them."""

    image_rgb: np.ndarray              # (H, W, 3) uint8, RGB, any size (resized to the model's); several
                                       # cameras: the first view's image (what the debug image shows)
    route_ego_m: np.ndarray | None     # (N, 2) route in the ego frame, driving order, m; None: no route
    speed_mps: float                   # ego speed
    yaw_rate_rps: float                # ego yaw rate, positive = turning left
    command: str = ""                  # short text command, e.g. "turn left at the junction"
    accel_mps2: float = 0.0            # speed change over the spec's accel_window_s (SpeedHistory); 0: unknown
    views: tuple[CameraView, ...] = ()  # several cameras: every view in the manifest's order; (): one camera
    imu: ImuSample | None = None       # the IMU at the camera stamp; None: none (or stale)
    stamp_s: float = 0.0               # the camera stamp: a model with memory measures time between frames by it


def acceleration_at(stamps_s: Sequence[float], speeds_mps: Sequence[float], at_s: float, window_s: float) -> float:
    """The speed change per second over the window_s before at_s: the model's acceleration input.

    (speed at at_s - speed at max(at_s - window_s, first sample)) / that span, speeds interpolated
    linearly between samples (stamps increasing) and held past the newest. 0 when the samples start
    at or after at_s: a frame right after start-up or a jump back is taken as cruising. The trainer
    (SpeedHistory), the node and deead_eval (OdometryHistory) and the closed loop all use this one formula.
    """
    if not len(stamps_s) or not math.isfinite(at_s) or not at_s > stamps_s[0]:
        return 0.0
    start = max(at_s - window_s, stamps_s[0])
    now, then = np.interp([at_s, start], stamps_s, speeds_mps)
    return float((now - then) / (at_s - start))


class SpeedHistory:
    """Recent (stamp, speed) samples, and the acceleration they show over a window.

    The speed change over half a second is what tells braking and speeding up apart from cruising,
    which one speed sample cannot; the trainer, the node and the closed loop all measure it here, so
    the model sees the same number everywhere.
    """

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError(f"acceleration window must be > 0 s; got {window_s}")
        self.window_s = window_s
        self._stamps: list[float] = []
        self._speeds: list[float] = []

    def add(self, stamp_s: float, speed_mps: float) -> None:
        """Append a sample; a stamp that goes back (a looping bag, a restarted driver) starts over."""
        if self._stamps and stamp_s < self._stamps[-1]:
            self._stamps.clear()
            self._speeds.clear()
        self._stamps.append(stamp_s)
        self._speeds.append(speed_mps)
        while len(self._stamps) > 2 and self._stamps[1] <= stamp_s - self.window_s:
            del self._stamps[0], self._speeds[0]

    def acceleration_mps2(self) -> float:
        """(newest speed - speed one window earlier) / window; over less when the history is shorter.

        0 with a single sample: a frame right after start-up or a jump back is taken as cruising.
        """
        if not self._stamps:
            return 0.0
        return acceleration_at(self._stamps, self._speeds, self._stamps[-1], self.window_s)


def accelerations(stamps_s: Sequence[float] | np.ndarray, speeds_mps: Sequence[float] | np.ndarray,
                  window_s: float) -> np.ndarray:
    """The acceleration a SpeedHistory shows at every sample of a recorded series (a data set episode)."""
    history = SpeedHistory(window_s)
    out = np.zeros(len(stamps_s), np.float32)
    for i, (stamp, speed) in enumerate(zip(stamps_s, speeds_mps)):
        history.add(float(stamp), float(speed))
        out[i] = history.acceleration_mps2()
    return out


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How frames become stem inputs; stored in the model's config.json and in manifest.json."""

    image_hw: tuple[int, int] = (96, 160)                   # (H, W) fed to the stem
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)   # per RGB channel, on x / 255
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    route_points: int = 12                                  # K route tokens: first the timed ones, then spaced
    route_timed_points: int = 6                             # where the ego would be at dt, 2 dt, ... on the route
    route_dt_s: float = 0.5                                 # (the route prior, exit.prior.RouteAhead.at_times)
    route_spacing_m: float = 8.0                            # then every this many metres from the closest point
    route_scale_m: float = 20.0                             # route coordinates are divided by this
    speed_scale_mps: float = 10.0
    yaw_rate_scale_rps: float = 0.5
    accel_window_s: float = 0.5                             # acceleration = speed change over this window
    accel_scale_mps2: float = 2.0
    # Off: the model never sees the ego's own speed change (the acceleration column is always 0), so it
    # cannot learn to continue its own braking (the copycat problem, docs/results.md). On in manifests
    # written before the option existed; deead_train turns it off unless --acceleration-input.
    acceleration_input: bool = True
    max_command_tokens: int = 8                             # C; longer commands are truncated
    vocabulary: tuple[str, ...] = DEFAULT_VOCABULARY        # id = index; <pad>=0, <unk>=1

    def __post_init__(self) -> None:
        if self.vocabulary[:2] != (PAD, UNK):
            raise ValueError(f"vocabulary must start with {PAD!r}, {UNK!r} (got {self.vocabulary[:2]})")
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError("vocabulary has duplicate words")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Inverse of to_dict; unknown keys are an error so that a typo cannot pass silently."""
        return config_from_dict(cls, data, "input spec")

    def stem_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the stem inputs at batch 1, by name."""
        h, w = self.image_hw
        return {"image": (1, 3, h, w), "route": (1, self.route_points, 2), "ego": (1, EGO_FEATURES),
                "command_ids": (1, self.max_command_tokens)}


def resize_rgb(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) image to `hw` as float32: box-average by the integer factor, then bilinear.

    The box step makes large downscales average pixels (like area resampling) instead of skipping
    them; on uint8 images Pillow's BOX filter does it in C (a 1920x1080 frame in a few ms rather than
    tens with numpy; its 8-bit rounding differs from the float mean by at most one level). The
    bilinear step uses pixel centres (align_corners=False); an axis already at its size is left as it is.
    """
    h, w = hw
    fy, fx = max(image.shape[0] // h, 1), max(image.shape[1] // w, 1)
    hh, ww = image.shape[0] // fy, image.shape[1] // fx
    img = image if image.dtype == np.uint8 else np.asarray(image, dtype=np.float32)   # uint8 * float32: float32
    if (fy > 1 or fx > 1) and img.dtype == np.uint8:
        img = np.asarray(PilImage.fromarray(np.ascontiguousarray(img)).resize(
            (ww, hh), PilImage.Resampling.BOX, box=(0, 0, ww * fx, hh * fy)))
    elif fy > 1 or fx > 1:
        img = img[:hh * fy, :ww * fx].reshape(hh, fy, ww, fx, 3).mean(axis=(1, 3))
    if img.shape[0] != h:                           # rows: whole rows gathered, weighted, added
        y0, y1, wy0, wy1 = _bilinear_taps(img.shape[0], h, 1)
        rows = img[y0] * wy0[:, None, None]
        rows += img[y1] * wy1[:, None, None]
        img = rows
    if img.shape[1] != w:                           # columns: on (h, W * 3), each pixel's channels side by side
        x0, x1, wx0, wx1 = _bilinear_taps(img.shape[1], w, img.shape[2])
        flat = img.reshape(img.shape[0], -1)
        cols = flat[:, x0] * wx0
        cols += flat[:, x1] * wx1
        img = cols.reshape(img.shape[0], w, img.shape[2])
    return np.asarray(img, dtype=np.float32)


def fit_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 image at least `hw` in both sides shrunk to `hw` as the encoder would (resize_rgb).

    Decoding calls it so that the frame handed to the runner is already at the model's size (rounded
    to uint8). A smaller image is returned as it is: the encoder upsamples it, nothing is gained here.
    """
    if image.shape[0] < hw[0] or image.shape[1] < hw[1] or image.shape[:2] == tuple(hw):
        return image
    return resize_uint8(image, hw)


def resize_uint8(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """resize_rgb rounded back to uint8: an image stored at `hw` (decoding, training on another camera size)."""
    resized = resize_rgb(image, hw)
    if resized is image or not resized.flags.writeable:        # never round the caller's array in place
        resized = resized.copy()
    np.rint(resized, out=resized)
    np.clip(resized, 0, 255, out=resized)
    return resized.astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _bilinear_taps(size_in: int, size_out: int, channels: int) -> tuple[np.ndarray, ...]:
    """Per output index: the two input indices and their weights (1 - f, f), pixel centres aligned.

    With channels > 1 each index and weight is repeated per channel, for a gather on the (rows, W *
    channels) layout. Cached per camera size: they are the same for every frame. Read-only arrays.
    """
    centres = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0, size_in - 1)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = (centres - lo).astype(np.float32)
    taps = (lo, hi, 1.0 - frac, frac)
    if channels > 1:
        lane = np.arange(channels)
        taps = ((lo[:, None] * channels + lane).ravel(), (hi[:, None] * channels + lane).ravel(),
                np.repeat(1.0 - frac, channels), np.repeat(frac, channels))
    for array in taps:
        array.flags.writeable = False
    return taps


def normalise_images(images_rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(B, H, W, 3) images at the model's size (uint8 or float 0..255) -> (B, 3, H, W) float32."""
    x: np.ndarray = np.asarray(images_rgb, dtype=np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(spec.image_mean, np.float32)) / np.asarray(spec.image_std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def route_tokens(route: RouteAhead | None, spec: InputSpec, speed_mps: float = 0.0) -> tuple[np.ndarray, bool]:
    """The route ahead at the model's K token positions, and whether there was a usable route.

    The first route_timed_points are where the ego would be after dt, 2 dt, ... driving the route (the
    planner prior itself, so the model starts from it); the rest follow every route_spacing_m and show
    the road's shape further ahead. Returns (K, 2) float32 points / route_scale_m (zeros without a route).
    """
    if route is None or not np.isfinite(speed_mps):
        return np.zeros((spec.route_points, 2), np.float32), False
    timed = route.at_times(speed_mps, spec.route_dt_s * np.arange(1, spec.route_timed_points + 1))
    spaced = route.at_distances(spec.route_spacing_m * np.arange(1, spec.route_points - spec.route_timed_points + 1))
    return (np.concatenate([timed, spaced]) / spec.route_scale_m).astype(np.float32), True


def tokenize(command: str, spec: InputSpec) -> np.ndarray:
    """Word ids (C,) int32 of a command: lowercase, split on non-letters, <unk> for unknown words."""
    index = {word: i for i, word in enumerate(spec.vocabulary)}
    words = re.findall(r"[a-z]+", command.lower())[:spec.max_command_tokens]
    ids = np.zeros(spec.max_command_tokens, np.int32)
    ids[:len(words)] = [index.get(word, 1) for word in words]
    return ids


def check_image(image_rgb: np.ndarray) -> None:
    """Raise ValueError unless the image is (H, W, 3) uint8."""
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB; got {image_rgb.shape} {image_rgb.dtype}")


def encode_batch(frames: Sequence[FrameInputs], spec: InputSpec,
                 prior: PriorSettings = PriorSettings()) -> dict[str, np.ndarray]:
    """Encode B frames into the stem's named inputs (batch B), see the module docstring.

    The route is checked and located by the prior's settings, as the Runner does for each live frame.
    """
    routes = [prior.route_ahead(f.route_ego_m) for f in frames]
    return _encode(frames, [None if isinstance(r, str) else r for r in routes], spec)


def _encode(frames: Sequence[FrameInputs], routes: Sequence[RouteAhead | None],
            spec: InputSpec) -> dict[str, np.ndarray]:
    if not frames:
        raise ValueError("encode_batch needs at least one frame")
    for frame in frames:
        check_image(frame.image_rgb)
    images = np.stack([at_model_size(f.image_rgb, spec.image_hw) for f in frames])
    return {"image": normalise_images(images, spec), **encode_route_ego_command(frames, routes, spec)}


def at_model_size(image_rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) image at the model's (H, W): as it is when it already has that size, else resize_rgb."""
    return image_rgb if image_rgb.shape[:2] == tuple(hw) else resize_rgb(image_rgb, hw)


def encode_route_ego_command(frames: Sequence[FrameInputs], routes: Sequence[RouteAhead | None],
                             spec: InputSpec) -> dict[str, np.ndarray]:
    """The stem inputs besides the camera: route (B, K, 2), ego (B, 4), command_ids (B, C) (module docstring)."""
    tokens, valid = zip(*(route_tokens(r, spec, f.speed_mps) for f, r in zip(frames, routes)))
    accel_gain = 1.0 / spec.accel_scale_mps2 if spec.acceleration_input else 0.0
    ego = np.array([[f.speed_mps / spec.speed_scale_mps, f.yaw_rate_rps / spec.yaw_rate_scale_rps, float(ok),
                     f.accel_mps2 * accel_gain] for f, ok in zip(frames, valid)], dtype=np.float32)
    if not np.all(np.isfinite(ego)):
        raise ValueError(f"ego speed / yaw rate / acceleration must be finite; got "
                         f"{ego[:, [0, 1, ACCEL_FEATURE]].tolist()}")
    return {"route": np.stack(tokens), "ego": ego, "command_ids": np.stack([tokenize(f.command, spec) for f in frames])}


class FrameEncoder(Protocol):
    """What a model's encoder provides: a frame in, the stem's named tensors (batch 1) out.

    `outputs()` must list exactly the stem's inputs (names, shapes, dtypes); the Runner checks that at
    start-up. `encode` gets the route as the prior located it (None when there is no usable route), so
    the model's route input and the controller's reference come from one implementation.
    """

    name: ClassVar[str]
    accel_window_s: float              # FrameInputs.accel_mps2 is the speed change over this window

    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def encode(self, frame: FrameInputs, route: RouteAhead | None) -> dict[str, np.ndarray]: ...

    def to_config(self) -> dict[str, Any]: ...


class DrivingFrameEncoder:
    """Camera image, route tokens, ego state and command words, as InputSpec describes (see module docstring)."""

    name: ClassVar[str] = "driving_frame"

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.accel_window_s = spec.accel_window_s

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DrivingFrameEncoder:
        return cls(InputSpec.from_dict(config))

    def to_config(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def outputs(self) -> tuple[TensorSpec, ...]:
        dtypes = {"command_ids": "int32"}
        return tuple(TensorSpec(name, shape, dtypes.get(name, "float32"))
                     for name, shape in self.spec.stem_shapes().items())

    def encode(self, frame: FrameInputs, route: RouteAhead | None) -> dict[str, np.ndarray]:
        return _encode([frame], [route], self.spec)


ENCODERS: dict[str, Any] = {DrivingFrameEncoder.name: DrivingFrameEncoder}
# Encoders that live in a module of their own, imported when a manifest names them.
LAZY_ENCODERS = {"multi_view": "deead_ros.model.multi_view:MultiViewEncoder"}


def sensors_of(encoder: object) -> SensorContract:
    """The cameras, IMU and memory an encoder reads (`sensors()`); without it, the single-camera contract."""
    sensors = getattr(encoder, "sensors", None)
    return sensors() if callable(sensors) else SensorContract()


def load_encoder(name: str, config: dict[str, Any], where: str = "manifest") -> FrameEncoder:
    """The encoder a manifest names: a name in ENCODERS, or `package.module:Class` with a from_config classmethod.

    Raises:
        ModelFileError: the name is unknown, cannot be imported, or its config is invalid.
    """
    if ":" in name or name in LAZY_ENCODERS:
        module_name, _, attr = LAZY_ENCODERS.get(name, name).partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ModelFileError(f"{where}: encoder.name '{name}' cannot be imported ({err}); install the package "
                                 "that provides it or fix the name (package.module:Class)") from err
    elif name in ENCODERS:
        cls = ENCODERS[name]
    else:
        raise ModelFileError(f"{where}: encoder.name '{name}' is unknown; expected one of "
                             f"{sorted([*ENCODERS, *LAZY_ENCODERS])} or an "
                             "importable 'package.module:Class'")
    try:
        return cls.from_config(config)
    except (ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"{where}: encoder.config is invalid for '{name}' ({err})") from err


def check_encoder_matches(encoder: FrameEncoder, stem_inputs: tuple[TensorSpec, ...], where: str) -> None:
    """Raise ModelFileError unless the encoder writes exactly the stem's inputs (names, shapes, dtypes)."""
    expected = {t.name: (tuple(t.shape), t.dtype) for t in stem_inputs}
    found = {t.name: (tuple(t.shape), t.dtype) for t in encoder.outputs()}
    if expected != found:
        differ = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        writes = ", ".join(f"{k}: {found.get(k, 'nothing')}" for k in differ)
        takes = ", ".join(f"{k}: {expected.get(k, 'nothing')}" for k in differ)
        raise ModelFileError(f"{where}: encoder '{encoder.name}' writes {writes} but the stem takes {takes} "
                             "(name: (shape, dtype)); give the model the encoder configuration it was trained with")
