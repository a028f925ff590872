"""Several cameras, the IMU and a model memory, without ROS: synchronising sets, interpolating the IMU at the
camera stamp, assembling views with their calibration, projecting into them, and the memory's rules (reset on a
jump in time, made from the exit layer's plan only)."""
import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PilImage

from deead_ros.camera_sync import RESTART_S, CameraSync
from deead_ros.engines.manifest import (CameraSpec, EncoderRef, HeadContract, Manifest, ModelFile, SensorContract,
                                        parse_sensors)
from deead_ros.errors import BadInputError, ModelFileError
from deead_ros.exit import ExitSettings, FixedPolicy, FullPolicy, PriorSettings
from deead_ros.frame_assembly import InputSettings, LatestInputs
from deead_ros.imu_history import ImuHistory
from deead_ros.model.encoding import CameraView, FrameInputs, ImuSample, InputSpec
from deead_ros.model.memory import MemoryStreams
from deead_ros.model.multi_view import MultiViewEncoder, MultiViewSpec, projection
from deead_ros.runner import Runner

CAMERAS = ("front", "left", "back")


# -- synchronising -------------------------------------------------------------------------------------------
def test_a_set_is_handed_on_when_every_camera_of_one_instant_arrived_in_any_order():
    sync = CameraSync(CAMERAS, tolerance_s=0.02)
    assert sync.add("left", 10.005, "L") == (None, [])
    assert sync.add("back", 9.995, "B") == (None, [])
    complete, dropped = sync.add("front", 10.0, "F")
    assert complete is not None and not dropped and complete.stamp_s == 10.0   # the first camera: the instant
    assert complete.messages == (("front", "F"), ("left", "L"), ("back", "B"))


def test_an_incomplete_set_is_dropped_with_its_missing_cameras_when_a_newer_one_completes():
    sync = CameraSync(CAMERAS, tolerance_s=0.02)
    sync.add("front", 10.0, 1)
    sync.add("left", 10.0, 1)                               # back's image of 10.0 never comes
    for camera in CAMERAS[:2]:
        assert sync.add(camera, 10.1, 2) == (None, [])      # two instants open: nothing waits behind the other
    complete, dropped = sync.add("back", 10.1, 2)
    assert complete is not None and complete.stamp_s == 10.1
    assert len(dropped) == 1 and "10.000 s incomplete (missing back" in dropped[0].reason


def test_a_late_image_and_a_second_image_of_a_handed_on_set_are_dropped_not_queued():
    sync = CameraSync(CAMERAS, tolerance_s=0.02)
    for camera in CAMERAS:
        complete, _ = sync.add(camera, 10.1, camera)
    assert complete is not None
    complete, dropped = sync.add("back", 10.0, "late")
    assert complete is None and "arrived after the set at 10.100 s" in dropped[0].reason
    complete, dropped = sync.add("front", 10.095, "again")
    assert complete is None and "second image" in dropped[0].reason


def test_open_instants_are_bounded_and_a_restarted_stream_starts_over():
    sync = CameraSync(CAMERAS, tolerance_s=0.02, max_pending=2)
    dropped = [d for t in (1.0, 1.1, 1.2) for d in sync.add("front", t, t)[1]]
    assert [d.stamp_s for d in dropped] == [1.0]
    for camera in CAMERAS:
        sync.add(camera, 5.0, camera)
    complete, dropped = None, []
    for camera in CAMERAS:                                  # a looping bag: back far beyond RESTART_S
        complete, more = sync.add(camera, 5.0 - RESTART_S - 1.0, camera)
        dropped += more
    assert complete is not None and complete.stamp_s == 3.0 and not any("late" in d.reason for d in dropped)


# -- the IMU at the camera stamp --------------------------------------------------------------------------------
def imu(ax, wz):
    return ImuSample((ax, 0.0, 9.81), (0.0, 0.0, wz))


def test_the_imu_is_interpolated_at_the_camera_stamp_held_near_one_sample_and_stale_beyond():
    history = ImuHistory()
    assert history.at(1.0, 0.05) is None                     # no IMU on this vehicle: not an error
    history.add(1.00, imu(1.0, 0.1))
    history.add(1.02, imu(3.0, 0.3))
    mid, held, stale = (history.at(t, 0.05) for t in (1.005, 1.06, 1.5))
    assert isinstance(mid, ImuSample) and isinstance(held, ImuSample) and isinstance(stale, str)
    assert mid.linear_accel_mps2[0] == pytest.approx(1.5) and mid.angular_velocity_rps[2] == pytest.approx(0.15)
    assert held.linear_accel_mps2[0] == 3.0                 # one side only, within the gap: held
    assert "no IMU sample within" in stale


# -- assembling views with their calibration -----------------------------------------------------------------
def jpeg(pixels):
    buffer = io.BytesIO()
    PilImage.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def stamp(t):
    return SimpleNamespace(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))


def compressed(pixels, t):
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp(t), frame_id="cam"), format="jpeg", data=jpeg(pixels))


def camera_info(width, height, fx):
    return SimpleNamespace(k=[fx, 0, width / 2, 0, fx, height / 2, 0, 0, 1], width=width, height=height)


SPECS = tuple(CameraSpec(name, (24, 40), (1.0, 0.0, 1.5, 0.0, 0.0, yaw))
              for name, yaw in zip(CAMERAS, (0.0, math.pi / 2, math.pi)))


@pytest.mark.parametrize("threads", [1, 3])
def test_views_are_decoded_to_the_model_size_with_scaled_intrinsics_and_mountings(threads):
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 255, (96, 160, 3), dtype=np.uint8) for name in CAMERAS}
    inputs = LatestInputs(decode_threads=threads)
    for name in CAMERAS[:2]:
        inputs.set_camera_info(name, camera_info(160, 96, fx=80.0))
    inputs.set_imu(SimpleNamespace(header=SimpleNamespace(stamp=stamp(7.0)),
                                   linear_acceleration=SimpleNamespace(x=0.5, y=0.0, z=9.8),
                                   angular_velocity=SimpleNamespace(x=0.0, y=0.0, z=0.2)))
    mounting = {"left": (0.0, 1.0, 1.6, 0.0, 0.1, 1.5)}
    frame = inputs.assemble_set(7.0, [(n, compressed(images[n], 7.0)) for n in CAMERAS], False, 1.0, False, SPECS,
                                mounting)
    inputs.close()
    views = frame.inputs.views
    assert [v.name for v in views] == list(CAMERAS) and all(v.image_rgb.shape == (24, 40, 3) for v in views)
    assert views[0].intrinsics is not None and frame.inputs.imu is not None
    np.testing.assert_allclose(views[0].intrinsics, [[20, 0, 20], [0, 20, 12], [0, 0, 1]])   # K at the decoded size
    assert views[2].intrinsics is None                      # no CameraInfo yet: the encoder refuses the frame
    assert views[1].mounting == mounting["left"] and views[0].mounting == SPECS[0].mounting
    assert frame.inputs.imu.linear_accel_mps2[0] == 0.5 and frame.inputs.stamp_s == 7.0
    assert frame.inputs.image_rgb is views[0].image_rgb


def test_uncalibrated_camera_info_is_rejected_with_a_reason():
    rejected = []
    inputs = LatestInputs(on_rejected=lambda topic, reason: rejected.append((topic, reason)))
    inputs.set_camera_info("left", camera_info(0, 0, fx=0.0))
    assert rejected[0][0] == "left/camera_info" and "no usable calibration" in rejected[0][1]


# -- projecting, encoding ----------------------------------------------------------------------------------------
def test_projection_maps_a_point_ahead_of_each_camera_to_its_image_centre():
    k = np.array([[100.0, 0, 80], [0, 100.0, 48], [0, 0, 1]])
    for yaw, point in ((0.0, (11.0, 0.0, 1.5)), (math.pi / 2, (1.0, 10.0, 1.5)), (math.pi, (-9.0, 0.0, 1.5))):
        uvw = projection(k, (96, 160), (1.0, 0.0, 1.5, 0.0, 0.0, yaw)) @ np.array([*point, 1.0])
        np.testing.assert_allclose(uvw[:2] / uvw[2], (0.5, 0.5), atol=1e-9)
        assert uvw[2] == pytest.approx(10.0)                 # depth along the optical axis
    left_of_front = projection(k, (96, 160), SPECS[0].mounting) @ np.array([11.0, 2.0, 1.5, 1.0])
    assert left_of_front[0] / left_of_front[2] < 0.5         # left of the axis: left in the image


def multi_view_encoder(memory_frames=2, imu=True):
    return MultiViewEncoder(MultiViewSpec(InputSpec(image_hw=(24, 40)), SPECS, imu, memory_frames, horizon=6))


def views_frame(t, calibrated=True, speed=3.0):
    k = np.array([[20.0, 0, 20], [0, 20.0, 12], [0, 0, 1]])
    views = tuple(CameraView(c.name, np.full((24, 40, 3), 100 + 40 * i, np.uint8), k if calibrated else None,
                             c.mounting) for i, c in enumerate(SPECS))
    return FrameInputs(views[0].image_rgb, None, speed, 0.0, "go straight", 0.0, views, imu(0.5, 0.1), t)


def test_the_multi_view_encoder_writes_what_it_declares_and_round_trips_its_config():
    encoder = multi_view_encoder()
    feed = encoder.encode(views_frame(1.0), None, encoder.initial_memory())
    declared = {t.name: (t.shape, t.dtype) for t in encoder.outputs()}
    assert {k: (v.shape, v.dtype.name) for k, v in feed.items()} == declared
    assert declared["images"][0] == (1, 3, 3, 24, 40) and declared["memory"][0] == (1, 2, 14)
    assert feed["imu"][0, 6] == 1.0 and not feed["memory"].any()
    again = MultiViewEncoder.from_config(encoder.to_config())
    assert again.spec == encoder.spec and again.sensors() == parse_sensors(encoder.sensors().to_dict())
    with pytest.raises(BadInputError, match="no calibration yet"):
        encoder.encode(views_frame(1.0, calibrated=False), None, ())


# -- memory --------------------------------------------------------------------------------------------------
def test_a_stream_starts_afresh_on_a_jump_in_time_backwards_and_on_reset():
    streams = MemoryStreams(lambda: (), max_gap_s=0.5)
    assert streams.take("live", 1.0) == ((), "")
    streams.store("live", ("m",), 1.0)
    assert streams.take("live", 1.1) == (("m",), "")
    assert streams.take("other", 1.1) == ((), "")            # streams are separate
    for t, why in ((1.7, "+0.700 s"), (0.9, "-0.100 s")):
        memory, reason = streams.take("live", t)
        assert memory == () and why in reason
    streams.reset("odometry history reset")
    assert streams.take("live", 1.1) == ((), "odometry history reset")


class SumChain:
    """A small numpy layer chain: hidden = the stem's inputs summed into 4 numbers; each layer adds its index; the
    head drives straight at a speed read from the hidden state. Counts the layers it runs."""

    def __init__(self, manifest, num_layers=8):
        self.manifest, self.num_layers, self.backend, self.precision = manifest, num_layers, "numpy", "fp32"
        self.layers_run = 0
        self.fed = []

    def prepare(self, feed):
        self.fed.append(feed)
        return np.array([feed["memory"].sum(), feed["imu"].sum(), feed["images"].mean(), 0.0])

    def run_layers(self, state, start, stop):
        self.layers_run += stop - start
        return state + np.array([0.0, 0.0, 0.0, sum(range(start + 1, stop + 1))])

    def head(self, state):
        speed = 2.0 + 0.05 * state[3] + 0.01 * state[0]
        return np.stack([speed * 0.5 * np.arange(1, 7), np.zeros(6)], axis=1).astype(np.float32)

    def close(self):
        pass


def sum_chain(encoder):
    record = ModelFile("stem", Path("/nonexistent/stem"), "", 0, inputs=encoder.outputs())
    manifest = Manifest(Path("/nonexistent/manifest.json"), "test", "test", 8, 17,
                        EncoderRef(encoder.name, encoder.to_config()), HeadContract(6, 0.5, "absolute"), record,
                        (), record, None, (), (), "deead_export ...", encoder.sensors())
    return SumChain(manifest)


def test_the_memory_is_made_from_the_exit_layers_plan_and_no_skipped_layer_runs_for_it():
    encoder = multi_view_encoder()
    chain = sum_chain(encoder)
    runner = Runner(chain, ExitSettings(first_checkpoint=2, fixed_exit_layer=2), PriorSettings(), encoder=encoder)
    first = runner.plan(views_frame(1.0), policy=FixedPolicy(exit_layer=3))
    assert (first.trace.exit_layer, chain.layers_run) == (3, 3)     # nothing beyond the exit layer ran
    assert runner.memory is not None
    memory, reason = runner.memory.take("live", 1.1)
    assert reason == "" and len(memory) == 1
    np.testing.assert_array_equal(memory[0][1], first.trace.trajectory_m)   # the exit layer's plan, as published
    full = runner.plan(views_frame(1.1), policy=FullPolicy())
    fed = chain.fed[-1]["memory"][0]
    np.testing.assert_allclose(fed[0, :12], first.trace.trajectory_m.reshape(-1) / 20.0, rtol=1e-6)
    assert fed[0, 12:] == pytest.approx([0.1, 1.0]) and not fed[1].any()   # age 0.1 s, valid; one plan so far
    assert not np.allclose(full.trace.trajectory_m, first.trace.trajectory_m)


def test_streams_keep_their_own_memory_and_a_jump_resets_it():
    encoder = multi_view_encoder()
    chain = sum_chain(encoder)
    runner = Runner(chain, ExitSettings(first_checkpoint=2, fixed_exit_layer=2), PriorSettings(), encoder=encoder,
                    memory_max_gap_s=0.5)
    fixed = runner.plan(views_frame(1.0), policy=FixedPolicy(exit_layer=2), stream="fixed")
    runner.plan(views_frame(1.0), policy=FullPolicy(), stream="full")
    assert runner.plan(views_frame(1.1), policy=FixedPolicy(exit_layer=2), stream="fixed").memory_reset == ""
    np.testing.assert_allclose(chain.fed[-1]["memory"][0, 0, :12] * 20.0, fixed.trace.trajectory_m.reshape(-1),
                               rtol=1e-6)                   # its own stream's plan, not the full-depth stream's
    jumped = runner.plan(views_frame(3.0), policy=FixedPolicy(exit_layer=2), stream="fixed")
    assert "memory started afresh" in jumped.memory_reset and not chain.fed[-1]["memory"].any()
    runner.reset_memory("deactivated")
    assert runner.plan(views_frame(3.1), policy=FullPolicy(), stream="full").memory_reset == "deactivated"


def test_a_manifest_that_declares_other_sensors_than_its_encoder_reads_is_refused():
    encoder = multi_view_encoder()
    chain = sum_chain(encoder)
    chain.manifest = Manifest(**{**{f: getattr(chain.manifest, f) for f in chain.manifest.__slots__},
                                 "sensors": SensorContract(SPECS[:2], True, True)})
    with pytest.raises(ModelFileError, match="sensors"):
        Runner(chain, ExitSettings(first_checkpoint=2, fixed_exit_layer=2), PriorSettings(), encoder=encoder)
    assert InputSettings().imu_max_gap_s == 0.05
