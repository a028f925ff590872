"""The sensor contract: the camera a model was trained with against the camera that feeds it.

The expected camera is the model's (its manifest's `sensors.cameras` sizes, or for a single-camera
model its encoder's input size). A camera of the same size, or of the same aspect ratio at another
size, is what the decoder expects (scaled). A camera of another aspect ratio is stretched to the model's
size: the node reports it once, in its log and in /diagnostics, with the expected and actual values,
and `camera_mismatch` chooses warn (plan it anyway, stretched) or refuse (drop its frames). A
CameraInfo, when one arrives, is checked the same way (its size) and its intrinsics are reported beside
the expected ones (a manifest that states none: "unknown"). `deead_eval` uses the same check. No ROS
types: any object with the ROS message attributes.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping

import simplejpeg
from PIL import Image as PilImage

from deead_ros.engines.manifest import SensorContract
from deead_ros.errors import CameraMismatchError
from deead_ros.health import Level, Status

ASPECT_TOLERANCE = 0.01          # relative: 1280x720 and 1920x1080 differ by rounding only
MODES = ("warn", "refuse")       # the camera_mismatch parameter's choices


def image_hw(msg: Any, raw: bool) -> tuple[int, int] | None:
    """The (H, W) a camera message states in its header, without decoding pixels; None when unreadable
    (the decoder then says why the frame cannot be used)."""
    if raw:
        return int(msg.height), int(msg.width)
    try:
        data = memoryview(msg.data)
    except TypeError:                        # a list of ints
        data = memoryview(bytes(msg.data))
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        return int(height), int(width)
    except ValueError:                       # not a JPEG simplejpeg reads: PNG, CMYK JPEG, corrupt bytes
        pass
    try:
        with PilImage.open(io.BytesIO(data)) as img:
            return int(img.height), int(img.width)
    except Exception:                        # corrupt bytes: the decoder's BadInputError says why
        return None


def model_cameras(sensors: SensorContract, image_hw: tuple[int, int] | None,
                  single: str = "") -> dict[str, tuple[int, int]]:
    """{camera: the (H, W) the model was trained with}: the manifest's cameras, or for one camera (named single)
    the manifest's size or else the encoder's (image_hw); {} when the model states none."""
    if len(sensors.cameras) > 1:
        return {camera.name: camera.image_hw for camera in sensors.cameras}
    hw = sensors.cameras[0].image_hw if sensors.cameras else image_hw
    return {single: hw} if hw is not None else {}


def aspect_text(hw: tuple[int, int]) -> str:
    """'160x96 (5:3)': width x height and the reduced aspect ratio."""
    ratio = Fraction(hw[1], hw[0]).limit_denominator(32)
    return f"{hw[1]}x{hw[0]} ({ratio.numerator}:{ratio.denominator})"


def stretched(expected_hw: tuple[int, int], actual_hw: tuple[int, int]) -> bool:
    """True when actual's aspect ratio differs from expected's beyond ASPECT_TOLERANCE."""
    return abs((actual_hw[1] / actual_hw[0]) / (expected_hw[1] / expected_hw[0]) - 1.0) > ASPECT_TOLERANCE


@dataclass(frozen=True, slots=True)
class CameraReport:
    """One camera as seen against the model's: sizes (H, W), and the CameraInfo's intrinsics when one came."""

    camera: str                                   # "" : the single camera on ~/input/image
    expected_hw: tuple[int, int]
    actual_hw: tuple[int, int]
    source: str                                   # image | camera_info
    intrinsics: tuple[float, float, float, float] | None = None    # fx, fy, cx, cy (px) from CameraInfo

    @property
    def stretched(self) -> bool:
        return stretched(self.expected_hw, self.actual_hw)

    def describe(self) -> str:
        """A sentence for the log and diagnostics: what differs and what the model does with it."""
        where = f"camera '{self.camera}'" if self.camera else "camera"
        what = f"{where} {self.source} {aspect_text(self.actual_hw)}"
        model = f"the model's {aspect_text(self.expected_hw)}"
        if self.stretched:
            return f"{what} has another aspect ratio than {model}: its frames are stretched to it"
        if self.actual_hw != self.expected_hw:
            return f"{what} is scaled to {model} (same aspect ratio)"
        return f"{what} matches {model}"

    def to_dict(self) -> dict[str, Any]:
        """Expected and actual values (diagnostics, deead_eval's summary.json)."""
        fx_fy_cx_cy = list(self.intrinsics) if self.intrinsics else None
        return {"camera": self.camera, "source": self.source, "expected_width": self.expected_hw[1],
                "expected_height": self.expected_hw[0], "actual_width": self.actual_hw[1],
                "actual_height": self.actual_hw[0], "stretched": self.stretched,
                "expected_intrinsics": None, "actual_intrinsics": fx_fy_cx_cy, "message": self.describe()}


class CameraContract:
    """Checks each camera against the model's, reports each difference once, refuses stretched frames on request.

    expected: {camera name: (H, W)} ("" for the single camera); on_report(text, stretched) is called
    once per camera and source (image, camera_info) that differs from the model's.
    """

    def __init__(self, expected: Mapping[str, tuple[int, int]], mode: str = "warn",
                 on_report: Callable[[str, bool], None] = lambda text, stretched: None) -> None:
        if mode not in MODES:
            raise ValueError(f"camera_mismatch '{mode}' unknown; one of {MODES}")
        self.expected = dict(expected)
        self.mode = mode
        self._on_report = on_report
        self.reports: dict[tuple[str, str], CameraReport] = {}     # (camera, source) -> the first seen

    def _note(self, report: CameraReport) -> CameraReport:
        key = (report.camera, report.source)
        if key not in self.reports:
            self.reports[key] = report
            if report.actual_hw != report.expected_hw:
                self._on_report(report.describe(), report.stretched)
        return self.reports[key]

    def check_image(self, camera: str, msg: Any, raw: bool) -> None:
        """Note a camera image's size; raises CameraMismatchError for a stretched one when refusing."""
        expected, actual = self.expected.get(camera), image_hw(msg, raw)
        if expected is None or actual is None or min(actual) < 1:
            return
        report = self._note(CameraReport(camera, expected, actual, "image"))
        if actual != report.actual_hw:    # the camera changed size: a new first report of this camera
            del self.reports[(camera, "image")]
            report = self._note(CameraReport(camera, expected, actual, "image"))
        if self.mode == "refuse" and report.stretched:
            raise CameraMismatchError(f"{report.describe()} (camera_mismatch: refuse)")

    def check_camera_info(self, camera: str, msg: Any) -> None:
        """Note a CameraInfo's size and intrinsics (fx, fy, cx, cy from K); a CameraInfo without a size: ignored."""
        expected = self.expected.get(camera)
        if expected is None or msg.width < 1 or msg.height < 1 or (camera, "camera_info") in self.reports:
            return
        k = [float(v) for v in msg.k]
        intrinsics = (k[0], k[4], k[2], k[5]) if len(k) == 9 and all(map(math.isfinite, k)) and k[0] > 0 else None
        self._note(CameraReport(camera, expected, (int(msg.height), int(msg.width)), "camera_info", intrinsics))

    def status(self) -> Status:
        """/diagnostics: WARN (warn) or ERROR (refuse) while a camera is stretched; OK otherwise, with the values."""
        values: dict[str, str] = {"camera_mismatch": self.mode}
        for (camera, source), report in sorted(self.reports.items()):
            prefix = f"{camera + '.' if camera else ''}{source}"
            values[f"{prefix}.expected"] = aspect_text(report.expected_hw)
            values[f"{prefix}.actual"] = aspect_text(report.actual_hw)
            if report.intrinsics is not None:
                values[f"{prefix}.intrinsics_fx_fy_cx_cy"] = " ".join(f"{v:g}" for v in report.intrinsics)
                values[f"{prefix}.expected_intrinsics"] = "unknown (the manifest states none)"
        bad = [r for r in self.reports.values() if r.stretched]
        if bad:
            action = "frames refused" if self.mode == "refuse" else "planned anyway, stretched"
            return Status("camera_contract", Level.ERROR if self.mode == "refuse" else Level.WARN,
                          f"{bad[0].describe()}; {action} (camera_mismatch: {self.mode})", values)
        if not self.reports:
            return Status("camera_contract", Level.OK, "no camera frame seen yet", values)
        return Status("camera_contract", Level.OK, "; ".join(r.describe() for r in self.reports.values()), values)
