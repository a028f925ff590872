"""Decoding the camera straight to the model's input: libjpeg-turbo (simplejpeg) gives the pixels Pillow gave.

Why: the node moved from Pillow's `draft` to simplejpeg for speed (docs/results.md); the plans must not
move with it. Pillow's path is the reference here: the same DCT scale (largest of 1/8, 1/4, 1/2, 1 that
keeps the image at least the model's size), then the encoder's resize.
"""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PilImage
from sensor_msgs.msg import CompressedImage

from deead_ros import frame_assembly as fa
from deead_ros.model.encoding import FrameInputs, fit_image
from deead_ros.paths import demo_manifest_path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_HW = (96, 160)


def pillow_decode(data: bytes, target_hw=MODEL_HW) -> np.ndarray:
    """What decode_compressed did with Pillow: draft to the model's scale, convert to RGB, fit."""
    with PilImage.open(io.BytesIO(data)) as img:
        if img.format == "JPEG" and (img.height > target_hw[0] or img.width > target_hw[1]):
            img.draft("RGB", (target_hw[1], target_hw[0]))
        return fit_image(np.asarray(img.convert("RGB")), target_hw)


def jpeg(pixels: np.ndarray, mode: str = "RGB", **options) -> bytes:
    buffer = io.BytesIO()
    PilImage.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def smooth_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    coarse = np.random.default_rng(seed).integers(0, 256, (max(height // 8, 1), max(width // 8, 1), 3), np.uint8)
    return np.asarray(PilImage.fromarray(coarse).resize((width, height), PilImage.Resampling.BICUBIC))


@pytest.mark.parametrize("width, height", [(160, 96), (161, 97), (320, 192), (640, 360), (641, 359), (1280, 720),
                                           (1920, 1080), (1300, 200), (200, 1300), (8, 8)])
@pytest.mark.parametrize("mode, options", [("RGB", {}), ("RGB", {"subsampling": 0}), ("RGB", {"subsampling": 1}),
                                           ("RGB", {"progressive": True}), ("L", {}), ("CMYK", {}),
                                           ("CMYK", {"subsampling": 2})])
def test_jpeg_pixels_are_pillows_at_every_scale(width, height, mode, options):
    data = jpeg(smooth_image(width, height), mode, **options)
    for target_hw in (MODEL_HW, None):
        msg = CompressedImage(format="jpeg", data=data)
        decoded = fa.decode_compressed(msg, target_hw=target_hw)
        expected = pillow_decode(data, target_hw or (height, width))
        assert decoded.dtype == np.uint8 and decoded.shape == expected.shape
        np.testing.assert_array_equal(decoded, expected)


def test_a_cmyk_jpeg_goes_through_pillow_and_yuv_through_libjpeg_turbo():
    data = memoryview(jpeg(smooth_image(64, 48)))
    assert fa._decode_jpeg(data, 10**6, MODEL_HW) is not None
    assert fa._decode_jpeg(memoryview(jpeg(smooth_image(64, 48), "CMYK")), 10**6, MODEL_HW) is None
    assert fa._decode_jpeg(memoryview(b"\x89PNG\r\n\x1a\n"), 10**6, MODEL_HW) is None


def demo_camera_messages(count: int | None = None) -> list:
    from deead_ros import bags as topics
    from deead_ros.bags import iterate_bag
    bag = REPO_ROOT / "deead_ros" / "bags" / "demo"
    frames = [msg for topic, msg in iterate_bag(bag) if topic == topics.CAMERA_COMPRESSED]
    return frames[:count]


def test_every_demo_bag_frame_decodes_to_the_pixels_pillow_gave():
    messages = demo_camera_messages()
    assert len(messages) > 800
    for msg in messages:           # rosbags' messages hold numpy arrays: read in place
        np.testing.assert_array_equal(fa.decode_compressed(msg, target_hw=MODEL_HW),
                                      pillow_decode(msg.data.tobytes()))


def test_plans_of_decoded_demo_frames_are_todays_at_every_camera_size():
    """The demo bag's frames at its size and re-encoded at 640x360 and 1920x1080: plans within 1e-4 m of the
    plans of Pillow's pixels (they are the same pixels, so the same plans)."""
    from deead_ros.engines import make_engine
    from deead_ros.exit import ExitSettings, PriorSettings
    from deead_ros.runner import Runner
    runner = Runner(make_engine("onnxruntime", demo_manifest_path(), num_threads=1), ExitSettings(), PriorSettings())
    route = np.stack([np.arange(1.0, 80.0, 2.0), np.zeros(40)], axis=1)
    worst = 0.0
    for i, msg in enumerate(demo_camera_messages(12)):
        rgb = np.asarray(PilImage.open(io.BytesIO(msg.data.tobytes())).convert("RGB"))
        for size in (None, (640, 360), (1920, 1080)):
            data = msg.data.tobytes() if size is None else jpeg(np.asarray(PilImage.fromarray(rgb).resize(
                size, PilImage.Resampling.BICUBIC)))
            images = (fa.decode_compressed(CompressedImage(format="jpeg", data=data), target_hw=MODEL_HW),
                      pillow_decode(data))
            plans = [runner.plan(FrameInputs(image, route, 8.0, 0.02 * (i % 3 - 1))).trajectory_m for image in images]
            worst = max(worst, float(np.abs(plans[0] - plans[1]).max()))
    assert worst <= 1e-4, f"plans moved by {worst:.2e} m"
