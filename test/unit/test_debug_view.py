"""The debug image and the markers: trajectories land on the pixels the scale and the camera say, colours by layer."""
import math

import numpy as np
import pytest

from deead_ros.debug_view import (FALLBACK_RGB, PUBLISHED_RGB, TRUTH_RGB, CameraModel, CameraMounting, Inset, LineStrip,
                                  Text, caption_lines, layer_rgb, render_debug_image, trajectory_markers)
from deead_ros.exit import Checkpoint, ExitReason, ExitTrace, Prior
from deead_ros.exit.validation import Validation
from deead_ros.runner import PlanResult
from test.expect import reported

W, H = 640, 360
LEVEL = CameraMounting(height_m=1.5, pitch_rad=0.0, forward_m=0.0)
K = [500.0, 0.0, 320.0, 0.0, 500.0, 180.0, 0.0, 0.0, 1.0]


def line(x_end: float, y: float = 0.0, steps: int = 6) -> np.ndarray:
    """(steps, 2) waypoints straight ahead at lateral offset y, the last one x_end ahead."""
    return np.column_stack([np.linspace(x_end / steps, x_end, steps), np.full(steps, y)])


def plan(published: np.ndarray, checkpoints: tuple[Checkpoint, ...] = (), prior: np.ndarray | None = None,
         fallback_m: np.ndarray | None = None) -> PlanResult:
    trace = ExitTrace(published, 16, 24, ExitReason.PRIOR_MATCHED, "prior matched", checkpoints, 3.0, 0.4, "deead")
    verdict = Validation(False, "speed 90 m/s > 60", "speed") if fallback_m is not None else Validation(True, "", "ok")
    return PlanResult(trace, Prior(prior, "route" if prior is not None else "none", ""), 1.1, 5.2, verdict,
                      "stop" if fallback_m is not None else "", fallback_m)


def black() -> np.ndarray:
    return np.zeros((H, W, 3), np.uint8)


def at(image: np.ndarray, col_row) -> tuple[int, ...]:
    col, row = col_row
    return tuple(int(v) for v in image[round(float(row)), round(float(col))])


def near(image: np.ndarray, col_row, radius: int = 1) -> set[tuple[int, ...]]:
    """The colours within `radius` pixels (a 1-pixel line may be rasterised a pixel off)."""
    col, row = (round(float(v)) for v in col_row)
    patch = image[row - radius:row + radius + 1, col - radius:col + radius + 1].reshape(-1, 3)
    return {tuple(int(v) for v in rgb) for rgb in patch}


def test_a_straight_trajectory_lands_on_the_inset_pixels_the_scale_gives():
    image = render_debug_image(black(), plan(line(10.0)), 2.0)
    inset = Inset.top_right(W, H)
    col0, row0 = inset.ego_px
    assert inset.px_per_m == pytest.approx(inset.height_px / 44.0)
    ten_m = (col0, row0 - 10.0 * inset.px_per_m)
    assert at(image, ten_m) == PUBLISHED_RGB, "10 m straight ahead: the ego's column, 10 m x scale above the ego"
    assert at(image, (col0, row0 - 5.0 * inset.px_per_m)) == PUBLISHED_RGB
    assert at(image, (col0, row0 - 13.0 * inset.px_per_m)) != PUBLISHED_RGB, "the plan ends at 10 m"
    assert at(image, (col0 - 3.0 * inset.px_per_m, row0 - 10.0 * inset.px_per_m)) != PUBLISHED_RGB


def test_y_is_left_in_the_inset():
    turn = np.array([[5.0, 0.0], [10.0, 0.0], [10.0, 3.0]])        # ahead, then 3 m to the left
    image = render_debug_image(black(), plan(turn), 2.0)
    inset = Inset.top_right(W, H)
    col0, row0 = inset.ego_px
    assert inset.pixels(np.array([[10.0, 3.0]]))[0] == pytest.approx([col0 - 3 * inset.px_per_m,
                                                                      row0 - 10 * inset.px_per_m])
    assert at(image, (col0 - 1.5 * inset.px_per_m, row0 - 10.0 * inset.px_per_m)) == PUBLISHED_RGB
    assert at(image, (col0 + 1.5 * inset.px_per_m, row0 - 10.0 * inset.px_per_m)) != PUBLISHED_RGB


def test_checkpoints_are_coloured_by_layer_and_the_truth_is_drawn():
    checkpoints = (Checkpoint(6, line(20.0, 6.0), 8.0, 8, 0.1), Checkpoint(24, line(20.0, -6.0), 1.0, 0, 0.1))
    image = render_debug_image(black(), plan(line(20.0), checkpoints), 2.0, truth=line(20.0, 3.0))
    inset = Inset.top_right(W, H)
    for y, rgb in ((6.0, layer_rgb(6, 24)), (-6.0, layer_rgb(24, 24)), (3.0, TRUTH_RGB), (0.0, PUBLISHED_RGB)):
        assert rgb in near(image, inset.pixels(np.array([[15.0, y]]))[0]), f"line at y={y} m"
    assert layer_rgb(24, 24) == (253, 231, 37) and layer_rgb(0, 24) == (68, 1, 84), "viridis from 0 to 1"


def test_a_camera_model_projects_a_ground_point_to_the_expected_pixel():
    camera = CameraModel.from_intrinsics(K, W, H, LEVEL)
    assert isinstance(camera, CameraModel), camera
    # level camera 1.5 m up: a point 10 m ahead is 1.5 m below the axis, 2 m left is 2 m left of it
    np.testing.assert_allclose(camera.project(np.array([[10.0, 0.0], [10.0, 2.0]]), W, H),
                               [[320.0, 180.0 + 500 * 1.5 / 10], [320.0 - 500 * 2 / 10, 180.0 + 500 * 1.5 / 10]])
    np.testing.assert_allclose(camera.project(np.array([[-5.0, 0.0], [0.3, 0.0], [10.0, 0.0]]), W, H),
                               [[320.0, 255.0]], err_msg="points behind (or right at) the camera are dropped")
    np.testing.assert_allclose(camera.project(np.array([[10.0, 0.0]]), W // 2, H // 2), [[160.0, 127.5]],
                               err_msg="K scales with the image")
    pitched = CameraModel.from_intrinsics(K, W, H, CameraMounting(1.5, math.radians(10), forward_m=2.0))
    assert isinstance(pitched, CameraModel), pitched
    axis_hits_ground_m = 2.0 + 1.5 / math.tan(math.radians(10))
    np.testing.assert_allclose(pitched.project(np.array([[axis_hits_ground_m, 0.0]]), W, H), [[320.0, 180.0]])


def test_the_debug_image_draws_the_projection_where_the_camera_says():
    camera = CameraModel.from_intrinsics(K, W, H, LEVEL)
    assert isinstance(camera, CameraModel), camera
    image = render_debug_image(black(), plan(line(30.0)), 2.0, camera=camera)
    assert at(image, (320, 180 + 500 * 1.5 / 20)) == PUBLISHED_RGB, "20 m ahead on the image"
    assert at(image, (420, 180 + 500 * 1.5 / 20)) == (0, 0, 0)
    upscaled = render_debug_image(np.zeros((H // 2, W // 2, 3), np.uint8), plan(line(30.0)), 2.0, camera=camera,
                                  target_width=W)
    assert upscaled.shape == (H, W, 3) and at(upscaled, (320, 180 + 500 * 1.5 / 20)) == PUBLISHED_RGB


@pytest.mark.parametrize("k, width, height, mounting, image_hw, expected", [
    ([0.0, 0, 320, 0, 500, 180, 0, 0, 1], W, H, LEVEL, None, "focal length"),
    ([500.0, 0, 320, 0, -500, 180, 0, 0, 1], W, H, LEVEL, None, "focal length"),
    ([math.nan, 0, 320, 0, 500, 180, 0, 0, 1], W, H, LEVEL, None, "non-finite"),
    ([0.0] * 9, W, H, LEVEL, None, "not calibrated"),
    ([500.0, 0, 320, 0, 500, 180, 0, 0], W, H, LEVEL, None, "9 numbers"),
    ([500.0, 0, 320, 0, 500, 180, 0, 1, 1], W, H, LEVEL, None, "last row"),
    (K, 0, H, LEVEL, None, "size"),
    (K, 200, H, LEVEL, None, "principal point"),
    (K, W, H, CameraMounting(0.0, 0.0), None, "height_m"),
    (K, W, H, CameraMounting(1.5, math.pi / 2), None, "pitch_rad"),
    (K, W, H, CameraMounting(1.5, 0.0, math.inf), None, "finite"),
    (K, W, H, LEVEL, (480, 480), "does not match"),
])
def test_an_inconsistent_camera_is_refused_with_a_reason(k, width, height, mounting, image_hw, expected):
    reason = CameraModel.from_intrinsics(k, width, height, mounting, image_hw=image_hw)
    assert isinstance(reason, str) and expected in reason, reason


def test_the_inset_draws_without_a_camera_and_when_the_camera_does_not_fit_the_image():
    result = plan(line(10.0))
    wrong_aspect = CameraModel.from_intrinsics(K, W, W, LEVEL)       # a square camera for a 16:9 frame
    assert isinstance(wrong_aspect, CameraModel)
    plain = render_debug_image(black(), result, 2.0)
    refused = render_debug_image(black(), result, 2.0, camera=wrong_aspect)
    inset = Inset.top_right(W, H)
    box = (slice(inset.top_px, inset.top_px + inset.height_px), slice(inset.left_px, inset.left_px + inset.width_px))
    assert np.array_equal(plain[box], refused[box]), "the inset is drawn as without a camera"
    below_caption = refused[H // 2:, :inset.left_px]
    assert not (below_caption == PUBLISHED_RGB).all(axis=2).any(), "nothing projected with a refused camera"
    assert "does not match" in reported(wrong_aspect.problem_for(W, H))


def test_implausible_trajectories_draw_without_error():
    wild = np.array([[1e12, -1e12], [np.nan, 1.0], [np.inf, 0.0], [3.0, 0.0]])
    checkpoints = (Checkpoint(10, wild, math.nan, 1, 0.1),)
    camera = CameraModel.from_intrinsics(K, W, H, LEVEL)
    assert isinstance(camera, CameraModel), camera
    image = render_debug_image(black(), plan(wild, checkpoints, fallback_m=line(5.0)), 2.0, camera=camera)
    inset = Inset.top_right(W, H)
    col0, row0 = inset.ego_px
    assert at(image, (col0, row0 - 2.5 * inset.px_per_m)) == FALLBACK_RGB, "the fallback is what is published: red"


def test_the_caption_says_where_why_how_far_and_how_long():
    checkpoints = (Checkpoint(10, line(10.0), 5.0, 4, 0.1), Checkpoint(14, line(10.0), 2.5, 2, 0.1, "speed"),
                   Checkpoint(16, line(10.0), 1.2, 0, 0.1))
    text = "\n".join(caption_lines(plan(line(10.0), checkpoints, prior=line(11.0)), 2.0))
    for part in ("exit 16/24", "prior_matched", "delta 2.00 m", "L10:5.00", "L14:2.50!", "L16:1.20", "5.2 ms",
                 "prior route"):
        assert part in text, f"{part!r} not in {text!r}"
    fallback = caption_lines(plan(line(10.0), fallback_m=line(5.0)), 2.0)
    assert fallback[-1] == "FALLBACK stop: speed"


def test_markers_one_strip_per_checkpoint_coloured_by_layer_and_the_exit_as_text():
    checkpoints = (Checkpoint(10, line(10.0, 1.0), 5.0, 6, 0.1), Checkpoint(16, line(10.0), 1.2, 0, 0.1))
    markers = trajectory_markers(plan(line(10.0), checkpoints, prior=line(11.0)), truth=line(9.0))
    strips = [m for m in markers if isinstance(m, LineStrip)]
    texts = [m for m in markers if isinstance(m, Text)]
    assert [(m.ns, m.id) for m in strips] == [("checkpoints", 10), ("checkpoints", 16), ("prior", 0),
                                              ("ground_truth", 0), ("trajectory", 0)]
    for strip, layer in zip(strips, (10, 16)):
        assert strip.rgba[:3] == pytest.approx([c / 255 for c in layer_rgb(layer, 24)])
    published = strips[-1]
    assert published.rgba == pytest.approx([c / 255 for c in PUBLISHED_RGB] + [1.0])
    assert published.points_m.shape == (7, 3) and np.array_equal(published.points_m[0], [0, 0, 0]), "from the ego"
    assert np.array_equal(published.points_m[1:, :2], line(10.0)) and not published.points_m[:, 2].any()
    assert len(texts) == 1 and texts[0].text == "exit 16/24 prior_matched"
    assert texts[0].position_m[:2] == pytest.approx((10.0, 0.0)), "above the plan's end"

    fallback = trajectory_markers(plan(line(10.0), fallback_m=line(5.0)))
    assert [m.ns for m in fallback] == ["trajectory", "exit"], "no prior, no truth, no checkpoint: none drawn"
    fallback_strip, exit_text = fallback
    assert isinstance(fallback_strip, LineStrip) and isinstance(exit_text, Text), fallback
    assert fallback_strip.rgba[:3] == pytest.approx([c / 255 for c in FALLBACK_RGB])
    assert "FALLBACK stop" in exit_text.text
    assert fallback_strip.points_m[-1, 0] == pytest.approx(5.0), "the published (fallback) trajectory"
