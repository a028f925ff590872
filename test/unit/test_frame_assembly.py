"""Message conversions into runner frames: images, odometry, paths; bad input is a clear BadInputError."""
import io
import math
import random
import threading
import time

import numpy as np
import pytest
from nav_msgs.msg import Odometry, Path
from PIL import Image as PilImage
from sensor_msgs.msg import CompressedImage, Image

from deead_ros.errors import BadInputError
from deead_ros import frame_assembly as fa
from deead_ros.ros import ros_io


def raw(pixels, encoding, step=None):
    h, w = pixels.shape[:2]
    msg = Image(height=h, width=w, encoding=encoding)
    msg.step = step or pixels.strides[0]
    msg.data = pixels.tobytes()
    return msg


RGB = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)


def test_raw_encodings_decode_to_rgb():
    np.testing.assert_array_equal(fa.decode_image(raw(RGB, "rgb8")), RGB)
    np.testing.assert_array_equal(fa.decode_image(raw(RGB[..., ::-1].copy(), "bgr8")), RGB)
    mono = fa.decode_image(raw(RGB[..., 0].copy(), "mono8"))
    assert mono.shape == (6, 8, 3) and np.array_equal(mono[..., 2], RGB[..., 0])


def test_padded_rows_are_cropped():
    padded = np.zeros((6, 30), np.uint8)               # 8 px x 3 bytes = 24 bytes of pixels + 6 of padding
    padded[:, :24] = RGB.reshape(6, 24)
    msg = Image(height=6, width=8, encoding="rgb8", step=30)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(fa.decode_image(msg), RGB)


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported"),
    (lambda m: setattr(m, "step", 3), "step 3 < width"),
    (lambda m: setattr(m, "height", 0), "outside"),
    (lambda m: setattr(m, "data", m.data[:10]), "needs"),
])
def test_bad_raw_images_say_why(mutate, reason):
    msg = raw(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(BadInputError, match=reason):
        fa.decode_image(msg)


def jpeg_bytes(pixels):
    buffer = io.BytesIO()
    PilImage.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_jpeg_and_png_decode():
    big = np.repeat(np.repeat(RGB, 8, axis=0), 8, axis=1)
    decoded = fa.decode_compressed(CompressedImage(format="jpeg", data=jpeg_bytes(big)))
    assert decoded.shape == big.shape and np.abs(decoded.astype(int) - big).mean() < 20
    buffer = io.BytesIO()
    PilImage.fromarray(RGB).save(buffer, format="PNG")
    np.testing.assert_array_equal(fa.decode_compressed(CompressedImage(format="png", data=buffer.getvalue())), RGB)


@pytest.mark.parametrize("data, fmt, reason", [
    (jpeg_bytes(RGB)[:40], "jpeg", "cannot be decoded"),
    (b"not an image", "jpeg", "cannot be decoded"),
    (b"", "png", "cannot be decoded"),
    (jpeg_bytes(RGB), "theora", "unsupported"),
])
def test_corrupt_compressed_images_say_why(data, fmt, reason):
    with pytest.raises(BadInputError, match=reason):
        fa.decode_compressed(CompressedImage(format=fmt, data=data))


def odometry(x=1.0, y=2.0, yaw=0.3, vx=5.0, wz=0.1, stamp_s=10.0):
    msg = Odometry()
    msg.header.frame_id = "map"
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), round(stamp_s % 1 * 1e9)
    msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    msg.twist.twist.linear.x, msg.twist.twist.angular.z = vx, wz
    return msg


def test_odometry_to_ego_state():
    ego = fa.ego_state(odometry())
    assert (ego.x, ego.y, ego.frame_id, ego.stamp_s) == (1.0, 2.0, "map", 10.0)
    assert ego.yaw == pytest.approx(0.3) and ego.speed_mps == 5.0 and ego.yaw_rate_rps == 0.1


@pytest.mark.parametrize("kwargs", [{"x": float("nan")}, {"vx": float("inf")}, {"wz": float("nan")}])
def test_odometry_with_nan_is_rejected(kwargs):
    with pytest.raises(BadInputError, match="NaN or inf"):
        fa.ego_state(odometry(**kwargs))


def test_trajectory_path_round_trip():
    points = np.stack([np.arange(1, 7) * 5.0, np.arange(6) * 0.5], axis=1)
    stamp = odometry().header.stamp
    path = ros_io.trajectory_path(points, stamp, "base_link")
    assert isinstance(path, Path) and path.header.frame_id == "base_link" and path.header.stamp.sec == 10
    np.testing.assert_allclose(fa.path_points(path), points)
    assert fa.path_points(Path()).shape == (0, 2)


def test_path_writer_fills_one_message_in_place_facing_along_the_path():
    writer = ros_io.PathWriter()
    stamp = odometry().header.stamp
    points = np.array([[2.0, 0.0], [4.0, 2.0], [4.0, 5.0]])
    path = writer.fill(points, stamp, "base_link")
    headings = [math.atan2(0.0, 2.0), math.atan2(2.0, 2.0), math.atan2(3.0, 0.0)]    # from the ego, then each step
    for pose, yaw in zip(path.poses, headings):
        q = pose.pose.orientation
        assert (q.z, q.w) == pytest.approx((math.sin(yaw / 2), math.cos(yaw / 2)), abs=1e-12)
        assert pose.header.frame_id == "base_link" and pose.header.stamp.sec == 10
    again = writer.fill(np.array([[1.0, 1.0]]), stamp, "map")
    assert again is path and len(again.poses) == 1 and again.header.frame_id == "map"
    np.testing.assert_allclose(fa.path_points(again), [[1.0, 1.0]])
    assert ros_io.trajectory_path(points, stamp, "base_link") == writer.fill(points, stamp, "base_link")


def test_a_timed_path_stamps_each_pose_when_it_is_due_with_its_heading():
    stamp = odometry().header.stamp
    stamp.sec, stamp.nanosec = 10, 900_000_000
    points = np.array([[2.0, 0.0], [4.0, 2.0], [4.0, 5.0]])
    path = ros_io.trajectory_path(points, stamp, "base_link", times_s=[0.5, 1.0, 1.5])
    assert (path.header.stamp.sec, path.header.stamp.nanosec) == (10, 900_000_000), "the path keeps the camera stamp"
    due = [(p.header.stamp.sec, p.header.stamp.nanosec) for p in path.poses]
    assert due == [(11, 400_000_000), (11, 900_000_000), (12, 400_000_000)], "camera stamp + k x dt"
    q = path.poses[2].pose.orientation
    assert (q.z, q.w) == pytest.approx((math.sin(math.pi / 4), math.cos(math.pi / 4))), "heading along the path"
    assert all(p.header.frame_id == "base_link" for p in path.poses)


def path_msg(points, frame_id, sec=10):
    msg = ros_io.trajectory_path(np.asarray(points, float), odometry().header.stamp, frame_id)
    msg.header.stamp.sec = sec
    return msg


def camera(sec=10):
    msg = CompressedImage(format="jpeg", data=jpeg_bytes(np.zeros((16, 16, 3), np.uint8)))
    msg.header.stamp.sec = sec
    return msg


def test_route_in_the_odometry_frame_is_moved_into_the_ego_frame():
    inputs = fa.LatestInputs()
    inputs.set_odometry(odometry(x=10.0, y=0.0, yaw=0.0, vx=4.0))
    inputs.set_route(path_msg([[10.0, 0.0], [20.0, 0.0], [30.0, 0.0]], "map"))
    frame = inputs.assemble(camera(), raw_image=False, max_input_age_s=0.5, use_external=False)
    assert frame.ego_motion_known and frame.inputs.speed_mps == 4.0 and frame.prior_age_s == 0.0
    assert frame.inputs.route_ego_m is not None, "a route in the odometry frame is used"
    np.testing.assert_allclose(frame.inputs.route_ego_m, [[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]], atol=1e-9)


def test_odometry_stream_gives_the_frame_its_acceleration():
    inputs = fa.LatestInputs(accel_window_s=0.5)
    for i in range(11):                                      # 20 Hz, braking at 2 m/s^2
        inputs.set_odometry(odometry(vx=6.0 - 2.0 * 0.05 * i, stamp_s=9.5 + 0.05 * i))
    frame = inputs.assemble(camera(), raw_image=False, max_input_age_s=0.5, use_external=False)
    assert frame.inputs.speed_mps == pytest.approx(5.0) and frame.inputs.accel_mps2 == pytest.approx(-2.0)
    inputs.set_odometry(odometry(x=float("nan"), stamp_s=10.05))
    assert len(inputs.history) == 11, "a rejected message leaves the history alone"
    again = inputs.assemble(camera(), raw_image=False, max_input_age_s=0.5, use_external=False)
    assert again.inputs.accel_mps2 == pytest.approx(-2.0)


def test_stale_odometry_and_unknown_frames_are_left_out_with_a_reason():
    rejected = []
    inputs = fa.LatestInputs(on_rejected=lambda topic, reason: rejected.append((topic, reason)))
    inputs.set_odometry(odometry())
    inputs.set_route(path_msg([[0.0, 0.0], [10.0, 0.0]], "utm", sec=12))
    frame = inputs.assemble(camera(sec=12), raw_image=False, max_input_age_s=0.5, use_external=False)
    assert not frame.ego_motion_known and frame.prior_age_s == -1.0, "2 s old odometry is stale"
    assert rejected[0][0] == "odometry" and "stale" in rejected[0][1] and "newest 10.000 s" in rejected[0][1]
    assert frame.inputs.route_ego_m is None and rejected[1][0] == "route" and "'utm'" in rejected[1][1]
    inputs.set_odometry(odometry(x=float("nan")))
    assert rejected[-1] == ("odometry", "odometry has NaN or inf in pose or twist")


def test_route_in_the_ego_frame_is_used_as_is_and_static_routes_never_expire():
    inputs = fa.LatestInputs()
    inputs.set_route(path_msg([[0.0, 0.0], [5.0, 1.0]], "base_link", sec=0))
    frame = inputs.assemble(camera(sec=1000), raw_image=False, max_input_age_s=0.5, use_external=False)
    assert frame.inputs.route_ego_m is not None, "a route in the ego frame is used"
    np.testing.assert_allclose(frame.inputs.route_ego_m, [[0.0, 0.0], [5.0, 1.0]])


def test_camera_stamps_backwards_future_or_late_are_refused_once_with_a_reason():
    guard = fa.CameraStampGuard()

    def refuse(camera_s: float, now_s: float = 52.0) -> tuple[str, str] | None:
        return guard.refuse(camera_s, now_s, max_frame_age_s=5.0, max_future_s=0.5)

    def refused(camera_s: float, now_s: float = 52.0) -> tuple[str, str]:
        refusal = refuse(camera_s, now_s)
        assert refusal is not None, f"a camera stamp of {camera_s} s at {now_s} s must be refused"
        return refusal

    assert refuse(50.0) is None and refuse(50.1) is None
    code, message = refused(10.0)
    assert code == "stamp_backwards" and "went back 40.100 s" in message
    assert refuse(10.1, now_s=14.0) is None, "the frame after a jump back is planned"
    code, message = refused(20.0, now_s=14.0)
    assert code == "stamp_future" and "io.max_future_s" in message
    assert refuse(10.2, now_s=14.0) is None, "a stamp from the future is not taken as the newest"
    code, message = refused(20.1, now_s=30.0)
    assert code == "stale_frame" and "9900 ms old" in message
    assert refuse(29.0, now_s=30.0) is None


# -- issue 14: inputs at the camera's instant, plausibility, bounded work ------------------------------------

def stamped(msg, t_s):
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t_s), round(t_s % 1 * 1e9)
    return msg


def camera_at(t_s, pixels=None, fmt="jpeg"):
    return stamped(CompressedImage(format=fmt, data=jpeg_bytes(np.zeros((16, 16, 3), np.uint8) if pixels is None
                                                                 else pixels)), t_s)


def recording(**settings):
    """LatestInputs that records what it refuses and notices."""
    log: dict[str, list[tuple[str, str]]] = {"rejected": [], "notices": []}
    inputs = fa.LatestInputs(on_rejected=lambda topic, reason: log["rejected"].append((topic, reason)),
                             on_notice=lambda key, reason: log["notices"].append((key, reason)),
                             settings=fa.InputSettings(**settings))
    return inputs, log


def drive(inputs, stamps, speed=10.0, x0=0.0, accel=0.0):
    """Odometry of an ego on +x from x0 at t=0 (constant acceleration), at the given stamps, in that order."""
    for t in stamps:
        inputs.set_odometry(odometry(x=x0 + speed * t + 0.5 * accel * t * t, y=0.0, yaw=0.0, vx=speed + accel * t,
                                     wz=0.0, stamp_s=t))


def assemble(inputs, t_s, **kwargs):
    return inputs.assemble(camera_at(t_s), raw_image=False, max_input_age_s=1.0, use_external=False, **kwargs)


def straight_route(x_from, x_to, frame="map", t_s=0.0, step=2.0):
    return path_msg_at([[x, 0.0] for x in np.arange(x_from, x_to, step)], frame, t_s)


def path_msg_at(points, frame_id, t_s):
    msg = ros_io.trajectory_path(np.asarray(points, float), odometry().header.stamp, frame_id)
    return stamped(msg, t_s)


def test_parameters_of_the_input_settings_are_in_the_table():
    from deead_ros.parameters import SPECS
    assert set(fa.PARAMETER_NAMES.values()) <= set(SPECS)
    values = {name: SPECS[name].default for name in fa.PARAMETER_NAMES.values()}
    assert fa.InputSettings.from_values(values) == fa.InputSettings()
    assert fa.InputSettings.from_values({"input_limits.max_speed_mps": 5.0, "exit.delta_m": 1.0}).max_speed_mps == 5.0


def odometry_at(t, speed=10.0, accel=0.0, x0=0.0):
    return odometry(x=x0 + speed * t + 0.5 * accel * t * t, y=0.0, yaw=0.0, vx=speed + accel * t, wz=0.0, stamp_s=t)


def live(inputs, odometry_msgs, camera_stamps):
    """Feed odometry in stamp order and assemble each camera frame as soon as odometry at or after its
    stamp is in (the node's rule: it waits for that sample); returns {camera stamp: frame}."""
    frames, pending = {}, sorted(camera_stamps)
    for msg in odometry_msgs:
        inputs.set_odometry(msg)
        while pending and inputs.wait_for_instant(pending[0], timeout_s=0.0):
            t = pending.pop(0)
            frames[t] = assemble(inputs, t)
    return frames


@pytest.mark.parametrize("odometry_hz", [5.0, 100.0])
def test_ego_state_is_the_one_at_the_camera_stamp_whatever_the_odometry_rate(odometry_hz):
    """A 10 Hz camera between odometry samples: pose, speed and acceleration at its own stamp."""
    inputs, log = recording()
    inputs.set_route(straight_route(-50.0, 200.0, t_s=0.0))               # a static route in the odometry frame
    stamps = np.round(np.arange(0.0, 3.0 + 1e-9, 1.0 / odometry_hz), 6)
    cameras = list(np.round(np.arange(0.55, 2.9, 0.1), 6))                # never on an odometry stamp at 5 Hz
    frames = live(inputs, [odometry_at(t, accel=-1.0) for t in stamps], cameras)
    assert sorted(frames) == cameras
    for camera_s, frame in frames.items():
        assert frame.ego_motion_known, log["rejected"]
        x_true = 10.0 * camera_s - 0.5 * camera_s ** 2
        # linear interpolation of a parabola: off by at most accel * dt^2 / 8 between samples
        assert frame.inputs.route_ego_m[0, 0] == pytest.approx(-50.0 - x_true, abs=0.5 / odometry_hz ** 2 / 4 + 1e-9)
        assert frame.inputs.speed_mps == pytest.approx(10.0 - camera_s, abs=1e-9)
        assert frame.inputs.accel_mps2 == pytest.approx(-1.0, abs=1e-9)
        assert frame.prior_age_s <= 0.5 / odometry_hz + 1e-9
    assert not log["rejected"] and not log["notices"]


def test_slow_odometry_without_a_later_sample_is_stale_beyond_the_extrapolation_limit():
    inputs, log = recording(odometry_max_extrapolation_s=0.05)
    drive(inputs, [1.0, 1.2])                                             # 5 Hz, the 1.4 s sample not here yet
    assert assemble(inputs, 1.24).ego_motion_known, "0.04 s past the newest: rolled forward"
    late = assemble(inputs, 1.3)
    assert not late.ego_motion_known and late.prior_age_s == -1.0
    topic, reason = log["rejected"][-1]
    assert topic == "odometry" and "within 0.05 s of the camera stamp 1.300 s" in reason
    drive(inputs, [1.4])                                                  # the next sample: now interpolated
    frame = assemble(inputs, 1.3)
    assert frame.ego_motion_known and frame.inputs.speed_mps == pytest.approx(10.0)


def test_out_of_order_odometry_gives_the_same_frames_as_in_order():
    stamps = list(np.round(np.arange(0.0, 2.0, 0.02), 6))
    shuffled = stamps[:]
    random.Random(3).shuffle(shuffled)
    frames = []
    for order in (stamps, shuffled):
        inputs, log = recording()
        drive(inputs, order, speed=8.0, accel=0.5)
        inputs.set_route(straight_route(0.0, 100.0))
        frames.append([assemble(inputs, t) for t in (0.61, 1.0, 1.37, 1.93)])
        assert not log["rejected"] and not log["notices"]
    for a, b in zip(*frames):
        np.testing.assert_array_equal(a.inputs.route_ego_m, b.inputs.route_ego_m)
        assert (a.inputs.speed_mps, a.inputs.accel_mps2) == (b.inputs.speed_mps, b.inputs.accel_mps2)


def test_acceleration_matches_what_the_trainer_computes():
    from deead_ros.model.encoding import accelerations
    stamps = list(np.round(np.arange(0.0, 3.0, 0.1), 6))
    speeds = 5.0 + np.sin(np.array(stamps) * 2.0)
    trained = accelerations(stamps, speeds, 0.5)
    inputs, _ = recording()
    frames = live(inputs, [odometry(x=0.0, vx=float(v), wz=0.0, stamp_s=t) for t, v in zip(stamps, speeds)], stamps)
    np.testing.assert_allclose([frames[t].inputs.accel_mps2 for t in stamps], trained, atol=1e-9)


def test_route_is_taken_at_the_camera_instant_and_converted_once(monkeypatch):
    converted: list[Path] = []
    real = fa.path_points

    def counting_path_points(msg: Path) -> np.ndarray:
        converted.append(msg)
        return real(msg)

    monkeypatch.setattr(fa, "path_points", counting_path_points)
    inputs, _ = recording()
    drive(inputs, np.round(np.arange(0.0, 1.01, 0.1), 6))
    inputs.set_route(straight_route(0.0, 60.0, t_s=0.5))
    inputs.set_route(straight_route(500.0, 560.0, t_s=0.8))              # arrived, but for a later instant
    assert len(converted) == 2, "converted when it arrives"
    early = [assemble(inputs, t) for t in (0.5, 0.6, 0.7)]
    assert len(converted) == 2, "never again per frame"
    for t, frame in zip((0.5, 0.6, 0.7), early):
        assert frame.inputs.route_ego_m[0, 0] == pytest.approx(-10.0 * t), "the route of 0.5 s"
    assert assemble(inputs, 0.9).inputs.route_ego_m[0, 0] == pytest.approx(500.0 - 9.0)


def test_a_pose_jump_resets_the_history_and_the_frame_after_it_uses_the_new_pose():
    inputs, log = recording()
    drive(inputs, np.round(np.arange(0.0, 1.01, 0.1), 6), x0=0.0)        # drive 1 ends at x = 10
    inputs.set_route(straight_route(1000.0, 1200.0, t_s=2.0))            # drive 2 starts at x = 1000
    # the frame of drive 2 arrives before its odometry: it must not be planned with drive 1's pose
    assert not inputs.wait_for_instant(2.0, timeout_s=0.02)
    blind = assemble(inputs, 2.0)
    assert not blind.ego_motion_known and blind.inputs.route_ego_m is None
    threading.Timer(0.02, lambda: drive(inputs, [2.0], x0=1000.0 - 20.0)).start()
    assert inputs.wait_for_instant(2.0, timeout_s=2.0), "woken by the odometry that arrives while it waits"
    frame = assemble(inputs, 2.0)
    assert log["notices"][-1][0] == "odometry_reset" and "jumped" in log["notices"][-1][1]
    assert frame.ego_motion_known and frame.inputs.route_ego_m[0, 0] == pytest.approx(0.0)
    assert len(inputs.history) == 1


def test_wait_for_instant_is_bounded_by_the_parameter():
    inputs, _ = recording(odometry_wait_s=0.05)
    drive(inputs, [1.0])
    assert inputs.wait_for_instant(1.0) and inputs.wait_for_instant(0.9)
    start = time.perf_counter()
    assert not inputs.wait_for_instant(1.1)
    assert 0.04 < time.perf_counter() - start < 0.5


# The fuzz cases of issue 14. Odometry, routes and commands outside the limits are refused when they
# arrive (counted as rejected inputs; the frame is planned without them); an image outside them is
# bad input (the frame is dropped as `bad_input`, never decoded).

@pytest.mark.parametrize("vx, wz, what", [(1e39, 0.0, "speed 1e+39"), (1e9, 0.0, "speed 1e+09"),
                                          (1e300, 0.0, "speed 1e+300"), (-150.0, 0.0, "speed -150"),
                                          (5.0, 1e9, "yaw rate 1e+09"), (5.0, -4.5, "yaw rate -4.5")])
def test_implausible_odometry_is_refused_and_never_reaches_the_model(vx, wz, what):
    inputs, log = recording()
    inputs.set_odometry(odometry(vx=vx, wz=wz, stamp_s=10.0))
    topic, reason = log["rejected"][-1]
    assert topic == "odometry" and what in reason and "input_limits.max_" in reason, reason
    assert len(inputs.history) == 0
    frame = assemble(inputs, 10.0)
    assert not frame.ego_motion_known and frame.inputs.speed_mps == 0.0


def test_non_unit_quaternion_is_refused():
    inputs, log = recording()
    msg = odometry()
    msg.pose.pose.orientation.w = 3.0
    inputs.set_odometry(msg)
    assert log["rejected"] == [("odometry", "odometry orientation is not a unit quaternion")]


@pytest.mark.parametrize("route, frame", [
    (np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 1.0]]) * 1e160, "map"),      # finite, scaled by 1e160
    (np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 1.0]]) * 1e300, "base_link"),
    (np.array([[0.0, 1e6], [10.0, 1e6], [20.0, 1e6]]), "map"),             # 1e6 m to the side
])
def test_absurdly_far_routes_are_refused_for_the_prior_and_the_model(route, frame):
    inputs, log = recording()
    drive(inputs, [9.9, 10.0], speed=1.0)
    inputs.set_route(path_msg_at(route, frame, 10.0))
    result = assemble(inputs, 10.0)
    assert result.ego_motion_known and result.inputs.route_ego_m is None
    topic, reason = log["rejected"][-1]
    assert topic == "route" and "input_limits.max_route_distance_m" in reason, reason


def test_a_route_of_100k_points_is_refused_before_it_is_converted():
    from types import SimpleNamespace
    inputs, log = recording()
    huge = SimpleNamespace(header=stamped(Path(), 10.0).header, poses=[None] * 100_000)   # converting them would raise
    inputs.set_route(huge)
    assert log["rejected"][-1][0] == "route" and "100000 points" in log["rejected"][-1][1]
    drive(inputs, [10.0])
    assert assemble(inputs, 10.0).inputs.route_ego_m is None, "the frame of its instant goes without a route"


def test_a_1mb_command_is_cut_with_a_notice():
    from std_msgs.msg import String
    inputs, log = recording()
    inputs.set_command(String(data="turn left at the junction " * 40_000))
    assert len(inputs.command) == 200 and inputs.command.startswith("turn left at the junction turn")
    assert log["notices"] == [("command_truncated", "command of 1040000 characters cut to "
                                                    "input_limits.max_command_chars=200")]
    inputs.set_command(String(data="stop"))
    assert inputs.command == "stop" and len(log["notices"]) == 1


@pytest.fixture(scope="module")
def png_8000():
    """The issue's 187 KB 8000x8000 PNG (64 M pixels; decoding it took 5.2 s and 1.1 GB)."""
    buffer = io.BytesIO()
    PilImage.new("RGB", (8000, 8000)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_an_8000x8000_png_is_refused_from_its_header(png_8000):
    start = time.perf_counter()
    with pytest.raises(BadInputError, match="8000x8000 has 64000000 pixels.*max_image_pixels=16777216"):
        fa.decode_compressed(CompressedImage(format="png", data=png_8000))
    assert time.perf_counter() - start < 0.2, "refused before decoding"


def test_a_huge_raw_image_is_refused_from_its_header():
    msg = Image(height=5000, width=5000, encoding="rgb8", step=15000)     # no data at all: never read
    with pytest.raises(BadInputError, match="max_image_pixels"):
        fa.decode_image(msg)
    assert fa.decode_image(raw(RGB, "rgb8"), max_pixels=48).shape == (6, 8, 3)
    with pytest.raises(BadInputError, match="max_image_pixels=47"):
        fa.decode_image(raw(RGB, "rgb8"), max_pixels=47)


@pytest.mark.parametrize("fmt", ["DDS", "GIF", "BMP", "TIFF"])
def test_other_image_formats_in_a_png_frame_are_bad_input(fmt):
    buffer = io.BytesIO()
    PilImage.fromarray(np.zeros((8, 8, 4 if fmt == "DDS" else 3), np.uint8)).save(buffer, format=fmt)
    with pytest.raises(BadInputError, match="cannot be decoded"):
        fa.decode_compressed(CompressedImage(format="png", data=buffer.getvalue()))


def test_a_large_jpeg_is_decoded_straight_to_the_model_scale():
    from deead_ros.model.encoding import resize_rgb
    rng = np.random.default_rng(0)
    coarse = PilImage.fromarray(rng.integers(0, 255, (27, 48, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((1920, 1080), PilImage.Resampling.BICUBIC))     # a 1080p camera's smooth shapes
    msg = CompressedImage(format="jpeg", data=jpeg_bytes(smooth))
    full = fa.decode_compressed(msg)
    small = fa.decode_compressed(msg, target_hw=(96, 160))
    assert full.shape == (1080, 1920, 3) and small.shape == (96, 160, 3), "decoded at 1/8, then fit to 96x160"
    difference = np.abs(small - resize_rgb(full, (96, 160)))
    assert difference.mean() < 3.0, f"the model sees nearly the same image ({difference.mean():.2f} / 255)"
    assert fa.decode_compressed(msg, target_hw=(1080, 1920)).shape == full.shape
    assert fa.decode_compressed(camera_at(0.0), target_hw=(96, 160)).shape == (16, 16, 3), "never upscaled"


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8"])
def test_a_large_raw_image_is_read_in_place_and_fit_to_the_model_scale(encoding):
    from deead_ros.model.encoding import resize_rgb
    rng = np.random.default_rng(1)
    rgb = np.asarray(PilImage.fromarray(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8)).resize((640, 360)))
    if encoding == "mono8":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., :1],
              "rgba8": np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], axis=2)}[encoding]
    small = fa.decode_image(raw(np.ascontiguousarray(pixels), encoding), target_hw=(96, 160))
    assert small.shape == (96, 160, 3) and small.dtype == np.uint8
    assert np.abs(small - resize_rgb(rgb, (96, 160))).max() <= 1.0, "the encoder's resize, rounded to uint8"


def test_model_image_hw_reads_the_encoder_spec():
    from deead_ros.model.encoding import DrivingFrameEncoder, InputSpec
    assert fa.model_image_hw(DrivingFrameEncoder(InputSpec())) == (96, 160)
    assert fa.model_image_hw(object()) is None


def test_a_restarted_odometry_stream_is_waited_for_not_its_old_samples():
    """A bag played again: the history still holds the end of the first pass, stamped after the frame."""
    inputs, log = recording(odometry_wait_s=0.02)
    drive(inputs, np.round(np.arange(7.4, 9.41, 0.1), 6))
    assert not inputs.wait_for_instant(5.6), "samples 1.8 s after the frame belong to the previous pass"
    drive(inputs, [5.5, 5.6])
    assert log["notices"][-1][0] == "odometry_reset"
    assert inputs.wait_for_instant(5.6)
    frame = assemble(inputs, 5.6)
    assert frame.ego_motion_known and frame.prior_age_s == 0.0 and frame.inputs.speed_mps == 10.0


def test_without_any_odometry_frames_are_not_held_back():
    inputs, _ = recording(odometry_wait_s=0.5)
    start = time.perf_counter()
    assert not inputs.wait_for_instant(1.0)
    assert time.perf_counter() - start < 0.05


def test_a_route_published_with_every_frame_but_after_it_is_waited_for():
    inputs, _ = recording(odometry_wait_s=2.0)
    drive(inputs, np.round(np.arange(0.0, 1.61, 0.1), 6))
    for t in (0.9, 1.0):                                     # a route per camera frame, stamped like the frames
        inputs.set_route(straight_route(0.0, 100.0, t_s=t))
    assert not inputs.wait_for_instant(1.1, timeout_s=0.02), "the route of 1.1 s is due and has not arrived"
    threading.Timer(0.05, lambda: inputs.set_route(straight_route(5.0, 100.0, t_s=1.1))).start()
    assert inputs.wait_for_instant(1.1, timeout_s=2.0), "woken by the route that arrives while it waits"
    frame = assemble(inputs, 1.1)
    assert frame.inputs.route_ego_m[0, 0] == pytest.approx(5.0 - 11.0), "planned with the route of its instant"


def test_a_route_published_less_often_than_the_camera_is_not_waited_for_between_its_messages():
    inputs, _ = recording(odometry_wait_s=2.0)
    drive(inputs, np.round(np.arange(0.0, 3.11, 0.1), 6))
    for t in (1.0, 2.0):                                     # once a second
        inputs.set_route(straight_route(0.0, 100.0, t_s=t))
    start = time.perf_counter()
    assert inputs.wait_for_instant(2.5) and time.perf_counter() - start < 0.5, "the next route is due at 3.0 s"
    assert not fa.path_due(inputs._routes, 2.5) and fa.path_due(inputs._routes, 3.0)
    inputs.set_route(straight_route(0.0, 100.0, t_s=0.0))    # a static (latched) route: never waited for
    assert not fa.path_due(inputs._routes, 3.0)
