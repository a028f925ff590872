"""deead_make_bag: write held-out simulator episodes as a rosbag2 the node can replay.

Per 0.1 s step: the camera (CompressedImage jpeg, or raw Image with --raw), the route ahead
(nav_msgs/Path, map frame), odometry (nav_msgs/Odometry, map -> base_link), the command
(std_msgs/String) and the expert's future trajectory (nav_msgs/Path, base_link) on a topic of its
own; all stamped with the step's time. Episodes follow each other with a 1 s gap.

With --cameras (e.g. `--cameras 6`: ORION's front, front_left, front_right, back, back_left,
back_right) each camera gets its image and CameraInfo under /camera/<name>/, and an IMU
(sensor_msgs/Imu) goes on /sensing/imu. The simulator records one camera: the other views are made
from its image (shifted sideways, the back ones mirrored, each tinted), so the bag exercises
several synchronised streams, not several real viewpoints. The views after the first are stamped a
few milliseconds apart (within io.camera_sync_tolerance_s), as unsynchronised drivers stamp them.
"""
from __future__ import annotations

import argparse
import io
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PilImage
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from deead_ros import bags as topics
from deead_lab.dataset_format import load_episode

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T = TYPESTORE.types
BAG_EPOCH_S = 1_700_000_000          # stamps start here: plausible wall time, far from 0 ("static" routes)


def _header(t_s: float, frame_id: str):
    sec = int(math.floor(t_s))
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=int((t_s - sec) * 1e9)),
                                    frame_id=frame_id)


def _pose(x: float, y: float, yaw: float):
    return T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=0.0),
        orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))


def path_message(points: np.ndarray, t_s: float, frame_id: str):
    """(N, 2) points -> nav_msgs/Path (rosbags type), each pose facing along the path."""
    header = _header(t_s, frame_id)
    direction = np.gradient(points, axis=0) if len(points) > 1 else np.array([[1.0, 0.0]])
    headings = np.arctan2(direction[:, 1], direction[:, 0])
    poses = [T["geometry_msgs/msg/PoseStamped"](header=header, pose=_pose(x, y, h))
             for (x, y), h in zip(points, headings)]
    return T["nav_msgs/msg/Path"](header=header, poses=poses)


def odometry_message(pose: np.ndarray, speed: float, yaw_rate: float, t_s: float):
    vec = T["geometry_msgs/msg/Vector3"]
    twist = T["geometry_msgs/msg/Twist"](linear=vec(x=float(speed), y=0.0, z=0.0), angular=vec(x=0.0, y=0.0,
                                                                                             z=float(yaw_rate)))
    return T["nav_msgs/msg/Odometry"](
        header=_header(t_s, topics.WORLD_FRAME), child_frame_id=topics.EGO_FRAME,
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=_pose(*pose), covariance=np.zeros(36)),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)))


def camera_message(image: np.ndarray, t_s: float, raw: bool, jpeg_quality: int, frame_id: str = "camera_front"):
    header = _header(t_s, frame_id)
    if raw:
        h, w = image.shape[:2]
        return T["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                                          step=w * 3, data=np.ascontiguousarray(image).reshape(-1))
    buffer = io.BytesIO()
    PilImage.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality)
    return T["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                data=np.frombuffer(buffer.getvalue(), np.uint8))


ORION_CAMERAS = ("front", "front_left", "front_right", "back", "back_left", "back_right")
VIEW_SKEW_S = 0.0017                 # camera i > 0 is stamped (i * this) mod 5 ms after the first


def camera_info_message(width: int, height: int, t_s: float, frame_id: str):
    """A pinhole CameraInfo with a 60 degree horizontal field of view, square pixels, no distortion."""
    f = width / 2 / math.tan(math.radians(30))
    return T["sensor_msgs/msg/CameraInfo"](
        header=_header(t_s, frame_id), height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.array([f, 0, width / 2, 0, f, height / 2, 0, 0, 1], np.float64), r=np.eye(3).reshape(-1),
        p=np.array([f, 0, width / 2, 0, 0, f, height / 2, 0, 0, 0, 1, 0], np.float64), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def imu_message(accel_mps2: float, speed_mps: float, yaw_rate_rps: float, t_s: float):
    """The IMU of a car driving in the plane: longitudinal acceleration, centripetal v * yaw rate, gravity."""
    vec = T["geometry_msgs/msg/Vector3"]
    return T["sensor_msgs/msg/Imu"](
        header=_header(t_s, topics.EGO_FRAME),
        orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        orientation_covariance=np.array([-1.0] + [0.0] * 8), angular_velocity=vec(x=0.0, y=0.0, z=float(yaw_rate_rps)),
        angular_velocity_covariance=np.zeros(9),
        linear_acceleration=vec(x=float(accel_mps2), y=float(speed_mps * yaw_rate_rps), z=9.81),
        linear_acceleration_covariance=np.zeros(9))


def view_image(image: np.ndarray, index: int) -> np.ndarray:
    """Camera `index`'s image made from the recorded one: shifted sideways, mirrored behind, tinted."""
    if index == 0:
        return image
    view = np.roll(image, index * image.shape[1] // 7, axis=1)
    view = view[:, ::-1] if index >= 3 else view
    tint = np.array([1.0 - 0.05 * index, 1.0, 1.0 + 0.04 * index])
    return np.clip(view * tint, 0, 255).astype(np.uint8)


def write_bag(episode_files: list[Path], out: Path, raw: bool = False, max_frames: int = 0,
              jpeg_quality: int = 90, storage: str = "mcap", cameras: tuple[str, ...] = (),
              route_delay_s: float = 0.0, image_wh: tuple[int, int] | None = None) -> int:
    """Write the episodes into one bag at `out` (replaced if it exists); return the frames written.

    cameras: () one camera on /camera/image/...; else each named camera with its CameraInfo, and an IMU.
    route_delay_s: each frame's route is recorded this long after its camera (stamped at the camera's instant
    all the same), as a planner that publishes after the frame arrives; 0: before the camera.
    image_wh: (width, height) every image is resized to, a camera of another geometry than the recorded one
    (e.g. (192, 108), 16:9, against the demo model's 160x96); None: as recorded.
    """
    if out.exists():
        shutil.rmtree(out)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    image_type = "sensor_msgs/msg/Image" if raw else "sensor_msgs/msg/CompressedImage"
    camera_topic = topics.CAMERA_RAW if raw else topics.CAMERA_COMPRESSED
    channels = [("route", topics.ROUTE, "nav_msgs/msg/Path"), ("odometry", topics.ODOMETRY, "nav_msgs/msg/Odometry"),
                ("command", topics.COMMAND, "std_msgs/msg/String"), ("truth", topics.GROUND_TRUTH, "nav_msgs/msg/Path")]
    if cameras:
        channels.append(("imu", topics.IMU, "sensor_msgs/msg/Imu"))
        for camera in cameras:
            compressed, raw_topic, info = topics.camera_topics(camera)
            channels += [(f"{camera}/camera_info", info, "sensor_msgs/msg/CameraInfo"),
                         (camera, raw_topic if raw else compressed, image_type)]
    else:
        channels.append(("camera", camera_topic, image_type))
    frames = 0
    t0 = float(BAG_EPOCH_S)
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        conns = {name: writer.add_connection(topic, msgtype, typestore=TYPESTORE) for name, topic, msgtype in channels}

        def write(name: str, msg: Any, t_s: float) -> None:
            writer.write(conns[name], int(round(t_s * 1e9)), TYPESTORE.serialize_cdr(msg, conns[name].msgtype))

        for path in episode_files:
            ep = load_episode(path)
            n = len(ep["pose"]) if not max_frames else min(len(ep["pose"]), max_frames)
            accel = np.gradient(ep["speed"][:n], ep["timestamp"][:n]) if n > 1 else np.zeros(n)
            for i in range(n):
                t_s = t0 + float(ep["timestamp"][i])
                route = ep["route_world"][i, : max(int(ep["route_valid"][i]), 2)]
                write("odometry", odometry_message(ep["pose"][i], ep["speed"][i], ep["yaw_rate"][i], t_s), t_s)
                route_msg = path_message(route, t_s, topics.WORLD_FRAME)
                if not route_delay_s:
                    write("route", route_msg, t_s)
                write("command", T["std_msgs/msg/String"](data=str(ep["command"][i])), t_s)
                write("truth", path_message(ep["future_ego"][i], t_s, topics.EGO_FRAME), t_s)
                image = ep["images"][i]           # inputs before the camera: the node plans on arrival
                if image_wh is not None:
                    image = np.asarray(PilImage.fromarray(image).resize(image_wh, PilImage.Resampling.BILINEAR))
                if not cameras:
                    write("camera", camera_message(image, t_s, raw, jpeg_quality), t_s)
                    if route_delay_s:
                        write("route", route_msg, t_s + route_delay_s)
                    frames += 1
                    continue
                write("imu", imu_message(float(accel[i]), float(ep["speed"][i]), float(ep["yaw_rate"][i]), t_s), t_s)
                for k, camera in enumerate(cameras):
                    view_s = t_s + (k * VIEW_SKEW_S) % 0.005
                    write(f"{camera}/camera_info", camera_info_message(image.shape[1], image.shape[0], view_s,
                                                                       f"camera_{camera}"), view_s)
                    write(camera, camera_message(view_image(image, k), view_s, raw, jpeg_quality, f"camera_{camera}"),
                          view_s)
                if route_delay_s:
                    write("route", route_msg, t_s + route_delay_s)
                frames += 1
            t0 += float(ep["timestamp"][n - 1]) + 1.0
            print(f"[make_bag] {path.name}: {n} frames", flush=True)
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_make_bag", description=__doc__.splitlines()[0])
    parser.add_argument("episodes", nargs="+", type=Path, help="episode .npz files (held-out test split)")
    parser.add_argument("--out", type=Path, required=True, help="bag folder to write (replaced)")
    parser.add_argument("--raw", action="store_true", help="raw sensor_msgs/Image instead of jpeg")
    parser.add_argument("--max-frames", type=int, default=0, help="frames per episode (0: all)")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--cameras", default="",
                        help="several cameras: a number (6: ORION's front, front_left, front_right, back, back_left, "
                             "back_right; fewer: the first of those) or comma-separated names; with an IMU")
    parser.add_argument("--image-size", default="", metavar="WxH",
                        help="resize every image to W x H pixels (a camera of another geometry, e.g. 192x108)")
    args = parser.parse_args(argv)
    size = args.image_size.lower().split("x") if args.image_size else []
    if size and (len(size) != 2 or not all(v.isdigit() and int(v) > 0 for v in size)):
        print(f"deead_make_bag: --image-size {args.image_size}: give WxH, e.g. 192x108", file=sys.stderr)
        return 2
    image_wh = (int(size[0]), int(size[1])) if size else None
    cameras = (ORION_CAMERAS[:int(args.cameras)] if args.cameras.isdigit() else
               tuple(c for c in args.cameras.split(",") if c))
    missing = [str(p) for p in args.episodes if not p.exists()]
    if missing:
        print(f"deead_make_bag: missing episode files {missing}; collect them with deead_lab.collect_metadrive",
              file=sys.stderr)
        return 2
    frames = write_bag(args.episodes, args.out, args.raw, args.max_frames, args.jpeg_quality, args.storage, cameras,
                       image_wh=image_wh)
    size_mb = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 1e6
    print(f"[make_bag] wrote {frames} frames to {args.out} ({size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
