"""The sensor contract: a camera of another geometry than the model's is reported once, and refused on request."""
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PilImage

from deead_ros.engines.manifest import CameraSpec, SensorContract
from deead_ros.errors import BadInputError, CameraMismatchError
from deead_ros.health import Level
from deead_ros.sensor_contract import CameraContract, aspect_text, image_hw, model_cameras

MODEL_HW = (96, 160)      # the shipped demo model's camera: 160x96, 5:3


def jpeg(width: int, height: int, fmt: str = "JPEG") -> SimpleNamespace:
    buffer = io.BytesIO()
    PilImage.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format=fmt)
    return SimpleNamespace(format=fmt.lower(), data=buffer.getvalue())


def test_sizes_are_read_from_the_headers_of_jpeg_png_and_raw_images():
    assert image_hw(jpeg(192, 108), raw=False) == (108, 192)
    assert image_hw(jpeg(64, 48, "PNG"), raw=False) == (48, 64)
    assert image_hw(SimpleNamespace(height=96, width=160), raw=True) == (96, 160)
    assert image_hw(SimpleNamespace(format="jpeg", data=b"not an image"), raw=False) is None
    assert aspect_text((108, 192)) == "192x108 (16:9)" and aspect_text(MODEL_HW) == "160x96 (5:3)"


def test_a_16_9_stream_into_the_5_3_model_is_reported_once_with_both_sizes_and_planned_when_warning():
    reports = []
    contract = CameraContract({"": MODEL_HW}, "warn", lambda text, stretched: reports.append((text, stretched)))
    for _ in range(3):
        contract.check_image("", jpeg(192, 108), raw=False)      # warn: never raises
    assert len(reports) == 1, "reported once, not per frame"
    text, is_stretched = reports[0]
    assert is_stretched and "192x108 (16:9)" in text and "160x96 (5:3)" in text and "stretched" in text
    status = contract.status()
    assert status.level == Level.WARN and "planned anyway" in status.message
    assert status.values["image.expected"] == "160x96 (5:3)" and status.values["image.actual"] == "192x108 (16:9)"


def test_refuse_drops_every_stretched_frame_as_camera_mismatch():
    contract = CameraContract({"": MODEL_HW}, "refuse")
    for _ in range(2):
        with pytest.raises(CameraMismatchError) as err:
            contract.check_image("", jpeg(192, 108), raw=False)
        assert err.value.drop_reason == "camera_mismatch" and isinstance(err.value, BadInputError)
        assert "camera_mismatch: refuse" in str(err.value)
    assert contract.status().level == Level.ERROR and "refused" in contract.status().message


def test_a_camera_of_the_same_aspect_is_scaled_not_refused_and_the_same_size_says_nothing():
    reports = []
    contract = CameraContract({"": MODEL_HW}, "refuse", lambda text, stretched: reports.append((text, stretched)))
    contract.check_image("", jpeg(320, 192), raw=False)            # 5:3 at twice the size
    assert reports == [("camera image 320x192 (5:3) is scaled to the model's 160x96 (5:3) (same aspect ratio)",
                        False)]
    quiet = CameraContract({"": MODEL_HW}, "refuse", lambda text, stretched: reports.append((text, stretched)))
    quiet.check_image("", jpeg(160, 96), raw=False)
    assert len(reports) == 1 and quiet.status().level == Level.OK and "matches" in quiet.status().message


def test_camera_info_of_another_geometry_is_reported_with_its_intrinsics():
    reports = []
    contract = CameraContract({"front": (96, 160)}, "warn", lambda text, stretched: reports.append(text))
    info = SimpleNamespace(width=1920, height=1080, k=[1000.0, 0, 960.0, 0, 1000.0, 540.0, 0, 0, 1])
    contract.check_camera_info("front", info)
    contract.check_camera_info("front", info)
    assert reports == ["camera 'front' camera_info 1920x1080 (16:9) has another aspect ratio than the model's "
                       "160x96 (5:3): its frames are stretched to it"]
    values = contract.status().values
    assert values["front.camera_info.intrinsics_fx_fy_cx_cy"] == "1000 1000 960 540"
    assert values["front.camera_info.expected_intrinsics"].startswith("unknown")
    report = json.loads(json.dumps(next(iter(contract.reports.values())).to_dict()))
    assert report["actual_intrinsics"] == [1000.0, 1000.0, 960.0, 540.0] and report["stretched"] is True


def test_the_expected_camera_is_the_manifests_or_the_encoders():
    six = SensorContract((CameraSpec("front", (90, 160)), CameraSpec("back", (90, 160))))
    assert model_cameras(six, MODEL_HW) == {"front": (90, 160), "back": (90, 160)}
    assert model_cameras(SensorContract(), MODEL_HW) == {"": MODEL_HW}
    assert model_cameras(SensorContract(), None) == {}
    with pytest.raises(ValueError, match="camera_mismatch"):
        CameraContract({}, "ignore")
