"""Fuzzed input through the real message conversion: never a crash, always a clear BadInputError or a frame."""
import io

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image as PilImage
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.stores.ros2_jazzy import builtin_interfaces__msg__Time as Time
from rosbags.typesys.stores.ros2_jazzy import sensor_msgs__msg__Image as RawImage
from rosbags.typesys.stores.ros2_jazzy import std_msgs__msg__Header as Header

from deead_ros.errors import BadInputError
from deead_ros.frame_assembly import CameraStampGuard, LatestInputs, decode_compressed, decode_image

T = get_typestore(Stores.ROS2_JAZZY).types


def header(sec: int = 10) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=0), frame_id="camera")


@given(encoding=st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "yuv422", "16UC1", ""]),
       height=st.integers(-2, 70), width=st.integers(-2, 70), step=st.integers(-5, 300),
       size=st.integers(0, 20000))
def test_raw_images_decode_or_say_why(encoding, height, width, step, size):
    msg = RawImage(header=header(), height=max(height, 0), width=max(width, 0), encoding=encoding,
                   is_bigendian=0, step=max(step, 0), data=np.zeros(size, np.uint8))
    try:
        image = decode_image(msg)
    except BadInputError as err:
        assert str(err)
    else:
        assert image.shape == (msg.height, msg.width, 3) and image.dtype == np.uint8


def jpeg(width, height, quality=80):
    buffer = io.BytesIO()
    PilImage.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@given(cut=st.integers(0, 400), flip=st.lists(st.integers(0, 399), max_size=8),
       fmt=st.sampled_from(["jpeg", "png", ""]))
def test_truncated_or_corrupt_jpeg_decodes_or_says_why(cut, flip, fmt):
    data = bytearray(jpeg(32, 24)[:cut])
    for i in flip:
        if i < len(data):
            data[i] ^= 0xFF
    msg = T["sensor_msgs/msg/CompressedImage"](header=header(), format=fmt, data=np.frombuffer(bytes(data), np.uint8))
    try:
        image = decode_compressed(msg)
    except BadInputError as err:
        assert "cannot be decoded" in str(err) or "larger" in str(err)
    else:
        assert image.ndim == 3 and image.shape[2] == 3


coordinates = st.floats(allow_nan=True, allow_infinity=True, width=64)


@given(points=st.lists(st.tuples(coordinates, coordinates), max_size=12),
       frame=st.sampled_from(["map", "base_link", "utm", ""]), route_sec=st.integers(0, 20),
       odom=st.tuples(coordinates, coordinates, coordinates))
def test_routes_and_odometry_never_break_frame_assembly(points, frame, route_sec, odom):
    rejected = []
    inputs = LatestInputs(on_rejected=lambda topic, reason: rejected.append((topic, reason)))
    pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=odom[0], y=odom[1], z=0.0),
                                       orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    vec = T["geometry_msgs/msg/Vector3"]
    inputs.set_odometry(T["nav_msgs/msg/Odometry"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=10, nanosec=0), frame_id="map"),
        child_frame_id="base_link", pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](linear=vec(x=odom[2], y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=0.0)),
            covariance=np.zeros(36))))
    route_header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=route_sec, nanosec=0),
                                            frame_id=frame)
    poses = [T["geometry_msgs/msg/PoseStamped"](header=route_header, pose=T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
        orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))) for x, y in points]
    inputs.set_route(T["nav_msgs/msg/Path"](header=route_header, poses=poses))
    camera = T["sensor_msgs/msg/CompressedImage"](header=header(), format="jpeg",
                                                  data=np.frombuffer(jpeg(16, 16), np.uint8))
    frame_out = inputs.assemble(camera, raw_image=False, max_input_age_s=1.0, use_external=False)
    route = frame_out.inputs.route_ego_m
    assert route is None or (np.isfinite(route).all() and len(route) > 0)
    if frame_out.ego_motion_known:
        assert np.isfinite(frame_out.inputs.speed_mps)
    assert all(reason for _, reason in rejected)


@given(stamps=st.lists(st.floats(0.0, 1000.0), min_size=1, max_size=30), now_s=st.floats(0.0, 1000.0))
def test_camera_stamp_guard_plans_every_frame_that_moves_forward(stamps, now_s):
    guard = CameraStampGuard()
    previous = None
    for stamp in stamps:
        refusal = guard.refuse(stamp, now_s, max_frame_age_s=0.0, max_future_s=0.5)
        expected = ("stamp_future" if stamp - now_s > 0.5 else
                    "stamp_backwards" if previous is not None and stamp < previous else None)
        assert (refusal and refusal[0]) == expected
        previous = previous if expected == "stamp_future" else stamp
