"""The model-owned input contract: the driving_frame encoder (image, route, ego state, command words) and the
encoder registry a manifest names."""
from dataclasses import replace

import numpy as np
import pytest

from deead_ros.engines.manifest import TensorSpec
from deead_ros.errors import ModelFileError
from deead_ros.exit.prior import PriorSettings
from deead_ros.model.encoding import (ACCEL_FEATURE, DrivingFrameEncoder, FrameInputs, InputSpec, SpeedHistory,
                                      accelerations, check_encoder_matches, encode_batch, load_encoder, resize_rgb,
                                      resize_uint8, route_tokens, tokenize)

SPEC = InputSpec()
PRIOR = PriorSettings()


def encode(f: FrameInputs, spec: InputSpec) -> dict[str, np.ndarray]:
    """What the Runner does per frame: locate the route with the prior's settings, then encode."""
    route = PRIOR.route_ahead(f.route_ego_m)
    return DrivingFrameEncoder(spec).encode(f, None if isinstance(route, str) else route)


def tokens(route, speed_mps=0.0, prior=PRIOR):
    ahead = prior.route_ahead(route)
    return route_tokens(None if isinstance(ahead, str) else ahead, SPEC, speed_mps)
DATASET_COMMANDS = ("follow the lane", "turn left at the junction", "turn right at the junction",
                    "go straight at the junction", "change lane to the left", "change lane to the right")


def frame(h=96, w=160, route=None, command="follow the lane"):
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return FrameInputs(image, route, speed_mps=5.0, yaw_rate_rps=0.1, command=command, accel_mps2=-0.5)


def test_tokenizer_is_word_level_with_pad_and_unk():
    ids = tokenize("Turn LEFT at the junction!", SPEC)
    words = [SPEC.vocabulary[i] for i in ids if i]
    assert words == ["turn", "left", "at", "the", "junction"]
    assert ids.dtype == np.int32 and ids.shape == (SPEC.max_command_tokens,) and list(ids[5:]) == [0, 0, 0]
    assert tokenize("teleport home", SPEC)[:2].tolist() == [1, 1]
    assert (tokenize("", SPEC) == 0).all()
    assert len(tokenize("go " * 20, SPEC)) == SPEC.max_command_tokens


def test_every_data_set_command_word_is_in_the_vocabulary():
    for command in DATASET_COMMANDS:
        assert 1 not in tokenize(command, SPEC), command
    assert len({tuple(tokenize(c, SPEC)) for c in DATASET_COMMANDS}) == len(DATASET_COMMANDS)


def test_resize_keeps_a_constant_image_and_averages_on_downscale():
    flat = np.full((192, 320, 3), 77, np.uint8)
    assert np.allclose(resize_rgb(flat, (96, 160)), 77.0)
    stripes = np.zeros((96, 160, 3), np.uint8)
    stripes[:, ::2] = 200                      # 1-pixel stripes average to 100 at half width
    assert np.allclose(resize_rgb(stripes, (96, 80)), 100.0)
    up = resize_rgb(np.arange(4, dtype=np.uint8).reshape(2, 2, 1).repeat(3, axis=2), (4, 4))
    assert up.shape == (4, 4, 3) and up.min() >= 0 and up.max() <= 3


@pytest.mark.parametrize("in_hw", [(135, 240), (180, 160), (96, 300), (97, 161), (50, 60), (120, 160)])
def test_the_bilinear_step_is_the_textbook_formula_to_the_bit(in_hw):
    """Below twice the size (no box step): resize_rgb's gathers (cached taps, whole rows, then channels side by
    side) change no bit of the rule."""
    image = np.random.default_rng(0).integers(0, 256, (*in_hw, 3), dtype=np.uint8)
    h, w = 96, 160

    def taps(size_in, size_out):
        centres = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0, size_in - 1)
        lo = np.floor(centres).astype(np.int64)
        return lo, np.minimum(lo + 1, size_in - 1), (centres - lo).astype(np.float32)
    img = image.astype(np.float32)
    y0, y1, wy = taps(in_hw[0], h)
    x0, x1, wx = taps(in_hw[1], w)
    rows = img[y0] * (1.0 - wy)[:, None, None] + img[y1] * wy[:, None, None]
    expected = rows[:, x0] * (1.0 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    resized = resize_rgb(image, (h, w))
    assert resized.dtype == np.float32
    np.testing.assert_array_equal(resized, expected)
    np.testing.assert_array_equal(resize_uint8(image, (h, w)), np.clip(np.rint(expected), 0, 255).astype(np.uint8))


def test_route_tokens_start_with_the_route_prior_then_follow_the_road():
    route = np.stack([np.linspace(-10, 80, 91), np.full(91, 1.5)], axis=1)     # straight, 1.5 m to the left
    points, valid = tokens(route, speed_mps=10.0)
    assert valid and points.shape == (SPEC.route_points, 2)
    metres = points * SPEC.route_scale_m
    np.testing.assert_allclose(metres[:6, 0], 5.0 * np.arange(1, 7), atol=1e-5)          # 10 m/s x 0.5 s steps
    np.testing.assert_allclose(metres[6:, 0], SPEC.route_spacing_m * np.arange(1, 7), atol=1e-5)
    np.testing.assert_allclose(metres[:, 1], 1.5, atol=1e-5)
    slow, _ = tokens(route, speed_mps=0.0)
    np.testing.assert_allclose(slow[:6, 0] * SPEC.route_scale_m, 0.5 * np.arange(1, 7), atol=1e-5)  # min speed


def test_timed_route_tokens_equal_the_route_prior():
    from deead_ros.exit.prior import route_prior
    theta = np.linspace(0, np.pi / 2, 200)
    route = np.stack([20 * np.sin(theta), 20 - 20 * np.cos(theta)], axis=1)
    for settings in (PRIOR, PriorSettings(min_speed_mps=9.0)):    # a live prior change moves both alike
        points, _ = tokens(route, 6.0, settings)
        prior = route_prior(route, 6.0, 0.5 * np.arange(1, 7), min_speed_mps=settings.min_speed_mps).trajectory_m
        assert prior is not None, "this curve must give a route prior"
        np.testing.assert_allclose(points[:6] * SPEC.route_scale_m, prior, atol=1e-4)


def test_a_route_rejected_for_the_prior_is_never_fed_to_the_model():
    far = np.stack([np.linspace(0, 80, 41), np.full(41, 1e6)], axis=1)     # 1000 km to the side
    points, valid = tokens(far, 8.0)
    assert not valid and not points.any()


@pytest.mark.parametrize("route", [None, np.zeros((0, 2)), np.zeros((5, 2)), np.full((4, 2), np.nan),
                                   np.zeros((3, 3))])
def test_unusable_routes_encode_as_zeros_and_invalid(route):
    points, valid = tokens(route)
    assert not valid and not points.any()


def test_encode_shapes_dtypes_and_normalisation():
    out = encode(frame(120, 200, route=np.array([[0.0, 0.0], [10.0, 0.0]])), SPEC)
    assert {k: (v.shape, v.dtype.name) for k, v in out.items()} == {
        "image": ((1, 3, 96, 160), "float32"), "route": ((1, 12, 2), "float32"), "ego": ((1, 4), "float32"),
        "command_ids": ((1, 8), "int32")}
    assert out["ego"].tolist() == [[pytest.approx(0.5), pytest.approx(0.2), 1.0, pytest.approx(-0.25)]]
    assert -2.0 - 1e-6 <= out["image"].min() and out["image"].max() <= 2.0 + 1e-6   # (x/255 - 0.5) / 0.25


def test_batch_equals_single_frames():
    frames = [frame(command="turn left at the junction"), frame(140, 220, route=np.array([[0, 0], [5, 1.0]]))]
    batch = encode_batch(frames, SPEC)
    for i, f in enumerate(frames):
        for name, value in encode(f, SPEC).items():
            np.testing.assert_array_equal(batch[name][i:i + 1], value)


def test_a_model_without_the_acceleration_input_sees_zero_whatever_the_ego_does():
    spec = InputSpec(acceleration_input=False)
    braking, cruising = frame(), replace(frame(), accel_mps2=0.0)
    assert encode(braking, SPEC)["ego"][0, ACCEL_FEATURE] == pytest.approx(-0.5 / SPEC.accel_scale_mps2)
    for name, value in encode(braking, spec).items():
        np.testing.assert_array_equal(value, encode(cruising, spec)[name], err_msg=name)
    assert InputSpec.from_dict(spec.to_dict()) == spec, "the option survives the manifest"


def test_bad_input_is_rejected_with_the_reason():
    with pytest.raises(ValueError, match="uint8"):
        encode(FrameInputs(np.zeros((96, 160, 3), np.float32), None, 1.0, 0.0), SPEC)
    with pytest.raises(ValueError, match="finite"):
        encode(FrameInputs(np.zeros((96, 160, 3), np.uint8), None, float("nan"), 0.0), SPEC)
    with pytest.raises(ValueError, match="acceleration must be finite"):
        encode(FrameInputs(np.zeros((96, 160, 3), np.uint8), None, 1.0, 0.0, accel_mps2=float("inf")), SPEC)


def test_acceleration_is_the_speed_change_over_the_window():
    history = SpeedHistory(window_s=0.5)
    assert history.acceleration_mps2() == 0.0
    history.add(10.0, 5.0)
    assert history.acceleration_mps2() == 0.0, "one sample shows no acceleration"
    history.add(10.2, 5.4)
    assert history.acceleration_mps2() == pytest.approx(2.0), "a shorter history gives what it has"
    for i in range(2, 31):                                   # 50 Hz odometry braking at 3 m/s^2
        history.add(10.0 + 0.02 * i, 5.0 - 3.0 * 0.02 * i)
    assert history.acceleration_mps2() == pytest.approx(-3.0)
    history.add(1.0, 2.0)
    assert history.acceleration_mps2() == 0.0, "a stamp that went back starts over"


def test_recorded_series_gives_what_a_live_history_gives():
    stamps = 0.1 * np.arange(40)
    speeds = np.where(stamps < 2.0, 1.5 * stamps, 3.0)        # speeds up for 2 s, then cruises
    accel = accelerations(stamps, speeds, window_s=0.5)
    assert accel[0] == 0.0 and accel[10:20] == pytest.approx(1.5) and accel[26:] == pytest.approx(0.0)


def test_spec_round_trips_through_json_form_and_rejects_unknown_keys():
    assert InputSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(ValueError, match="unknown input spec keys"):
        InputSpec.from_dict({**SPEC.to_dict(), "image_size": [1, 2]})


def test_the_encoder_declares_exactly_what_it_writes():
    encoder = DrivingFrameEncoder(SPEC)
    out = encoder.encode(frame(), None)
    assert {(t.name, t.shape, t.dtype) for t in encoder.outputs()} == {
        (k, v.shape, v.dtype.name) for k, v in out.items()}
    loaded = load_encoder("driving_frame", encoder.to_config())
    assert isinstance(loaded, DrivingFrameEncoder) and loaded.spec == SPEC


def test_unknown_encoders_and_bad_configs_are_refused_with_the_field():
    with pytest.raises(ModelFileError, match="encoder.name 'vit_frame' is unknown"):
        load_encoder("vit_frame", {}, "m.json")
    with pytest.raises(ModelFileError, match="cannot be imported"):
        load_encoder("no_such_package.encoders:Frame", {}, "m.json")
    with pytest.raises(ModelFileError, match="encoder.config is invalid"):
        load_encoder("driving_frame", {"image_hww": [96, 160]}, "m.json")


def test_an_encoder_that_does_not_write_the_stem_inputs_is_refused():
    stem = tuple(DrivingFrameEncoder(SPEC).outputs())
    check_encoder_matches(DrivingFrameEncoder(SPEC), stem, "m.json")
    small = DrivingFrameEncoder(replace(SPEC, image_hw=(64, 64)))
    with pytest.raises(ModelFileError, match=r"writes image: \(\(1, 3, 64, 64\), 'float32'\) but the stem takes "
                                             r"image: \(\(1, 3, 96, 160\), 'float32'\)"):
        check_encoder_matches(small, stem, "m.json")
    renamed = (*stem[:-1], TensorSpec("prompt_ids", (1, 8), "int64"))
    with pytest.raises(ModelFileError, match="command_ids.*prompt_ids"):
        check_encoder_matches(DrivingFrameEncoder(SPEC), renamed, "m.json")
