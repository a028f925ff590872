"""Polyline geometry shared by the planner prior and the model's route tokens (numpy only)."""
from __future__ import annotations

import numpy as np

DUPLICATE_M = 1e-3      # consecutive points closer than this are one point


def distinct_points(points_m: np.ndarray) -> np.ndarray:
    """Drop points that repeat their predecessor (within DUPLICATE_M)."""
    keep = np.ones(len(points_m), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(points_m, axis=0), axis=1) >= DUPLICATE_M
    return points_m[keep]


def arc_lengths(polyline_m: np.ndarray) -> np.ndarray:
    """Cumulative arc length (N,) of an (N, 2) polyline of distinct points, starting at 0."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(polyline_m, axis=0), axis=1))])


def closest_arc_length(polyline_m: np.ndarray) -> tuple[float, float]:
    """Return (arc length of the polyline point closest to the origin, distance to it), metres."""
    a, b = polyline_m[:-1], polyline_m[1:]
    seg = b - a
    seg_len = np.linalg.norm(seg, axis=1)
    t = np.clip(np.einsum("ij,ij->i", -a, seg) / seg_len**2, 0.0, 1.0)
    dist = np.linalg.norm(a + t[:, None] * seg, axis=1)
    i = int(np.argmin(dist))
    return float(arc_lengths(polyline_m)[i] + t[i] * seg_len[i]), float(dist[i])


def sample_at_arc_lengths(polyline_m: np.ndarray, targets_m: np.ndarray) -> np.ndarray:
    """Points (K, 2) at the given arc lengths; past the end, continue straight along the last segment."""
    arc = arc_lengths(polyline_m)
    points = np.stack([np.interp(targets_m, arc, polyline_m[:, 0]), np.interp(targets_m, arc, polyline_m[:, 1])],
                      axis=1)
    direction = (polyline_m[-1] - polyline_m[-2]) / (arc[-1] - arc[-2])
    return points + np.maximum(np.asarray(targets_m) - arc[-1], 0.0)[:, None] * direction


def to_ego_frame(points_m: np.ndarray, ego_x: float, ego_y: float, ego_yaw: float) -> np.ndarray:
    """Express (N, 2) points given in the pose's frame in the ego frame at that pose (x forward, y left)."""
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    d = np.asarray(points_m, dtype=np.float64) - (ego_x, ego_y)
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Yaw (rotation about z) of a unit quaternion, radians."""
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))
