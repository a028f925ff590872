"""Message conversions into runner frames: images, odometry, paths; bad input is a clear BadInputError."""
import io
import math

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
    np.testing.assert_allclose(frame.inputs.route_ego_m, [[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]], atol=1e-9)


def test_odometry_stream_gives_the_frame_its_acceleration():
    inputs = fa.LatestInputs(accel_window_s=0.5)
    for i in range(11):                                      # 20 Hz, braking at 2 m/s^2
        inputs.set_odometry(odometry(vx=6.0 - 2.0 * 0.05 * i, stamp_s=9.5 + 0.05 * i))
    frame = inputs.assemble(camera(), raw_image=False, max_input_age_s=0.5, use_external=False)
    assert frame.inputs.speed_mps == pytest.approx(5.0) and frame.inputs.accel_mps2 == pytest.approx(-2.0)
    inputs.set_odometry(odometry(x=float("nan"), stamp_s=10.05))
    assert inputs.odometry.accel_mps2 == pytest.approx(-2.0), "a rejected message leaves the history alone"


def test_stale_odometry_and_unknown_frames_are_left_out_with_a_reason():
    rejected = []
    inputs = fa.LatestInputs(on_rejected=lambda topic, reason: rejected.append((topic, reason)))
    inputs.set_odometry(odometry())
    inputs.set_route(path_msg([[0.0, 0.0], [10.0, 0.0]], "utm", sec=12))
    frame = inputs.assemble(camera(sec=12), raw_image=False, max_input_age_s=0.5, use_external=False)
    assert not frame.ego_motion_known and frame.prior_age_s == -1.0, "2 s old odometry is stale"
    assert frame.inputs.route_ego_m is None and rejected[0][0] == "route" and "'utm'" in rejected[0][1]
    inputs.set_odometry(odometry(x=float("nan")))
    assert rejected[-1] == ("odometry", "odometry has NaN or inf in pose or twist")


def test_route_in_the_ego_frame_is_used_as_is_and_static_routes_never_expire():
    inputs = fa.LatestInputs()
    inputs.set_route(path_msg([[0.0, 0.0], [5.0, 1.0]], "base_link", sec=0))
    frame = inputs.assemble(camera(sec=1000), raw_image=False, max_input_age_s=0.5, use_external=False)
    np.testing.assert_allclose(frame.inputs.route_ego_m, [[0.0, 0.0], [5.0, 1.0]])


def test_camera_stamps_backwards_future_or_late_are_refused_once_with_a_reason():
    guard = fa.CameraStampGuard()
    refuse = lambda camera_s, now_s=52.0: guard.refuse(camera_s, now_s, max_frame_age_s=5.0, max_future_s=0.5)  # noqa: E731
    assert refuse(50.0) is None and refuse(50.1) is None
    code, message = refuse(10.0)
    assert code == "stamp_backwards" and "went back 40.100 s" in message
    assert refuse(10.1, now_s=14.0) is None, "the frame after a jump back is planned"
    code, message = refuse(20.0, now_s=14.0)
    assert code == "stamp_future" and "io.max_future_s" in message
    assert refuse(10.2, now_s=14.0) is None, "a stamp from the future is not taken as the newest"
    code, message = refuse(20.1, now_s=30.0)
    assert code == "stale_frame" and "9900 ms old" in message
    assert refuse(29.0, now_s=30.0) is None
