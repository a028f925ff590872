"""Which ROS 2 distro this is, and which environment variable names its Fast DDS profile file: the one place that
knows the distros differ.

Fast DDS 2 (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE only. Fast DDS 3 (Kilted on) reads
FASTDDS_DEFAULT_PROFILES_FILE; its rmw_fastrtps still takes the old name, but warns on every start that it will stop.
The distro is told by rclpy's version: Kilted's is 9, Jazzy's 7 (the pip wheels and a ROS install both record it).
"""
from __future__ import annotations

import importlib.metadata

FAST_DDS_2_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
FAST_DDS_3_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
FIRST_RCLPY_WITH_FAST_DDS_3 = 9          # ROS 2 Kilted
DISTRO_OF_RCLPY_MAJOR = {3: "humble", 7: "jazzy", 9: "kilted"}


def rclpy_major() -> int:
    """rclpy's major version, which names the distro (DISTRO_OF_RCLPY_MAJOR)."""
    return int(importlib.metadata.version("rclpy").split(".")[0])


def ros_distro() -> str:
    """This interpreter's ROS 2 distro, by its rclpy; `rclpy <major>` for one this table does not know."""
    major = rclpy_major()
    return DISTRO_OF_RCLPY_MAJOR.get(major, f"rclpy {major}")


def fast_dds_profile_variable() -> str:
    """The variable this distro's Fast DDS reads its XML profile from (without a deprecation warning)."""
    return FAST_DDS_3_PROFILE_VARIABLE if rclpy_major() >= FIRST_RCLPY_WITH_FAST_DDS_3 else FAST_DDS_2_PROFILE_VARIABLE
