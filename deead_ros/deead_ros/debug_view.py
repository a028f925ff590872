"""The plan drawn for people: the debug image and the markers, from one PlanResult (numpy and PIL, no ROS types).

What a planner engineer wants to see per frame: what the model planned, what the prior was, what the shared
head read at every checkpoint and why the chain stopped where it did. The node publishes these while someone
subscribes (~/debug/image, ~/debug/markers) and deead_eval writes them into its report, video and MCAP, so
both draw with the same code.

The debug image is the camera frame with
- a bird's-eye inset in the ego frame (x forward = up, y left = left; a fixed scale, `Inset`): the route
  prior, the trajectory read at every checkpoint coloured by layer (viridis, layer / num_layers), the
  published trajectory (the fallback, in red, when the model's plan failed validation) and the ground
  truth when known;
- the same trajectories projected onto the image when a camera model is given (`CameraModel`: pinhole
  intrinsics from a CameraInfo's K, and the camera's mounting; ground plane z = 0, no lens distortion);
- a caption: exit layer / layers, reason, the deviation at each check, delta, latency, the prior, and the
  validation verdict when it failed.
Every line starts at the ego (0, 0): a plan's waypoints begin one time step ahead.
"""
from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deead_ros.runner import PlanResult

RGB = tuple[int, int, int]
RGBA = tuple[float, float, float, float]

# viridis at 0, 1/8, ..., 1 (matplotlib's table); colours between are interpolated linearly
_VIRIDIS = np.array([(68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140), (40, 174, 128),
                     (94, 201, 98), (173, 220, 48), (253, 231, 37)], dtype=np.float64)
PRIOR_RGB: RGB = (255, 255, 255)
PUBLISHED_RGB: RGB = (255, 120, 0)
FALLBACK_RGB: RGB = (255, 30, 30)
TRUTH_RGB: RGB = (255, 60, 220)
TEXT_RGB: RGB = (255, 255, 255)
NEAR_M = 0.5                # points closer to the camera plane than this are not projected (behind it, or too near)
LINE_HEIGHT_PX = 12         # PIL's bitmap font is 11 px high
CHAR_WIDTH_PX = 6           # and 6 px wide
MAX_PX = 100_000            # pixel coordinates are clipped to +-this before drawing
INSET_AHEAD_M = 40.0        # the inset's fixed scale: this far ahead fills it (a 3 s horizon at 48 km/h)


def layer_rgb(layer: int, num_layers: int) -> RGB:
    """The colour of a checkpoint's trajectory: viridis at layer / num_layers (dark purple early, yellow last)."""
    position = min(max(layer / max(num_layers, 1), 0.0), 1.0) * (len(_VIRIDIS) - 1)
    low = min(int(position), len(_VIRIDIS) - 2)
    rgb = _VIRIDIS[low] + (position - low) * (_VIRIDIS[low + 1] - _VIRIDIS[low])
    red, green, blue = (int(v) for v in np.rint(rgb))
    return red, green, blue


def from_ego(points_m: np.ndarray) -> np.ndarray:
    """(T, 2) waypoints -> (T' + 1, 2) starting at the ego (0, 0), non-finite waypoints dropped (nothing to draw)."""
    points = np.asarray(points_m, dtype=np.float64).reshape(-1, 2)
    return np.concatenate([np.zeros((1, 2)), points[np.isfinite(points).all(axis=1)]])


# ---------------------------------------------------------------------------------------------------------------
# The bird's-eye inset


@dataclass(frozen=True, slots=True)
class Inset:
    """Where the bird's-eye view sits on the debug image and its fixed scale (metres -> pixels).

    The scale is fixed, not fitted to each frame, so lengths compare between frames: `ahead_m` ahead of the
    ego fill the inset's height above the ego (a faster plan runs off the top). The ego sits `behind_m`
    above the inset's bottom edge, on its centre column.
    """

    left_px: int
    top_px: int
    width_px: int
    height_px: int
    ahead_m: float = INSET_AHEAD_M
    behind_m: float = 4.0

    @property
    def px_per_m(self) -> float:
        return self.height_px / (self.ahead_m + self.behind_m)

    @property
    def ego_px(self) -> tuple[float, float]:
        """(column, row) of the ego (0, 0) on the debug image."""
        return self.left_px + self.width_px / 2, self.top_px + self.height_px - self.behind_m * self.px_per_m

    def pixels(self, points_m: np.ndarray) -> np.ndarray:
        """(N, 2) ego-frame points (x forward, y left), m -> (N, 2) (column, row) on the debug image."""
        col0, row0 = self.ego_px
        scale = self.px_per_m
        points_m = np.asarray(points_m, dtype=np.float64)
        return np.stack([col0 - points_m[:, 1] * scale, row0 - points_m[:, 0] * scale], axis=1)

    @classmethod
    def top_right(cls, image_width: int, image_height: int, ahead_m: float = INSET_AHEAD_M) -> Inset:
        """An inset in the top-right corner, 60% of the image's height (the sky, in a forward camera)."""
        height = max(int(image_height * 0.6), 40)
        width = max(int(height * 0.55), 24)
        return cls(image_width - width - 4, 4, width, height, ahead_m)


# ---------------------------------------------------------------------------------------------------------------
# The camera model


@dataclass(frozen=True, slots=True)
class CameraMounting:
    """Where the camera sits on the vehicle, in the ego frame (x forward, y left, z up; the ego origin on the ground).

    height_m: optical centre above the ground plane; pitch_rad: downward tilt of the optical axis (0 looks
    level, positive looks down); forward_m: optical centre ahead of the ego origin. Roll and yaw are
    taken as 0 and the camera sits on the ego's centre line (a forward camera).
    """

    height_m: float
    pitch_rad: float
    forward_m: float = 0.0

    def problem(self) -> str | None:
        """Why this mounting cannot place points on the image, or None."""
        values = {"height_m": self.height_m, "pitch_rad": self.pitch_rad, "forward_m": self.forward_m}
        bad = {k: v for k, v in values.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
        if bad:
            return f"camera mounting {', '.join(f'{k}={v}' for k, v in bad.items())} must be finite numbers"
        if self.height_m <= 0:
            return f"camera mounting height_m={self.height_m} must be > 0 m (the camera sits above the ground)"
        if not abs(self.pitch_rad) < math.pi / 2:
            return f"camera mounting pitch_rad={self.pitch_rad} must be within (-pi/2, pi/2): a forward camera"
        return None


@dataclass(frozen=True, slots=True)
class CameraModel:
    """A pinhole camera (a CameraInfo's K for an image of width x height) and its mounting; no lens distortion."""

    fx: float
    fy: float
    cx: float
    cy: float
    skew: float
    width: int
    height: int
    mounting: CameraMounting

    @classmethod
    def from_intrinsics(cls, k: Sequence[float] | np.ndarray, width: int, height: int, mounting: CameraMounting,
                        *, image_hw: tuple[int, int] | None = None) -> CameraModel | str:
        """Build a model from a CameraInfo's K (row-major 3x3), width and height, or say why it is inconsistent.

        Args:
            k: the 9 entries of K, as sensor_msgs/CameraInfo.k holds them.
            width, height: the image size K belongs to (CameraInfo.width, .height), pixels.
            mounting: the camera's place on the vehicle.
            image_hw: (H, W) of the images this model will draw on, when known: the camera's size must have the
                same aspect ratio (a camera image decoded at a reduced scale keeps it; K is scaled to it).
        Returns:
            The model, or a one-line reason naming the value (zero, negative or non-finite focal length or
            principal point, an all-zero K of an uncalibrated camera, a bad size or mounting).
        """
        try:
            matrix = np.asarray(k, dtype=np.float64).reshape(3, 3)
        except (TypeError, ValueError):
            return f"camera K must hold 9 numbers (row-major 3x3), got {np.size(k)} entries"
        if not np.isfinite(matrix).all():
            return f"camera K has a non-finite entry: {matrix.ravel().tolist()}"
        if not matrix.any():
            return "camera K is all zero: the camera is not calibrated (CameraInfo without intrinsics)"
        if not np.allclose(matrix[2], (0.0, 0.0, 1.0)):
            return f"camera K's last row must be [0, 0, 1], got {matrix[2].tolist()}"
        fx, skew, cx, fy, cy = matrix[0, 0], matrix[0, 1], matrix[0, 2], matrix[1, 1], matrix[1, 2]
        if not (fx > 0 and fy > 0):
            return f"camera focal length fx={fx:g}, fy={fy:g} px must be > 0"
        if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer)) and width > 0
                and height > 0):
            return f"camera size {width}x{height} must be positive whole pixels"
        if not (0 <= cx <= width and 0 <= cy <= height):
            return f"camera principal point ({cx:g}, {cy:g}) px lies outside its {width}x{height} image"
        problem = mounting.problem()
        if problem:
            return problem
        model = cls(float(fx), float(fy), float(cx), float(cy), float(skew), int(width), int(height), mounting)
        problem = model.problem_for(image_hw[1], image_hw[0]) if image_hw is not None else None
        return problem or model

    def problem_for(self, width: int, height: int) -> str | None:
        """Why this model cannot draw on an image of width x height (another aspect ratio), or None."""
        if width <= 0 or height <= 0 or abs((width / self.width) / (height / self.height) - 1.0) > 0.02:
            return (f"camera size {self.width}x{self.height} does not match the image's {width}x{height} "
                    f"(not the same aspect ratio): not projected")
        return None

    def project(self, points_m: np.ndarray, width: int, height: int) -> np.ndarray:
        """Project ego-frame ground points (N, 2) onto an image of width x height (K scaled to it).

        Returns:
            (M, 2) (column, row) of the points at least NEAR_M in front of the camera, in order; points behind
            the camera (or nearer than that) are dropped.
        """
        mount = self.mounting
        points_m = np.asarray(points_m, dtype=np.float64).reshape(-1, 2)
        ahead = points_m[:, 0] - mount.forward_m
        cos_p, sin_p = math.cos(mount.pitch_rad), math.sin(mount.pitch_rad)
        depth = ahead * cos_p + mount.height_m * sin_p              # along the optical axis
        down = -ahead * sin_p + mount.height_m * cos_p              # image rows grow downwards
        right = -points_m[:, 1]
        keep = depth >= NEAR_M
        sx, sy = width / self.width, height / self.height
        u = (self.cx + (self.fx * right[keep] + self.skew * down[keep]) / depth[keep]) * sx
        v = (self.cy + self.fy * down[keep] / depth[keep]) * sy
        return np.stack([u, v], axis=1)


# ---------------------------------------------------------------------------------------------------------------
# The debug image


@dataclass(frozen=True, slots=True)
class _Line:
    """One polyline to draw: ego-frame points from the ego, colour, width in pixels."""

    points_m: np.ndarray
    rgb: RGB
    width_px: int


def _lines(result: PlanResult, truth: np.ndarray | None) -> list[_Line]:
    """What the debug image draws, back to front: checkpoints, prior, ground truth, the published trajectory."""
    trace = result.trace
    lines = [_Line(from_ego(c.trajectory_m), layer_rgb(c.layer, trace.num_layers), 1) for c in trace.checkpoints]
    if result.prior.trajectory_m is not None:
        lines.append(_Line(from_ego(result.prior.trajectory_m), PRIOR_RGB, 2))
    if truth is not None:
        lines.append(_Line(from_ego(truth), TRUTH_RGB, 2))
    lines.append(_Line(from_ego(result.trajectory_m), PUBLISHED_RGB if result.is_valid else FALLBACK_RGB, 3))
    return lines


def _draw_polyline(draw: ImageDraw.ImageDraw, pixels: np.ndarray, rgb: RGB, width: int) -> None:
    if len(pixels) >= 2:                      # clipped: PIL takes integer coordinates (a plan 1e9 m away)
        draw.line([(c, r) for c, r in np.clip(pixels, -MAX_PX, MAX_PX).tolist()], fill=rgb, width=width)


def caption_lines(result: PlanResult, delta_m: float) -> list[str]:
    """The caption: exit and why, the deviation at each check, delta and latency, the prior, a failed validation."""
    trace = result.trace
    checks = " ".join(f"L{c.layer}:{c.deviation_m:.2f}{'!' if c.refused else ''}" for c in trace.checkpoints)
    delta = f"delta {delta_m:.2f} m" if math.isfinite(delta_m) else "no delta"      # nan: full depth
    lines = [f"exit {trace.exit_layer}/{trace.num_layers} {trace.reason.name.lower()}  {delta}  {trace.policy}",
             f"dev m: {checks or '(no check)'}",
             f"{result.total_ms:.1f} ms (stem {result.stem_ms:.1f} layers {trace.layers_ms:.1f} checks "
             + f"{trace.checks_ms:.1f})  prior {result.prior.source}"]
    if not result.is_valid:
        lines.append(f"FALLBACK {result.fallback}: {result.validation.code}")
    return lines


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    """PIL's bitmap font: 20x faster to draw than its FreeType default, and it needs no font file."""
    return ImageFont.load_default_imagefont()


def render_debug_image(frame_rgb: np.ndarray, result: PlanResult, delta_m: float, *,
                       truth: np.ndarray | None = None, camera: CameraModel | None = None,
                       target_width: int | None = None, inset_ahead_m: float = INSET_AHEAD_M) -> np.ndarray:
    """Draw one frame's plan on its camera image (see the module docstring for what is drawn).

    Args:
        frame_rgb: (H, W, 3) uint8 RGB, the camera frame the plan was made from (any size; not modified).
        result: the runner's PlanResult for that frame.
        delta_m: the exit threshold in force (the caption's delta).
        truth: (T, 2) ground truth in the ego frame, when known (evaluation).
        camera: projects the trajectories onto the image too; None: the inset only. A camera whose size does
            not match the frame's aspect ratio is not used and the caption says why.
        target_width: scale the frame to this width (aspect kept) before drawing; None keeps its size. The
            caption needs about 480 pixels.
        inset_ahead_m: metres ahead of the ego that the inset shows (its fixed scale).
    Returns:
        A new (H', W', 3) uint8 RGB array.
    """
    image = Image.fromarray(np.ascontiguousarray(frame_rgb[..., :3], dtype=np.uint8))
    if target_width and target_width != image.width:     # up: the pixels the model saw, as blocks (0.1 ms)
        upscale = target_width > image.width
        image = image.resize((int(target_width), max(1, round(image.height * target_width / image.width))),
                             Image.Resampling.NEAREST if upscale else Image.Resampling.BILINEAR,
                             reducing_gap=None if upscale else 2.0)
    width, height = image.size
    inset = Inset.top_right(width, height, inset_ahead_m)
    lines = _lines(result, truth)
    caption = caption_lines(result, delta_m)
    projection_problem = camera.problem_for(width, height) if camera is not None else None
    if projection_problem:
        caption.append(projection_problem)
    caption = [part for line in caption for part in textwrap.wrap(line, max((inset.left_px - 8) // CHAR_WIDTH_PX, 8))]

    box = (inset.left_px, inset.top_px, inset.left_px + inset.width_px, inset.top_px + inset.height_px)
    draw = ImageDraw.Draw(image, "RGBA")      # shade the inset's and the caption's backgrounds (top: the sky)
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(0, 0, 0, 170), outline=(160, 160, 160))
    if inset.left_px > 8:
        draw.rectangle((0, 0, inset.left_px - 5, LINE_HEIGHT_PX * len(caption) + 3), fill=(0, 0, 0, 128))

    inset_image = image.crop(box)             # drawn apart, so that its lines stay inside it
    inset_draw = ImageDraw.Draw(inset_image)
    local = Inset(0, 0, inset.width_px, inset.height_px, inset.ahead_m, inset.behind_m)
    for line in lines:
        _draw_polyline(inset_draw, local.pixels(line.points_m), line.rgb, line.width_px)
    col, row = local.ego_px
    inset_draw.rectangle((col - 2, row - 3, col + 2, row + 3), fill=TEXT_RGB)
    inset_draw.text((3, 2), f"{inset.ahead_m:g} m", fill=TEXT_RGB, font=_font())

    if camera is not None and not projection_problem:
        for line in lines:
            _draw_polyline(draw, camera.project(line.points_m, width, height), line.rgb, line.width_px + 1)
    for i, text in enumerate(caption):
        draw.text((4, 2 + i * LINE_HEIGHT_PX), text, fill=FALLBACK_RGB if text.startswith("FALLBACK") else TEXT_RGB,
                  font=_font())
    image.paste(inset_image, box[:2])
    return np.asarray(image)


def encode_jpeg(image_rgb: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image (a sensor_msgs/CompressedImage's data, format "jpeg")."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_rgb, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(image_rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB image (the report's worst frames: lossless, the lines stay sharp)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Markers


@dataclass(frozen=True, slots=True)
class LineStrip:
    """A visualization_msgs/Marker LINE_STRIP: points in the output (ego) frame, m; colour RGBA in [0, 1]."""

    ns: str
    id: int
    points_m: np.ndarray       # (N, 3): x forward, y left, z up (0: on the ground)
    rgba: RGBA
    width_m: float             # Marker.scale.x


@dataclass(frozen=True, slots=True)
class Text:
    """A visualization_msgs/Marker TEXT_VIEW_FACING at position_m (output frame, m)."""

    ns: str
    id: int
    position_m: tuple[float, float, float]
    text: str
    rgba: RGBA
    height_m: float            # Marker.scale.z


def _rgba(rgb: RGB, alpha: float = 1.0) -> RGBA:
    return rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, alpha


def _strip(ns: str, marker_id: int, points_m: np.ndarray, rgba: RGBA, width_m: float) -> LineStrip:
    xy = from_ego(points_m)
    return LineStrip(ns, marker_id, np.column_stack([xy, np.zeros(len(xy))]), rgba, width_m)


def trajectory_markers(result: PlanResult, *, truth: np.ndarray | None = None) -> list[LineStrip | Text]:
    """The plan as markers: what the node turns into a MarkerArray and deead_eval records.

    Namespaces: `checkpoints` (one strip per checkpoint, id = its layer, viridis by layer / num_layers),
    `prior`, `ground_truth` (when known), `trajectory` (the published one: orange, red when a fallback) and
    `exit` (text above the trajectory's end: exit layer / layers and reason). Every strip starts at the ego.
    The number of checkpoints changes from frame to frame: put a DELETEALL marker first (or give the
    markers a lifetime) so that an old frame's deeper checkpoints vanish.
    """
    trace = result.trace
    markers: list[LineStrip | Text] = [
        _strip("checkpoints", c.layer, c.trajectory_m, _rgba(layer_rgb(c.layer, trace.num_layers), 0.8), 0.1)
        for c in trace.checkpoints]
    if result.prior.trajectory_m is not None:
        markers.append(_strip("prior", 0, result.prior.trajectory_m, _rgba(PRIOR_RGB, 0.8), 0.15))
    if truth is not None:
        markers.append(_strip("ground_truth", 0, truth, _rgba(TRUTH_RGB, 0.8), 0.15))
    published = _strip("trajectory", 0, result.trajectory_m, _rgba(PUBLISHED_RGB if result.is_valid
                                                                    else FALLBACK_RGB), 0.3)
    markers.append(published)
    end_x, end_y, _ = published.points_m[-1].tolist()
    text = f"exit {trace.exit_layer}/{trace.num_layers} {trace.reason.name.lower()}"
    if not result.is_valid:
        text += f" FALLBACK {result.fallback}"
    markers.append(Text("exit", 0, (end_x, end_y, 1.5), text, _rgba(TEXT_RGB), 1.0))
    return markers
