"""Outputs of the node as ROS messages: trajectory, exit diagnostics, /diagnostics.

Inputs are decoded by deead_ros.frame_assembly, which the offline evaluation shares.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path

from deead_ros.diagnostics import exit_diagnostics_fields
from deead_ros.geometry import path_headings, quaternion_from_yaw
from deead_ros.health import Status
from deead_ros.runner import PlanResult
from deead_ros_msgs.msg import ExitCheckpoint, ExitDiagnostics


Times = np.ndarray | Sequence[float] | None     # waypoint times after the camera stamp, s


def nanoseconds(times_s: np.ndarray | Sequence[float]) -> np.ndarray:
    """Times in seconds as whole nanoseconds (int64), rounded: what stamps and durations carry."""
    return np.round(np.asarray(times_s, dtype=np.float64) * 1e9).astype(np.int64)


class PathWriter:
    """One nav_msgs/Path filled in place per frame: (T, 2) ego-frame waypoints, each pose facing along the path.

    Why: building a Path of fresh PoseStamped messages costs about three times as much as setting the
    numbers of preallocated ones, and it sits between the plan and its publication. rclpy serialises a
    message inside publish(), so the next frame may overwrite it; whoever keeps a Path past the frame
    must copy it. The headings come from numpy; only the assignments into the messages are per pose.
    """

    def __init__(self) -> None:
        self.path = Path()

    def fill(self, points_m: np.ndarray, stamp: Time, frame_id: str, times_s: Times = None) -> Path:
        """times_s: each waypoint's time after the camera stamp (the head contract's k x dt): each pose is then
        stamped when it is due, so a controller can tell; None: every pose carries the camera stamp."""
        points = np.asarray(points_m, dtype=np.float64).reshape(-1, 2)
        path = self.path
        if len(path.poses) != len(points):
            path.poses = [PoseStamped() for _ in range(len(points))]
        header = path.header
        header.stamp, header.frame_id = stamp, frame_id
        quaternions = quaternion_from_yaw(path_headings(points))        # from the ego, then point to point
        values = np.column_stack([points, quaternions[:, 2:]]).tolist()   # x, y, qz, qw: floats for rclpy
        due_ns = (stamp.sec * 1_000_000_000 + stamp.nanosec
                  + nanoseconds(times_s if times_s is not None else np.zeros(len(points)))).tolist()
        for pose, (x, y, qz, qw), due in zip(path.poses, values, due_ns):
            pose.header.frame_id = frame_id
            pose.header.stamp.sec, pose.header.stamp.nanosec = divmod(due, 1_000_000_000)
            position, orientation = pose.pose.position, pose.pose.orientation
            position.x, position.y, orientation.z, orientation.w = x, y, qz, qw
        return path


def trajectory_path(points_m: np.ndarray, stamp: Time, frame_id: str, times_s: Times = None) -> Path:
    """(T, 2) ego-frame waypoints -> a new nav_msgs/Path (PathWriter's), each pose facing along the path and, with
    times_s, stamped when it is due."""
    return PathWriter().fill(points_m, stamp, frame_id, times_s)


def exit_diagnostics(result: PlanResult, stamp: Time, frame_id: str, delta_m: float, prior_age_s: float,
                     backend: str, model_version: str, input_wait_ms: float = 0.0, node_ms: float = 0.0,
                     decode_ms: float = 0.0, assembly_ms: float = 0.0) -> ExitDiagnostics:
    """A runner PlanResult (and the node's own timing of the frame) -> deead_ros_msgs/ExitDiagnostics."""
    fields = exit_diagnostics_fields(result, delta_m, prior_age_s, backend, model_version)
    checkpoints = [ExitCheckpoint(**c) for c in fields.pop("checkpoints")]
    msg = ExitDiagnostics(**fields, checkpoints=checkpoints, input_wait_ms=float(input_wait_ms),
                          node_ms=float(node_ms), decode_ms=float(decode_ms), assembly_ms=float(assembly_ms))
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


def diagnostic_array(statuses: list[Status], stamp: Time, node_name: str) -> DiagnosticArray:
    """Health statuses -> diagnostic_msgs/DiagnosticArray, shaped like diagnostic_updater's."""
    array = DiagnosticArray()
    array.header.stamp = stamp
    for status in statuses:
        array.status.append(DiagnosticStatus(
            level=bytes([int(status.level)]), name=f"{node_name}: {status.name}", message=status.message,
            hardware_id=node_name, values=[KeyValue(key=k, value=v) for k, v in status.values.items()]))
    return array
