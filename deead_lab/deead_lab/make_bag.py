"""deead_make_bag: write held-out simulator episodes as a rosbag2 the node can replay.

Per 0.1 s step: the camera (CompressedImage jpeg, or raw Image with --raw), the route ahead
(nav_msgs/Path, map frame), odometry (nav_msgs/Odometry, map -> base_link), the command
(std_msgs/String) and the expert's future trajectory (nav_msgs/Path, base_link) on a topic of its
own; all stamped with the step's time. Episodes follow each other with a 1 s gap.
"""
from __future__ import annotations

import argparse
import io
import math
import shutil
import sys
from pathlib import Path

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


def camera_message(image: np.ndarray, t_s: float, raw: bool, jpeg_quality: int):
    header = _header(t_s, "camera_front")
    if raw:
        h, w = image.shape[:2]
        return T["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                                          step=w * 3, data=np.ascontiguousarray(image).reshape(-1))
    buffer = io.BytesIO()
    PilImage.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality)
    return T["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                data=np.frombuffer(buffer.getvalue(), np.uint8))


def write_bag(episode_files: list[Path], out: Path, raw: bool = False, max_frames: int = 0,
              jpeg_quality: int = 90, storage: str = "mcap") -> int:
    """Write the episodes into one bag at `out` (replaced if it exists); return the frames written."""
    if out.exists():
        shutil.rmtree(out)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    camera_topic, camera_type = ((topics.CAMERA_RAW, "sensor_msgs/msg/Image") if raw else
                                 (topics.CAMERA_COMPRESSED, "sensor_msgs/msg/CompressedImage"))
    frames = 0
    t0 = float(BAG_EPOCH_S)
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        conns = {name: writer.add_connection(topic, msgtype, typestore=TYPESTORE) for name, topic, msgtype in (
            ("camera", camera_topic, camera_type), ("route", topics.ROUTE, "nav_msgs/msg/Path"),
            ("odometry", topics.ODOMETRY, "nav_msgs/msg/Odometry"), ("command", topics.COMMAND, "std_msgs/msg/String"),
            ("truth", topics.GROUND_TRUTH, "nav_msgs/msg/Path"))}
        for path in episode_files:
            ep = load_episode(path)
            n = len(ep["pose"]) if not max_frames else min(len(ep["pose"]), max_frames)
            for i in range(n):
                t_s = t0 + float(ep["timestamp"][i])
                route = ep["route_world"][i, : max(int(ep["route_valid"][i]), 2)]
                messages = {
                    "odometry": odometry_message(ep["pose"][i], ep["speed"][i], ep["yaw_rate"][i], t_s),
                    "route": path_message(route, t_s, topics.WORLD_FRAME),
                    "command": T["std_msgs/msg/String"](data=str(ep["command"][i])),
                    "truth": path_message(ep["future_ego"][i], t_s, topics.EGO_FRAME),
                    "camera": camera_message(ep["images"][i], t_s, raw, jpeg_quality),
                }
                stamp_ns = int(round(t_s * 1e9))
                for name, msg in messages.items():       # inputs before the camera: the node plans on arrival
                    writer.write(conns[name], stamp_ns, TYPESTORE.serialize_cdr(msg, conns[name].msgtype))
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
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.episodes if not p.exists()]
    if missing:
        print(f"deead_make_bag: missing episode files {missing}; collect them with deead_lab.collect_metadrive",
              file=sys.stderr)
        return 2
    frames = write_bag(args.episodes, args.out, args.raw, args.max_frames, args.jpeg_quality, args.storage)
    size_mb = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 1e6
    print(f"[make_bag] wrote {frames} frames to {args.out} ({size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
