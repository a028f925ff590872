"""Which ROS 2 distro this is, which environment variable names its Fast DDS profile file (the one place that knows
the distros differ), and when this package's localhost profile is put in force.

Fast DDS 2 (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE only. Fast DDS 3 (Kilted on) reads
FASTDDS_DEFAULT_PROFILES_FILE; its rmw_fastrtps still takes the old name, but warns on every start that it will stop.
The distro is told by rclpy's version: Kilted's is 9, Jazzy's 7 (the pip wheels and a ROS install both record it).
"""
from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

FAST_DDS_2_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
FAST_DDS_3_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
FIRST_RCLPY_WITH_FAST_DDS_3 = 9          # ROS 2 Kilted
DISTRO_OF_RCLPY_MAJOR = {3: "humble", 7: "jazzy", 9: "kilted"}
# One machine, large images over a 16 MB shared-memory segment, no network. The default 512 KB sends a larger camera
# image over UDP: measured with raw 640x360 frames, 80 of 200 planned, and the node's wait for each frame's odometry
# ran to its io.odometry_wait_s limit (README, "Measured here": the Over ROS bullet).
LOCALHOST_PROFILE = "fastdds_localhost_shm.xml"          # in the package's config/
# Any of these set: the user configured the middleware, and this package leaves it alone.
DDS_SETTINGS = (FAST_DDS_2_PROFILE_VARIABLE, FAST_DDS_3_PROFILE_VARIABLE, "CYCLONEDDS_URI",
                "RMW_FASTRTPS_USE_QOS_FROM_XML")


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


def dds_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment already configures the middleware (a profile file, Cyclone's URI, QoS from XML)."""
    return any(environ.get(name) for name in DDS_SETTINGS)


def use_localhost_profile(config_dir: Path, environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Put the localhost profile in config_dir in force for this process's participants and the processes it starts
    (set before rclpy creates one), as the launch file does by default; leave a configured middleware alone.
    Returns the profile's path, or None where it was left alone."""
    if dds_configured(environ):
        return None
    profile = str(Path(config_dir) / LOCALHOST_PROFILE)
    environ[fast_dds_profile_variable()] = profile
    return profile
