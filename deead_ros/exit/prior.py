"""The planner prior: a cheap reference trajectory in the ego frame at the model's time steps.

Sources: the route ahead resampled by arc length at the ego's speed (default), a constant
velocity / constant turn rate rollout when there is no route, or an external planner's path.
Each builder returns a Prior that says where it came from and, when it has no trajectory, why:
a degenerate input gives a reason, never NaN.
Ego frame: x forward, y left, metres (REP 103).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deead_ros.geometry import (DUPLICATE_M, arc_lengths, closest_arc_length, distinct_points,
                                sample_at_arc_lengths)

PRIOR_SOURCES = ("route", "constant_velocity", "external")


@dataclass(frozen=True, slots=True)
class Prior:
    """A reference trajectory, or the reason there is none."""

    trajectory_m: np.ndarray | None   # (T, 2) float32, ego frame; None when no valid prior exists
    source: str                       # route | constant_velocity | external | none
    detail: str                       # how it was built, or why it could not be

    @property
    def is_valid(self) -> bool:
        return self.trajectory_m is not None


def no_prior(reason: str) -> Prior:
    """Return the empty prior with its reason (the controller then runs to full depth)."""
    return Prior(None, "none", reason)


@dataclass(frozen=True, slots=True)
class PriorSettings:
    """Prior parameters (names match the ROS parameters under `prior.`)."""

    source: str = "route"                      # route | constant_velocity | external
    min_speed_mps: float = 1.0                 # route resampled at max(speed, this)
    max_route_offset_m: float = 5.0            # a route farther than this from the ego is rejected
    fallback_to_constant_velocity: bool = True  # without a usable route/path, roll out the ego's motion

    def problem(self) -> str | None:
        """Return why these settings are invalid, or None."""
        if self.source not in PRIOR_SOURCES:
            return f"prior.source='{self.source}' is unknown; use one of {', '.join(PRIOR_SOURCES)}"
        if not np.isfinite(self.min_speed_mps) or self.min_speed_mps < 0:
            return f"prior.min_speed_mps={self.min_speed_mps} must be >= 0 m/s"
        if not np.isfinite(self.max_route_offset_m) or self.max_route_offset_m <= 0:
            return f"prior.max_route_offset_m={self.max_route_offset_m} must be > 0 m"
        return None


def route_prior(route_ego_m: np.ndarray, speed_mps: float, times_s: np.ndarray,
                min_speed_mps: float = 1.0, max_offset_m: float = 5.0, source: str = "route") -> Prior:
    """Follow the route from the point nearest the ego at max(speed, min_speed) for each time.

    Args:
        route_ego_m: (N, 2) route points, ego frame, in driving order.
        speed_mps: ego speed; reversing or standing still uses min_speed_mps.
        times_s: (T,) times after now, s.
    Returns:
        A Prior whose (T, 2) points lie on the route (extended straight past its end when the
        route is shorter than the horizon), or no prior with the reason.
    """
    route = np.asarray(route_ego_m, dtype=np.float64)
    if route.ndim != 2 or route.shape[1] != 2 or len(route) == 0:
        return no_prior(f"{source} is empty or not (N, 2) (shape {route.shape})")
    if not np.all(np.isfinite(route)):
        return no_prior(f"{source} has {int((~np.isfinite(route)).any(axis=1).sum())} non-finite points")
    if not np.isfinite(speed_mps):
        return no_prior(f"ego speed is not finite ({speed_mps})")
    route = distinct_points(route)
    if len(route) < 2:
        return no_prior(f"{source} has {len(route)} distinct point; need at least 2")
    s_ego, offset_m = closest_arc_length(route)
    if offset_m > max_offset_m:
        return no_prior(f"{source} passes {offset_m:.1f} m from the ego (> {max_offset_m:.1f} m)")
    remaining_m = arc_lengths(route)[-1] - s_ego
    if remaining_m < DUPLICATE_M:
        return no_prior(f"{source} ends at or behind the ego")
    speed = max(float(speed_mps), min_speed_mps)
    travel_m = speed * np.asarray(times_s, dtype=np.float64)
    points = sample_at_arc_lengths(route, s_ego + travel_m)
    detail = f"{source}: {len(route)} points, {remaining_m:.0f} m ahead, {offset_m:.1f} m off, {speed:.1f} m/s"
    if travel_m[-1] > remaining_m:
        detail += f"; extended {travel_m[-1] - remaining_m:.1f} m straight past its end"
    return Prior(points.astype(np.float32), source, detail)


def constant_turn_rate_prior(speed_mps: float, yaw_rate_rps: float, times_s: np.ndarray) -> Prior:
    """Roll out the ego's current speed and yaw rate (CTRV) from the ego origin."""
    if not (np.isfinite(speed_mps) and np.isfinite(yaw_rate_rps)):
        return no_prior(f"ego speed {speed_mps} or yaw rate {yaw_rate_rps} is not finite")
    t = np.asarray(times_s, dtype=np.float64)
    v, w = float(speed_mps), float(yaw_rate_rps)
    if abs(w) < 1e-6:
        points = np.stack([v * t, np.zeros_like(t)], axis=1)
    else:
        points = np.stack([v / w * np.sin(w * t), v / w * (1.0 - np.cos(w * t))], axis=1)
    return Prior(points.astype(np.float32), "constant_velocity", f"constant_velocity: {v:.1f} m/s, {w:.3f} rad/s")


def select_prior(settings: PriorSettings, times_s: np.ndarray, ego_speed_mps: float | None,
                 ego_yaw_rate_rps: float | None, route_ego_m: np.ndarray | None,
                 external_ego_m: np.ndarray | None = None) -> Prior:
    """Build the configured prior, falling back to a CTRV rollout when allowed.

    Without ego motion (no fresh odometry) there is no prior: the frame then runs to full depth.
    """
    if ego_speed_mps is None or ego_yaw_rate_rps is None:
        return no_prior("no fresh odometry: ego speed unknown")
    if settings.source == "constant_velocity":
        return constant_turn_rate_prior(ego_speed_mps, ego_yaw_rate_rps, times_s)
    path = route_ego_m if settings.source == "route" else external_ego_m
    if path is None:
        prior = no_prior(f"no fresh {settings.source} input")
    else:
        prior = route_prior(path, ego_speed_mps, times_s, settings.min_speed_mps,
                            settings.max_route_offset_m, source=settings.source)
    if prior.is_valid or not settings.fallback_to_constant_velocity:
        return prior
    fallback = constant_turn_rate_prior(ego_speed_mps, ego_yaw_rate_rps, times_s)
    return Prior(fallback.trajectory_m, fallback.source, f"{fallback.detail} (fallback: {prior.detail})")
