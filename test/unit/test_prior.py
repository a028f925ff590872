"""Geometry of the planner prior: frames, resampling, and degenerate routes."""
import numpy as np
import pytest

from deead_ros.exit.prior import Prior, PriorSettings, constant_turn_rate_prior, route_prior, select_prior
from deead_ros.geometry import to_ego_frame, yaw_from_quaternion

TIMES = np.arange(1, 7) * 0.5


def trajectory(prior: Prior) -> np.ndarray:
    """The prior's trajectory, which these inputs must produce."""
    assert prior.trajectory_m is not None, f"no prior: {prior.detail}"
    return prior.trajectory_m


def straight_route(start=-20.0, stop=100.0, n=61):
    return np.stack([np.linspace(start, stop, n), np.zeros(n)], axis=1)


def test_straight_route_at_10_mps_gives_points_5_m_apart():
    prior = route_prior(straight_route(), 10.0, TIMES)
    np.testing.assert_allclose(trajectory(prior), np.stack([5.0 * np.arange(1, 7), np.zeros(6)], 1), atol=1e-5)
    assert prior.source == "route"


def test_min_speed_applies_when_standing_still():
    prior = route_prior(straight_route(), 0.0, TIMES, min_speed_mps=2.0)
    np.testing.assert_allclose(trajectory(prior)[:, 0], 2.0 * TIMES, atol=1e-5)


def test_world_route_rotated_and_translated_into_ego_frame():
    yaw = np.deg2rad(90.0)                       # ego at (10, 5) heading north (+y in the world)
    world = np.stack([np.full(50, 10.0), np.linspace(0, 100, 50)], axis=1)
    ego = to_ego_frame(world, 10.0, 5.0, yaw)
    prior = route_prior(ego, 4.0, TIMES)
    np.testing.assert_allclose(trajectory(prior), np.stack([4.0 * TIMES, np.zeros(6)], 1), atol=1e-4)
    left = to_ego_frame(np.array([[9.0, 5.0]]), 10.0, 5.0, yaw)   # west of a north-facing ego is its left
    np.testing.assert_allclose(left, [[0.0, 1.0]], atol=1e-9)


def test_quaternion_yaw():
    half = np.deg2rad(30.0) / 2
    assert yaw_from_quaternion(0.0, 0.0, np.sin(half), np.cos(half)) == pytest.approx(np.deg2rad(30.0))


def test_route_behind_the_ego_is_skipped():
    prior = route_prior(straight_route(-50.0, 50.0), 10.0, TIMES)
    assert trajectory(prior)[0, 0] == pytest.approx(5.0, abs=1e-5)


def test_duplicate_points_are_merged():
    route = np.repeat(straight_route(), 3, axis=0)
    np.testing.assert_allclose(trajectory(route_prior(route, 10.0, TIMES))[:, 0], 10.0 * TIMES, atol=1e-5)


def test_short_route_is_extended_straight_and_says_so():
    route = np.array([[0.0, 0.0], [5.0, 5.0]])
    prior = route_prior(route, 10.0, TIMES)
    expected = (10.0 * TIMES)[:, None] * np.array([1.0, 1.0]) / np.sqrt(2)
    np.testing.assert_allclose(trajectory(prior), expected, atol=1e-4)
    assert "extended" in prior.detail


def test_curved_route_keeps_arc_length():
    theta = np.linspace(0, np.pi / 2, 200)                 # quarter circle of radius 20 m, turning left
    route = np.stack([20 * np.sin(theta), 20 - 20 * np.cos(theta)], axis=1)
    prior = route_prior(route, 5.0, TIMES)
    radius = np.linalg.norm(trajectory(prior) - [0.0, 20.0], axis=1)
    np.testing.assert_allclose(radius, 20.0, atol=0.05)
    assert np.all(trajectory(prior)[:, 1] > 0), "a left turn must bend to +y"


@pytest.mark.parametrize("route, reason", [
    (np.zeros((0, 2)), "empty"),
    (np.array([[1.0, 0.0]]), "1 distinct point"),
    (np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), "1 distinct point"),
    (np.array([[0.0, 0.0], [np.nan, 1.0], [2.0, 0.0]]), "non-finite"),
    (np.array([[0.0, 30.0], [50.0, 30.0]]), "passes 30.0 m from the ego"),
    (np.array([[-40.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]), "ends at or behind the ego"),
    (np.zeros((3, 3)), "not (N, 2)"),
])
def test_degenerate_routes_give_a_reason_never_nan(route, reason):
    prior = route_prior(route, 10.0, TIMES)
    assert prior.trajectory_m is None and prior.source == "none"
    assert reason in prior.detail


def test_constant_turn_rate_rollout():
    straight = trajectory(constant_turn_rate_prior(8.0, 0.0, TIMES))
    np.testing.assert_allclose(straight, np.stack([8.0 * TIMES, np.zeros(6)], 1), atol=1e-6)
    turning = trajectory(constant_turn_rate_prior(10.0, 0.5, TIMES))  # circle of radius 20 m, left
    np.testing.assert_allclose(np.linalg.norm(turning - [0.0, 20.0], axis=1), 20.0, atol=1e-4)


def test_select_prior_falls_back_and_reports_why():
    settings = PriorSettings()
    prior = select_prior(settings, TIMES, 10.0, 0.0, settings.route_ahead(None))
    assert prior.source == "constant_velocity" and "fallback: no fresh route" in prior.detail
    strict = PriorSettings(fallback_to_constant_velocity=False)
    assert select_prior(strict, TIMES, 10.0, 0.0, strict.route_ahead(None)).trajectory_m is None
    assert select_prior(settings, TIMES, None, None, settings.route_ahead(straight_route())).detail.startswith(
        "no fresh odometry")
    external = select_prior(PriorSettings(source="external"), TIMES, 10.0, 0.0, "no route", straight_route())
    assert external.source == "external"


@pytest.mark.parametrize("settings, message", [
    (PriorSettings(source="lidar"), "unknown"),
    (PriorSettings(min_speed_mps=-1.0), ">= 0"),
    (PriorSettings(max_route_offset_m=0.0), "> 0"),
])
def test_prior_settings_problems(settings, message):
    assert message in settings.problem()
