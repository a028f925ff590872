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
from deead_ros.parameters import choices, default

PRIOR_SOURCES = choices("prior.source")


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
    """Prior parameters (names match the ROS parameters under `prior.`; defaults from the parameter table)."""

    source: str = default("prior.source")                         # route | constant_velocity | external
    min_speed_mps: float = default("prior.min_speed_mps")         # route travelled at max(speed, this)
    max_route_offset_m: float = default("prior.max_route_offset_m")   # a route farther than this is rejected
    fallback_to_constant_velocity: bool = default("prior.fallback_to_constant_velocity")

    def problem(self) -> str | None:
        """Return why these settings are invalid, or None."""
        if self.source not in PRIOR_SOURCES:
            return f"prior.source='{self.source}' is unknown; use one of {', '.join(PRIOR_SOURCES)}"
        if not np.isfinite(self.min_speed_mps) or self.min_speed_mps < 0:
            return f"prior.min_speed_mps={self.min_speed_mps} must be >= 0 m/s"
        if not np.isfinite(self.max_route_offset_m) or self.max_route_offset_m <= 0:
            return f"prior.max_route_offset_m={self.max_route_offset_m} must be > 0 m"
        return None

    def route_ahead(self, route_ego_m: np.ndarray | None, source: str = "route") -> RouteAhead | str:
        """The route as the prior and the model's route input use it, or why it is unusable."""
        if route_ego_m is None:
            return f"no fresh {source} input"
        return route_ahead(route_ego_m, self.max_route_offset_m, self.min_speed_mps, source)


@dataclass(frozen=True, slots=True)
class RouteAhead:
    """A usable route from the point nearest the ego, and the speed the prior travels it at.

    The controller's prior and a model's route tokens are both read from this one object, so a prior
    parameter changed on a running node moves them together.
    """

    polyline_m: np.ndarray       # (N, 2) distinct points, ego frame, driving order
    start_m: float               # arc length of the point nearest the ego
    offset_m: float              # distance from the ego to that point
    remaining_m: float           # route length ahead of that point
    min_speed_mps: float         # the route is travelled at max(ego speed, this)
    source: str                  # route | external

    def at_distances(self, distances_m: np.ndarray) -> np.ndarray:
        """Points (K, 2) float64 at these distances along the route past the ego (straight on past its end)."""
        return sample_at_arc_lengths(self.polyline_m, self.start_m + np.asarray(distances_m, dtype=np.float64))

    def travel_speed(self, speed_mps: float) -> float:
        """The speed the prior assumes: the ego's, but at least min_speed_mps (standing, reversing)."""
        return max(float(speed_mps), self.min_speed_mps)

    def at_times(self, speed_mps: float, times_s: np.ndarray) -> np.ndarray:
        """Where the ego would be after each time (T,) driving the route at travel_speed(speed): (T, 2)."""
        return self.at_distances(self.travel_speed(speed_mps) * np.asarray(times_s, dtype=np.float64))


def route_ahead(route_ego_m: np.ndarray, max_offset_m: float, min_speed_mps: float,
                source: str = "route") -> RouteAhead | str:
    """Check a route (N, 2) in the ego frame and locate the ego on it; return the reason when unusable."""
    route = np.asarray(route_ego_m, dtype=np.float64)
    if route.ndim != 2 or route.shape[1] != 2 or len(route) == 0:
        return f"{source} is empty or not (N, 2) (shape {route.shape})"
    if not np.all(np.isfinite(route)):
        return f"{source} has {int((~np.isfinite(route)).any(axis=1).sum())} non-finite points"
    route = distinct_points(route)
    if len(route) < 2:
        return f"{source} has {len(route)} distinct point; need at least 2"
    s_ego, offset_m = closest_arc_length(route)
    if not offset_m <= max_offset_m:
        return f"{source} passes {offset_m:.1f} m from the ego (> {max_offset_m:.1f} m)"
    remaining_m = arc_lengths(route)[-1] - s_ego
    if remaining_m < DUPLICATE_M:
        return f"{source} ends at or behind the ego"
    return RouteAhead(route, s_ego, offset_m, remaining_m, min_speed_mps, source)


def prior_along(route: RouteAhead, speed_mps: float, times_s: np.ndarray) -> Prior:
    """Follow the route from the point nearest the ego at max(speed, min_speed) for each time."""
    if not np.isfinite(speed_mps):
        return no_prior(f"ego speed is not finite ({speed_mps})")
    speed = route.travel_speed(speed_mps)
    travel_m = speed * float(np.max(times_s))
    detail = (f"{route.source}: {len(route.polyline_m)} points, {route.remaining_m:.0f} m ahead, "
              f"{route.offset_m:.1f} m off, {speed:.1f} m/s")
    if travel_m > route.remaining_m:
        detail += f"; extended {travel_m - route.remaining_m:.1f} m straight past its end"
    return Prior(route.at_times(speed_mps, times_s).astype(np.float32), route.source, detail)


def route_prior(route_ego_m: np.ndarray, speed_mps: float, times_s: np.ndarray,
                min_speed_mps: float = default("prior.min_speed_mps"),
                max_offset_m: float = default("prior.max_route_offset_m"), source: str = "route") -> Prior:
    """The route prior of a raw route (N, 2): route_ahead, then prior_along; or no prior with the reason."""
    route = route_ahead(route_ego_m, max_offset_m, min_speed_mps, source)
    return no_prior(route) if isinstance(route, str) else prior_along(route, speed_mps, times_s)


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
                 ego_yaw_rate_rps: float | None, route: RouteAhead | str,
                 external_ego_m: np.ndarray | None = None) -> Prior:
    """Build the configured prior, falling back to a CTRV rollout when allowed.

    Args:
        route: the route from settings.route_ahead, or why there is none.
        external_ego_m: an external planner's path in the ego frame (prior.source = external).
    Without ego motion (no fresh odometry) there is no prior: the frame then runs to full depth.
    """
    if ego_speed_mps is None or ego_yaw_rate_rps is None:
        return no_prior("no fresh odometry: ego speed unknown")
    if settings.source == "constant_velocity":
        return constant_turn_rate_prior(ego_speed_mps, ego_yaw_rate_rps, times_s)
    if settings.source == "external":
        route = settings.route_ahead(external_ego_m, source="external")
    prior = no_prior(route) if isinstance(route, str) else prior_along(route, ego_speed_mps, times_s)
    if prior.is_valid or not settings.fallback_to_constant_velocity:
        return prior
    fallback = constant_turn_rate_prior(ego_speed_mps, ego_yaw_rate_rps, times_s)
    return Prior(fallback.trajectory_m, fallback.source, f"{fallback.detail} (fallback: {prior.detail})")
