"""Plane geometry shared by both packages: poses and frames, angles, polylines (numpy only).

The runtime (priors, route tokens, frame assembly, validation) and the lab (simulator labels, the
closed loop's controller and progress, training targets) use these one implementations, so a route
means the same thing when it is recorded, trained on and planned with. Frames: x forward, y left
(REP 103); a pose is (x, y, yaw).

The route-end rule, decided here once: a polyline is sampled past its end straight on along its last
segment (`sample_at_arc_lengths`), because a route that ends before the planning horizon is not a
stop line; before its start, at its first point. A caller that must stay on the polyline clamps its
query to [0, length] itself (it knows the length).
"""
from __future__ import annotations

import math
from typing import overload

import numpy as np

DUPLICATE_M = 1e-3      # consecutive points closer than this are one point


# --------------------------------------------------------------------------- angles and frames
@overload
def wrap_angle(angle_rad: float) -> float: ...
@overload
def wrap_angle(angle_rad: np.ndarray) -> np.ndarray: ...
def wrap_angle(angle_rad: float | np.ndarray) -> float | np.ndarray:  # noqa: E302
    """The angle(s) in [-pi, pi)."""
    wrapped = (np.asarray(angle_rad, dtype=np.float64) + math.pi) % (2.0 * math.pi) - math.pi
    return float(wrapped) if wrapped.ndim == 0 else wrapped


def _pose_parts(points: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, ...]:
    """x, y, yaw of `pose` ((3,) or (N, 3)) shaped to broadcast over the point axes of `points` (..., 2)."""
    x, y, yaw = pose[..., 0], pose[..., 1], pose[..., 2]
    shape = x.shape + (1,) * (points.ndim - 1 - (pose.ndim - 1))
    return x.reshape(shape), y.reshape(shape), yaw.reshape(shape)


def world_to_ego(points: np.ndarray, pose: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """Points (..., 2) in the frame `pose` is given in, expressed in the ego frame at that pose.

    `pose` is (3,) for one frame, or (N, 3) with `points` (N, ..., 2) for one pose per frame.
    """
    points = np.asarray(points, dtype=np.float64)
    x, y, yaw = _pose_parts(points, np.asarray(pose, dtype=np.float64))
    dx, dy = points[..., 0] - x, points[..., 1] - y
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * dx + s * dy, -s * dx + c * dy], axis=-1)


def ego_to_world(points: np.ndarray, pose: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """Ego-frame points (..., 2) of `pose` back in the frame the pose is given in (inverse of world_to_ego)."""
    points = np.asarray(points, dtype=np.float64)
    x, y, yaw = _pose_parts(points, np.asarray(pose, dtype=np.float64))
    c, s = np.cos(yaw), np.sin(yaw)
    px, py = points[..., 0], points[..., 1]
    return np.stack([x + c * px - s * py, y + s * px + c * py], axis=-1)


def to_ego_frame(points_m: np.ndarray, ego_x: float, ego_y: float, ego_yaw: float) -> np.ndarray:
    """(N, 2) points given in the pose's frame, in the ego frame at that pose (x forward, y left)."""
    return world_to_ego(points_m, (ego_x, ego_y, ego_yaw))


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Yaw (rotation about z) of a unit quaternion, radians."""
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def quaternion_from_yaw(yaw_rad: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) as x, y, z, w of rotations by yaw about z (inverse of yaw_from_quaternion)."""
    half = 0.5 * np.asarray(yaw_rad, dtype=np.float64)
    zeros = np.zeros_like(half)
    return np.stack([zeros, zeros, np.sin(half), np.cos(half)], axis=-1)


def path_headings(points_m: np.ndarray) -> np.ndarray:
    """Yaw (T,) of each waypoint of an ego-frame plan (T, 2), facing along the path: the step to it, from the ego
    (at the origin, facing x) for the first. A step shorter than DUPLICATE_M (a plan that stands still) keeps the
    heading before it, so a stop neither turns the car back to the ego's heading nor spins it."""
    points_m = np.asarray(points_m, dtype=np.float64).reshape(-1, 2)
    steps = np.diff(points_m, axis=0, prepend=np.zeros((1, 2)))
    moves = np.hypot(steps[:, 0], steps[:, 1]) >= DUPLICATE_M     # hypot: no overflow on absurd (1e300 m) input
    yaw = np.where(moves, np.arctan2(steps[:, 1], steps[:, 0]), 0.0)
    last_move = np.maximum.accumulate(np.where(moves, np.arange(len(yaw)), -1))   # -1: none yet, the ego's 0
    return np.where(last_move >= 0, yaw[np.maximum(last_move, 0)], 0.0)


# --------------------------------------------------------------------------- polylines
def distinct_points(points_m: np.ndarray) -> np.ndarray:
    """Drop points that repeat their predecessor (within DUPLICATE_M)."""
    points_m = np.asarray(points_m, dtype=np.float64)
    keep = np.ones(len(points_m), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(points_m, axis=0), axis=1) >= DUPLICATE_M
    return points_m[keep]


def arc_lengths(polyline_m: np.ndarray) -> np.ndarray:
    """Cumulative arc length (N,) of an (N, 2) polyline, starting at 0 (empty for no points)."""
    polyline_m = np.asarray(polyline_m, dtype=np.float64)
    if len(polyline_m) == 0:
        return np.zeros(0)
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(polyline_m, axis=0), axis=1))])


def sample_at_arc_lengths(polyline_m: np.ndarray, targets_m: np.ndarray | list[float]) -> np.ndarray:
    """Points (K, 2) at the given arc lengths along an (N, 2) polyline, by the route-end rule of this module.

    Repeated points are dropped first; a polyline of one distinct point gives that point for every target.
    """
    polyline_m = distinct_points(polyline_m)
    targets_m = np.asarray(targets_m, dtype=np.float64)
    if len(polyline_m) == 1:
        return np.repeat(polyline_m, len(targets_m), axis=0)
    arc = arc_lengths(polyline_m)
    points = np.stack([np.interp(targets_m, arc, polyline_m[:, 0]), np.interp(targets_m, arc, polyline_m[:, 1])],
                      axis=1)
    direction = (polyline_m[-1] - polyline_m[-2]) / (arc[-1] - arc[-2])
    return points + np.maximum(targets_m - arc[-1], 0.0)[:, None] * direction


def project_to_polyline(point_m: np.ndarray, polyline_m: np.ndarray) -> tuple[float, float, float]:
    """The point's foot on the polyline: (distance to it, its arc length, signed lateral offset), metres.

    The lateral offset is positive when the point lies left of the polyline's direction. The first of
    equally near segments wins.
    """
    polyline_m = np.asarray(polyline_m, dtype=np.float64)
    p = np.asarray(point_m, dtype=np.float64)
    if len(polyline_m) == 1:
        return float(np.linalg.norm(p - polyline_m[0])), 0.0, 0.0
    a, b = polyline_m[:-1], polyline_m[1:]
    ab = b - a
    den = np.maximum((ab * ab).sum(axis=1), 1e-12)
    u = np.clip(((p - a) * ab).sum(axis=1) / den, 0.0, 1.0)
    d = np.linalg.norm(p - (a + u[:, None] * ab), axis=1)
    i = int(np.argmin(d))
    cross = ab[i, 0] * (p[1] - a[i, 1]) - ab[i, 1] * (p[0] - a[i, 0])
    return float(d[i]), float(arc_lengths(polyline_m)[i] + u[i] * np.sqrt(den[i])), float(np.sign(cross) * d[i])


def closest_arc_length(polyline_m: np.ndarray) -> tuple[float, float]:
    """(arc length of the polyline point closest to the origin, distance to it), metres."""
    distance, arc, _ = project_to_polyline(np.zeros(2), polyline_m)
    return arc, distance
