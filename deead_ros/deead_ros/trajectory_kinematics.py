"""A plan's motion along its waypoints: the time, heading, speed, acceleration and heading rate of each.

What a timed trajectory message needs beyond the points (Autoware's TrajectoryPoint: deead_ros.ros.autoware
fills one from this). Pure numpy, so it is tested without ROS; the headings are geometry.path_headings, the
ones the node's nav_msgs/Path carries, so both outputs face the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deead_ros.geometry import path_headings


@dataclass(frozen=True, slots=True)
class TrajectoryKinematics:
    """One row per waypoint, ego frame of the camera stamp (x forward, y left); times after that stamp."""

    times_s: np.ndarray          # (T,) when each waypoint is due (the head contract's k x dt), s
    points_m: np.ndarray         # (T, 2)
    yaw_rad: np.ndarray          # (T,) facing along the path (geometry.path_headings)
    speed_mps: np.ndarray        # (T,) along the path, >= 0
    accel_mps2: np.ndarray       # (T,) change of that speed
    yaw_rate_rps: np.ndarray     # (T,) change of the heading


def trajectory_kinematics(points_m: np.ndarray, times_s: np.ndarray) -> TrajectoryKinematics:
    """Each waypoint's motion from the segments between successive waypoints.

    A segment's speed is its length over its time, and belongs to the middle of that time; its acceleration is the
    finite difference of those speeds (central inside, one-sided at the ends; exact for a constant one). A waypoint
    takes the speed and acceleration of the segment that ends at it, the first waypoint those of the first
    segment. The heading rate is the finite difference of the unwrapped headings over the waypoint times.

    times_s must increase strictly (a head contract's do). One waypoint has no segment: speed, acceleration and
    heading rate 0 (its heading is the step from the ego); two have one: acceleration 0.
    """
    points = np.asarray(points_m, dtype=np.float64).reshape(-1, 2)
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if len(times) != len(points):
        raise ValueError(f"{len(points)} waypoints but {len(times)} times")
    if np.any(np.diff(times) <= 0.0):
        raise ValueError(f"waypoint times must increase strictly, got {times.tolist()}")
    yaw = path_headings(points)
    if len(points) < 2:
        zeros = np.zeros(len(points))
        return TrajectoryKinematics(times, points, yaw, zeros, zeros.copy(), zeros.copy())
    segment_speed = np.linalg.norm(np.diff(points, axis=0), axis=1) / np.diff(times)
    segment_accel = (np.gradient(segment_speed, 0.5 * (times[:-1] + times[1:])) if len(segment_speed) > 1
                     else np.zeros(1))
    of_point = np.concatenate([[0], np.arange(len(segment_speed))])     # the segment that ends at each waypoint
    return TrajectoryKinematics(times, points, yaw, segment_speed[of_point], segment_accel[of_point],
                                np.gradient(np.unwrap(yaw), times))
