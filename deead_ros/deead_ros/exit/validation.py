"""Check a planned trajectory before it leaves the node, and the fallbacks for when it fails.

Why: a NaN or a 900 km waypoint that reaches a controller is worse than a dropped frame (like
Autoware's planning validator: finite values, speed, acceleration, curvature, lateral acceleration).
An early exit that fails goes deeper; a full-depth plan that fails is replaced by a flagged
fallback: the node prefers `carry_forward` of the last valid plan, else `stopping_trajectory`.
Ego frame: x forward, y left, metres (REP 103); waypoint k is at time (k + 1) * dt after the
camera stamp and the ego itself, at the origin, is the plan's point at t = 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from deead_ros.geometry import to_ego_frame
from deead_ros.parameters import default

VALIDATION_CODES = ("ok", "non_finite", "shape", "speed", "acceleration", "deceleration",
                    "lateral_acceleration", "curvature", "first_point")
FALLBACKS = ("", "carry_forward", "stop")   # what was published instead of a failing plan ("" = the plan)
DEFAULT_STOP_DECEL_MPS2 = default("validation.stop_decel_mps2")   # comfortable braking for the stopping fallback


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """Plausibility limits and the fallback's settings (names match the ROS parameters under `validation.`)."""

    max_speed_mps: float = default("validation.max_speed_mps")          # segment speed between consecutive points
    max_accel_mps2: float = default("validation.max_accel_mps2")        # longitudinal speed-up
    max_decel_mps2: float = default("validation.max_decel_mps2")        # longitudinal braking (a positive number)
    max_lateral_accel_mps2: float = default("validation.max_lateral_accel_mps2")   # v^2 * curvature at a waypoint
    max_curvature_1pm: float = default("validation.max_curvature_1pm")  # 1 / turning radius, 1/m
    min_segment_m: float = default("validation.min_segment_m")          # curvature only where both segments are longer
    max_first_point_error_m: float = default("validation.max_first_point_error_m")   # vs speed * dt straight ahead
    stop_decel_mps2: float = default("validation.stop_decel_mps2")      # braking of the stopping fallback
    max_carry_forward_s: float = default("validation.max_carry_forward_s")   # oldest plan carried forward; 0: stop

    def problem(self) -> str | None:
        """Return why these limits are invalid, or None."""
        for f in fields(self):
            value = getattr(self, f.name)
            at_least_zero = f.name == "max_carry_forward_s"
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and (value >= 0 if at_least_zero else value > 0)):
                return f"validation.{f.name}={value} must be a finite number {'>= 0' if at_least_zero else '> 0'}"
        if self.stop_decel_mps2 > self.max_decel_mps2:
            return (f"validation.stop_decel_mps2={self.stop_decel_mps2} must not exceed validation.max_decel_mps2="
                    f"{self.max_decel_mps2}: the stopping fallback would fail its own check")
        return None

    def with_updates(self, updates: dict[str, Any]) -> "ValidationLimits":
        """Return a copy with `updates` applied (keys are field names)."""
        return replace(self, **updates)


@dataclass(frozen=True, slots=True)
class Validation:
    """The verdict on one trajectory."""

    ok: bool
    reason: str        # "" when ok; else the first violated check with its value, limit and waypoint
    code: str          # one of VALIDATION_CODES

    def __bool__(self) -> bool:
        return self.ok


VALID = Validation(True, "", "ok")


def _fail(code: str, reason: str) -> Validation:
    return Validation(False, reason, code)


def _point(i: int) -> str:
    """Name point i of the plan with the ego prepended (0 = the ego, k = waypoint k - 1)."""
    return "the ego" if i == 0 else f"waypoint {i - 1}"


def validate(trajectory_m: object, dt_s: float, ego_speed_mps: float | None,
             limits: ValidationLimits = ValidationLimits()) -> Validation:
    """Check a plan in order: shape, finite, first point, speed, accel, decel, lateral accel, curvature.

    Args:
        trajectory_m: (T, 2) waypoints in the ego frame at dt, 2 dt, ... T dt; anything else fails
            with code `shape` (never raises).
        dt_s: time between waypoints, s.
        ego_speed_mps: the ego's signed speed at the camera stamp; None (or non-finite) when unknown,
            which skips the first-point check and the acceleration from the ego to the first segment.
        limits: the thresholds.
    Returns:
        VALID, or the first violation with the measured value, the limit and the waypoint.
    """
    try:
        plan = np.asarray(trajectory_m, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        return _fail("shape", f"trajectory is not a numeric array ({err})")
    if plan.ndim != 2 or plan.shape[1] != 2 or plan.shape[0] == 0:
        return _fail("shape", f"trajectory shape {plan.shape} is not (T, 2) with T >= 1")
    if not np.isfinite(plan).all():
        bad = ~np.isfinite(plan).all(axis=1)
        return _fail("non_finite", f"waypoint {int(np.argmax(bad))} is NaN or inf ({int(bad.sum())} of {len(plan)})")
    if not (math.isfinite(dt_s) and dt_s > 0):
        return _fail("shape", f"time step dt_s={dt_s} must be finite and > 0; take it from the model manifest")
    known = ego_speed_mps is not None and math.isfinite(ego_speed_mps)
    ego_mps = float(ego_speed_mps) if ego_speed_mps is not None and known else 0.0
    z = np.ascontiguousarray(plan).view(np.complex128)[:, 0]          # (T,) waypoints as x + iy
    with np.errstate(all="ignore"):           # huge waypoints overflow to inf, and inf fails the checks
        if known:
            error = abs(complex(z[0]) - ego_mps * dt_s)
            if not error <= limits.max_first_point_error_m:
                return _fail("first_point", f"first waypoint {error:.4g} m from where the ego would be after "
                             f"{dt_s:g} s at {ego_mps:.1f} m/s > validation.max_first_point_error_m "
                             f"{limits.max_first_point_error_m:g}")
        seg = np.empty_like(z)                                         # (T,): from the ego, then between waypoints
        seg[0] = z[0]
        np.subtract(z[1:], z[:-1], out=seg[1:])
        length = np.abs(seg)
        speed = length / dt_s                                          # mean speed on each segment
        i = int(speed.argmax())
        if not speed[i] <= limits.max_speed_mps:
            return _fail("speed", f"speed {speed[i]:.4g} m/s between {_point(i)} and {_point(i + 1)} > "
                         f"validation.max_speed_mps {limits.max_speed_mps:g}")
        # Segment means sit at (k + 0.5) dt and the ego's speed at 0, half a step before the first one;
        # accel[k] is the change around point k (0 = the ego; 0.0 there when the ego's speed is unknown).
        accel = np.empty_like(speed)
        accel[0] = (speed[0] - abs(ego_mps)) * 2.0 if known else 0.0
        np.subtract(speed[1:], speed[:-1], out=accel[1:])
        accel /= dt_s
        i = int(accel.argmax())
        if accel[i] > limits.max_accel_mps2:
            return _fail("acceleration", f"acceleration {accel[i]:.4g} m/s2 at {_point(i)} > "
                         f"validation.max_accel_mps2 {limits.max_accel_mps2:g}")
        i = int(accel.argmin())
        if -accel[i] > limits.max_decel_mps2:
            return _fail("deceleration", f"deceleration {-accel[i]:.4g} m/s2 at {_point(i)} > "
                         f"validation.max_decel_mps2 {limits.max_decel_mps2:g}")
        if len(seg) < 2:
            return VALID
        # At waypoints 0..T-2: turning angle between the segments around it over their mean length.
        # With mean speed = mean length / dt, lateral acceleration v^2 * curvature = turn * mean length / dt^2.
        turn = np.abs(np.angle(seg[1:] * seg[:-1].conj()))
        turn *= np.minimum(length[:-1], length[1:]) > limits.min_segment_m   # a standing plan's noise
        mean_length = 0.5 * (length[:-1] + length[1:])
        lateral = turn * mean_length / (dt_s * dt_s)
        i = int(lateral.argmax())
        if lateral[i] > limits.max_lateral_accel_mps2:
            return _fail("lateral_acceleration", f"lateral acceleration {lateral[i]:.4g} m/s2 at {_point(i + 1)} > "
                         f"validation.max_lateral_accel_mps2 {limits.max_lateral_accel_mps2:g}")
        curvature = turn / np.maximum(mean_length, limits.min_segment_m)
        i = int(curvature.argmax())
        if curvature[i] > limits.max_curvature_1pm:
            return _fail("curvature", f"curvature {curvature[i]:.3g} 1/m at {_point(i + 1)} > "
                         f"validation.max_curvature_1pm {limits.max_curvature_1pm:g}")
    return VALID


def stopping_trajectory(speed_mps: float | None, times_s: np.ndarray,
                        decel_mps2: float = DEFAULT_STOP_DECEL_MPS2) -> np.ndarray:
    """Brake straight ahead from the current speed at `decel_mps2` and stay stopped; never reverse.

    A negative, unknown or non-finite speed stands still at the origin. Returns (T, 2) float32.
    Raises ValueError when decel_mps2 is not finite and > 0 (a configuration error, checked at startup).
    """
    if not (math.isfinite(decel_mps2) and decel_mps2 > 0):
        raise ValueError(f"stopping deceleration {decel_mps2} must be finite and > 0 m/s2")
    v = float(speed_mps) if speed_mps is not None and math.isfinite(speed_mps) and speed_mps > 0 else 0.0
    t = np.minimum(np.asarray(times_s, dtype=np.float64), v / decel_mps2)   # stopped after v / decel
    x = v * t - 0.5 * decel_mps2 * t * t
    return np.stack([x, np.zeros_like(x)], axis=1).astype(np.float32)


def carry_forward(previous_m: np.ndarray, previous_times_s: np.ndarray, elapsed_s: float, dx: float, dy: float,
                  dyaw: float, times_s: np.ndarray) -> np.ndarray | None:
    """Re-express the previous valid plan in the current ego frame at the new times.

    Args:
        previous_m: (T, 2) the last valid plan, in the ego frame of its own camera stamp.
        previous_times_s: (T,) its times after that stamp, increasing and > 0.
        elapsed_s: time from that stamp to the current one, s (>= 0).
        dx, dy, dyaw: the current ego pose in the old ego frame (m, m, rad).
        times_s: (T',) the new plan's times after the current stamp.
    Returns:
        (T', 2) float32 points on the old plan at elapsed + t (linear in time, the old ego at t = 0;
        past its last point it continues at its last segment's velocity), or None when the inputs are
        non-finite or malformed, or the old plan ends before the new first point (too old).
    """
    try:
        old = np.asarray(previous_m, dtype=np.float64)
        old_t = np.asarray(previous_times_s, dtype=np.float64)
        new_t = np.asarray(times_s, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if old.ndim != 2 or old.shape[1] != 2 or old_t.shape != (len(old),) or new_t.ndim != 1 or len(new_t) == 0:
        return None
    scalars = (elapsed_s, dx, dy, dyaw)
    if not (all(math.isfinite(v) for v in scalars) and np.isfinite(old).all() and np.isfinite(old_t).all()
            and np.isfinite(new_t).all()) or elapsed_s < 0 or len(old) == 0:
        return None
    t_axis = np.concatenate([[0.0], old_t])                         # (T + 1,): the old ego at t = 0
    if np.any(np.diff(t_axis) <= 0):
        return None
    query = elapsed_s + new_t
    if query[0] > t_axis[-1]:
        return None
    xy = np.concatenate([np.zeros((1, 2)), old])
    points = np.stack([np.interp(query, t_axis, xy[:, 0]), np.interp(query, t_axis, xy[:, 1])], axis=1)
    velocity = (xy[-1] - xy[-2]) / (t_axis[-1] - t_axis[-2])
    points += np.maximum(query - t_axis[-1], 0.0)[:, None] * velocity
    return to_ego_frame(points, dx, dy, dyaw).astype(np.float32)
