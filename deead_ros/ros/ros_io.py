"""Outputs of the node as ROS messages: trajectory, exit diagnostics, /diagnostics.

Inputs are decoded by deead_ros.frame_assembly, which the offline evaluation shares.
"""
from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path

from deead_ros.diagnostics import exit_diagnostics_fields
from deead_ros.health import Status
from deead_ros.runner import PlanResult
from deead_ros_msgs.msg import ExitCheckpoint, ExitDiagnostics


def trajectory_path(points_m: np.ndarray, stamp: Time, frame_id: str) -> Path:
    """(T, 2) ego-frame waypoints -> nav_msgs/Path, each pose facing along the path."""
    path = Path()
    path.header.stamp, path.header.frame_id = stamp, frame_id
    previous_x = previous_y = 0.0
    for x, y in np.asarray(points_m, dtype=np.float64).tolist():     # floats: on the latency path
        pose = PoseStamped()
        pose.header = path.header
        pose.pose.position.x, pose.pose.position.y = x, y
        yaw = math.atan2(y - previous_y, x - previous_x)
        pose.pose.orientation.z, pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        path.poses.append(pose)
        previous_x, previous_y = x, y
    return path


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
