"""Which environment variable names this distro's Fast DDS profile file: the one place that knows the distros differ.

Fast DDS 2 (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE only. Fast DDS 3 (Kilted on) reads
FASTDDS_DEFAULT_PROFILES_FILE; its rmw_fastrtps still takes the old name, but warns on every start that it will stop.
The distro is told by rclpy's version: Kilted's is 9, Jazzy's 7 (the pip wheels and a ROS install both record it).
"""
from __future__ import annotations

import importlib.metadata

FAST_DDS_2_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
FAST_DDS_3_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
FIRST_RCLPY_WITH_FAST_DDS_3 = 9          # ROS 2 Kilted


def fast_dds_profile_variable() -> str:
    """The variable this distro's Fast DDS reads its XML profile from (without a deprecation warning)."""
    major = int(importlib.metadata.version("rclpy").split(".")[0])
    return FAST_DDS_3_PROFILE_VARIABLE if major >= FIRST_RCLPY_WITH_FAST_DDS_3 else FAST_DDS_2_PROFILE_VARIABLE
