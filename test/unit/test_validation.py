"""Trajectory validation: plausible plans pass, impossible ones fail with a code and a reason; the fallbacks."""
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from deead_ros.exit.validation import (VALIDATION_CODES, ValidationLimits, carry_forward, stopping_trajectory,
                                       validate)
from test.expect import reported
from test.strategies import DT_S, HORIZON

TIMES = np.arange(1, HORIZON + 1) * DT_S


def straight(speed_mps=10.0, times=TIMES):
    return np.stack([speed_mps * times, np.zeros_like(times)], axis=1)


def arc(speed_mps, radius_m, times=TIMES):
    """Points on a left circle of radius_m driven at speed_mps from the origin, heading +x."""
    angle = speed_mps * times / radius_m
    return np.stack([radius_m * np.sin(angle), radius_m * (1.0 - np.cos(angle))], axis=1)


def check(plan, speed=10.0, limits=ValidationLimits(), dt=DT_S):
    result = validate(plan, dt, speed, limits)
    assert result.code in VALIDATION_CODES, f"unknown code {result.code}"
    assert result.ok == (result.code == "ok") and (result.reason == "") == result.ok, result
    return result


def test_straight_10_mps_passes():
    assert check(straight(10.0)).ok
    assert check(straight(10.0), speed=None).ok
    assert check(straight(10.0).astype(np.float32)).ok


def test_plausible_curve_passes():
    # 10 m/s on a 25 m radius: 4 m/s2 lateral, curvature 0.04 1/m.
    assert check(arc(10.0, 25.0)).ok
    # a slow tight turn (5 m radius at 3 m/s) is still plausible
    assert check(arc(3.0, 5.0), speed=3.0).ok


@pytest.mark.parametrize("plan, code", [
    (np.full((6, 2), np.nan), "non_finite"),
    (np.array([[5.0, 0.0], [np.inf, 0.0], [15.0, 0.0]]), "non_finite"),
    (np.array([[5.0, 0.0], [10.0, -np.inf]]), "non_finite"),
    (np.zeros((0, 2)), "shape"),
    (np.zeros((6, 3)), "shape"),
    (np.zeros(12), "shape"),
    (np.zeros((2, 6, 2)), "shape"),
    ([[1.0, 2.0], [3.0]], "shape"),
    ("not a plan", "shape"),
    (None, "shape"),
])
def test_malformed_plans_fail_and_never_raise(plan, code):
    result = check(plan)
    assert not result.ok and result.code == code, result


def test_non_finite_reason_names_the_waypoint():
    plan = straight()
    plan[3, 1] = np.nan
    assert "waypoint 3" in check(plan).reason


def test_bad_time_step_fails_without_raising():
    assert check(straight(), dt=0.0).code == "shape"
    assert check(straight(), dt=float("nan")).code == "shape"


def test_huge_waypoints_fail_on_speed():
    result = check(np.full((6, 2), 1e9), speed=None)
    assert result.code == "speed" and "between the ego and waypoint 0" in result.reason
    assert "validation.max_speed_mps 60" in result.reason
    assert check(np.full((6, 2), 1e300), speed=None).code == "speed"
    assert check(np.full((6, 2), 1e9), speed=10.0).code == "first_point"   # does not start at the ego


def test_speed_reason_names_value_limit_and_segment():
    plan = straight()
    plan[3:] += [60.0, 0.0]                      # a 65 m step between waypoints 2 and 3 in 0.5 s
    result = check(plan, speed=None)
    assert result.code == "speed", result
    assert result.reason == "speed 130 m/s between waypoint 2 and waypoint 3 > validation.max_speed_mps 60"


def test_plan_starting_100_m_behind_fails():
    plan = straight() - [100.0, 0.0]
    assert check(plan).code == "first_point"
    assert check(plan, speed=None).code == "speed"


def test_first_point_beside_the_ego_fails():
    plan = straight() + [0.0, 6.0]               # right speed, 6 m to the left
    result = check(plan)
    assert result.code == "first_point" and "6 m" in result.reason, result


def test_hard_kink_at_speed_fails():
    plan = np.array([[5.0, 0.0], [10.0, 0.0], [15.0, 0.0], [15.0, 5.0], [15.0, 10.0], [15.0, 15.0]])
    result = check(plan)
    assert result.code in ("lateral_acceleration", "curvature"), result
    assert "waypoint 2" in result.reason


def test_tight_curve_fails_on_curvature():
    plan = arc(1.8, 0.5)                          # 0.5 m radius at walking pace: 6.5 m/s2, 2 1/m
    assert check(plan, speed=1.8).code == "curvature"


def test_standing_still_with_noise_passes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        noise = rng.uniform(-0.008, 0.008, (6, 2))
        assert check(noise, speed=0.0).ok, check(noise, speed=0.0)
        assert check(noise, speed=None).ok


COMFORT = ValidationLimits(max_accel_mps2=10.0, max_decel_mps2=12.0, max_lateral_accel_mps2=10.0)


def test_braking_within_limits_passes_and_too_hard_fails():
    assert check(stopping_trajectory(10.0, TIMES, 8.0), limits=COMFORT).ok
    plan = straight(20.0)
    plan[2:] = plan[1]                            # 20 m/s to a standstill within half a second
    result = check(plan, speed=20.0, limits=COMFORT)
    assert result.code == "deceleration" and "validation.max_decel_mps2 12" in result.reason, result
    assert check(plan, speed=20.0).code == "deceleration", "40 m/s2 is beyond the default limit too"


def test_deceleration_against_the_ego_speed():
    # the plan stands still while the ego drives at 15 m/s: 60 m/s2 from the ego to the first segment
    result = check(np.zeros((6, 2)), speed=15.0, limits=ValidationLimits(max_first_point_error_m=10.0))
    assert result.code == "deceleration" and "at the ego" in result.reason, result
    assert check(np.zeros((6, 2)), speed=None).ok          # unknown speed: nothing to compare with


def test_acceleration_check():
    t = TIMES
    assert check(np.stack([10.0 * t + 2.0 * t * t, 0 * t], 1), limits=COMFORT).ok          # +4 m/s2
    assert check(np.stack([10.0 * t + 8.0 * t * t, 0 * t], 1), limits=COMFORT).code == "acceleration"   # +16
    assert check(np.stack([10.0 * t + 8.0 * t * t, 0 * t], 1)).ok, "16 m/s2: within the default (noise) bound"
    fast = ValidationLimits(max_speed_mps=200.0)
    assert check(np.stack([10.0 * t + 15.0 * t * t, 0 * t], 1), limits=fast).code == "acceleration"   # +30 m/s2


def test_limits_problem():
    assert ValidationLimits().problem() is None
    assert "validation.max_speed_mps" in reported(ValidationLimits(max_speed_mps=0.0).problem())
    assert "validation.min_segment_m" in reported(ValidationLimits(min_segment_m=float("nan")).problem())
    assert "must be" in reported(ValidationLimits(max_decel_mps2=-1.0).problem())
    assert "finite" in reported(ValidationLimits(max_speed_mps=float("inf")).problem())
    assert ValidationLimits(max_carry_forward_s=0.0).problem() is None, "0: never carry forward, always stop"
    assert ">= 0" in reported(ValidationLimits(max_carry_forward_s=-1.0).problem())
    assert "stopping fallback" in reported(ValidationLimits(stop_decel_mps2=13.0, max_decel_mps2=12.0).problem())


def test_limits_take_their_defaults_from_the_parameter_table():
    from dataclasses import fields

    from deead_ros.parameters import SPECS
    for f in fields(ValidationLimits):
        spec = SPECS[f"validation.{f.name}"]
        assert spec.range is not None, f"{spec.name} has no range"
        assert getattr(ValidationLimits(), f.name) == spec.default and spec.range[0] <= spec.default <= spec.range[1]
    assert ValidationLimits().with_updates({"max_speed_mps": 5.0}).max_speed_mps == 5.0


def test_validate_is_cheap():
    plan = arc(10.0, 50.0).astype(np.float32)
    validate(plan, DT_S, 10.0)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        validate(plan, DT_S, 10.0)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    assert per_call_us < 250, f"validate took {per_call_us:.0f} us per call (~30 us expected)"


@given(arrays(np.float64, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=8),
              elements=st.floats(allow_nan=True, allow_infinity=True)),
       st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_validate_never_raises(plan, speed):
    result = validate(plan, DT_S, speed)
    assert result.code in VALIDATION_CODES
    assert result.ok == (result.code == "ok")
    if result.ok:
        assert plan.shape[-1:] == (2,) and np.isfinite(plan).all()


@given(arrays(np.float32, (HORIZON, 2), elements=st.floats(width=32)), st.floats(-1e30, 1e30))
def test_validate_never_raises_on_plans_of_the_right_shape(plan, speed):
    result = validate(plan, DT_S, speed)
    assert result.ok or result.reason


def test_stopping_trajectory_brakes_monotonically_and_stops():
    plan = stopping_trajectory(10.0, TIMES, 3.0)
    assert plan.shape == (HORIZON, 2) and plan.dtype == np.float32
    assert np.all(np.diff(plan[:, 0]) >= 0) and plan[0, 0] > 0 and np.all(plan[:, 1] == 0)
    np.testing.assert_allclose(plan[0, 0], 10.0 * 0.5 - 1.5 * 0.25, atol=1e-5)
    long_times = np.arange(1, 13) * 0.5
    stopped = stopping_trajectory(10.0, long_times, 3.0)
    np.testing.assert_allclose(stopped[-3:, 0], 100.0 / 6.0, atol=1e-4)        # v^2 / 2a, then stays
    assert check(stopped, speed=10.0).ok


@pytest.mark.parametrize("speed", [0.0, -3.0, None, float("nan")])
def test_stopping_trajectory_without_forward_speed_stands_still(speed):
    np.testing.assert_array_equal(stopping_trajectory(speed, TIMES, 3.0), np.zeros((HORIZON, 2)))


def test_stopping_trajectory_rejects_bad_decel():
    with pytest.raises(ValueError, match="deceleration"):
        stopping_trajectory(10.0, TIMES, 0.0)


def carried(plan, elapsed_s, dx, dy, dyaw) -> np.ndarray:
    """carry_forward from TIMES to TIMES, which these inputs must allow."""
    moved = carry_forward(plan, TIMES, elapsed_s, dx, dy, dyaw, TIMES)
    assert moved is not None, "carry_forward refused a plan it must carry"
    return moved


def test_carry_forward_without_motion_is_the_same_plan():
    plan = arc(10.0, 30.0)
    np.testing.assert_allclose(carried(plan, 0.0, 0.0, 0.0, 0.0), plan, atol=1e-5)


def test_carry_forward_after_moving_5_m_shifts_the_plan_back():
    moved = carried(straight(10.0), 0.0, 5.0, 0.0, 0.0)
    np.testing.assert_allclose(moved, np.stack([10.0 * TIMES - 5.0, np.zeros(HORIZON)], 1), atol=1e-5)


def test_carry_forward_half_a_step_later_on_the_same_plan():
    # 0.5 s later, 5 m further along a 10 m/s straight plan: the same plan, the last point extended
    again = carried(straight(10.0), 0.5, 5.0, 0.0, 0.0)
    np.testing.assert_allclose(again, straight(10.0), atol=1e-5)
    # 0.25 s later, 2.5 m further: interpolated between the old points
    quarter = carried(straight(10.0), 0.25, 2.5, 0.0, 0.0)
    np.testing.assert_allclose(quarter, straight(10.0), atol=1e-5)


def test_carry_forward_rotates_into_the_new_heading():
    # the ego turned 90 degrees left on the spot: what was ahead is now on its right
    turned = carried(straight(10.0), 0.0, 0.0, 0.0, np.pi / 2)
    np.testing.assert_allclose(turned, np.stack([np.zeros(HORIZON), -10.0 * TIMES], 1), atol=1e-4)


def test_carry_forward_refuses_old_or_bad_plans():
    assert carry_forward(straight(), TIMES, 3.5, 0.0, 0.0, 0.0, TIMES) is None          # ends before 3.5 + 0.5 s
    assert carry_forward(straight(), TIMES, 2.5, 25.0, 0.0, 0.0, TIMES) is not None
    assert carry_forward(straight(), TIMES, float("nan"), 0.0, 0.0, 0.0, TIMES) is None
    assert carry_forward(straight(), TIMES, 0.0, 0.0, float("inf"), 0.0, TIMES) is None
    assert carry_forward(straight(), TIMES, -0.1, 0.0, 0.0, 0.0, TIMES) is None
    assert carry_forward(straight()[:4], TIMES, 0.0, 0.0, 0.0, 0.0, TIMES) is None       # times do not match
    bad = straight()
    bad[2, 0] = np.nan
    assert carry_forward(bad, TIMES, 0.0, 0.0, 0.0, 0.0, TIMES) is None
