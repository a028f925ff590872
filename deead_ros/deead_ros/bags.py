"""The project's bags: topic names, frames, and reading them without the middleware."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterator

from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

CAMERA_COMPRESSED = "/camera/image/compressed"
CAMERA_RAW = "/camera/image/raw"
ROUTE = "/planning/route"
ODOMETRY = "/localization/odometry"
COMMAND = "/planning/command"
GROUND_TRUTH = "/ground_truth/trajectory"      # the expert's future, ego frame, stamped like the camera
IMU = "/sensing/imu"                           # sensor_msgs/Imu (several-camera bags)


def camera_topics(camera: str) -> tuple[str, str, str]:
    """A named camera's (compressed image, raw image, CameraInfo) topics in a several-camera bag."""
    return f"/camera/{camera}/image/compressed", f"/camera/{camera}/image/raw", f"/camera/{camera}/camera_info"

WORLD_FRAME = "map"
EGO_FRAME = "base_link"


def parse_remaps(items: list[str]) -> dict[str, str]:
    """`--remap OLD:=NEW` arguments (deead_replay and deead_eval) -> {OLD: NEW}."""
    remaps = {}
    for item in items:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise argparse.ArgumentTypeError(f"--remap expects OLD:=NEW, got '{item}'")
        remaps[old] = new
    return remaps


def bag_topics(bag: Path, remaps: dict[str, str] | None = None) -> dict[str, str]:
    """{topic (after remapping): message type} of a bag."""
    remaps = remaps or {}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        return {remaps.get(c.topic, c.topic): c.msgtype for c in reader.connections}


def iterate_bag(bag: Path) -> Iterator[tuple[str, Any]]:
    """Yield (topic, message) in recorded order, deserialised to rosbags' ROS 2 Jazzy types."""
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        for connection, _, raw in reader.messages():
            yield connection.topic, reader.deserialize(raw, connection.msgtype)


def iterate_bag_timed(bag: Path, remaps: dict[str, str] | None = None) -> Iterator[tuple[str, int, Any]]:
    """Yield (topic after remapping, record time in ns, message) in recorded order (rosbags' Jazzy types)."""
    remaps = remaps or {}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        for connection, timestamp, raw in reader.messages():
            yield remaps.get(connection.topic, connection.topic), timestamp, reader.deserialize(raw, connection.msgtype)
