"""The one geometry both packages use: the route-end rule, projections, frames and angles."""
import math

import numpy as np
import pytest

from deead_ros import geometry
from deead_ros.geometry import (arc_lengths, closest_arc_length, ego_to_world, project_to_polyline,
                                sample_at_arc_lengths, to_ego_frame, world_to_ego, wrap_angle)
from test.conftest import REPO_ROOT

L_SHAPE = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])


def test_past_the_end_a_route_goes_straight_on_along_its_last_segment():
    points = sample_at_arc_lengths(L_SHAPE, [5.0, 15.0, 20.0, 99.0])
    np.testing.assert_allclose(points, [[5, 0], [10, 5], [10, 10], [10, 89]])


def test_before_the_start_a_route_stays_at_its_first_point():
    np.testing.assert_allclose(sample_at_arc_lengths(L_SHAPE, [-3.0, 0.0]), [[0, 0], [0, 0]])


def test_repeated_points_do_not_change_the_route_and_one_point_is_a_point():
    doubled = np.repeat(L_SHAPE, 2, axis=0)
    np.testing.assert_allclose(sample_at_arc_lengths(doubled, [15.0, 30.0]), sample_at_arc_lengths(L_SHAPE, [15, 30]))
    np.testing.assert_allclose(sample_at_arc_lengths(np.array([[2.0, 3.0]] * 3), [0.0, 5.0]), [[2, 3], [2, 3]])


def test_a_caller_that_must_stay_on_the_route_clamps_its_query():
    length = arc_lengths(L_SHAPE)[-1]
    np.testing.assert_allclose(sample_at_arc_lengths(L_SHAPE, [min(99.0, length)]), [[10, 10]])


def test_no_other_module_resamples_a_polyline():
    """The route-end rule is decided once: no second resampler (np.interp over arc lengths) in either package."""
    offenders = [str(p.relative_to(REPO_ROOT)) for folder in ("deead_ros/deead_ros", "deead_lab/deead_lab")
                 for p in (REPO_ROOT / folder).rglob("*.py")
                 if p.name != "geometry.py" and "def resample" in p.read_text()]
    assert not offenders, offenders


def test_projection_gives_distance_arc_length_and_side():
    d, s, lateral = project_to_polyline(np.array([4.0, 1.5]), L_SHAPE)
    assert (d, s, lateral) == pytest.approx((1.5, 4.0, 1.5))
    d, s, lateral = project_to_polyline(np.array([11.0, 6.0]), L_SHAPE)
    assert (d, s, lateral) == pytest.approx((1.0, 16.0, -1.0))     # right of the northbound leg
    assert closest_arc_length(L_SHAPE - [3.0, 2.0]) == pytest.approx((3.0, 2.0))


def test_ego_frame_round_trip_one_pose_and_one_pose_per_frame():
    rng = np.random.default_rng(0)
    pts, poses = rng.normal(size=(5, 4, 2)) * 20, rng.normal(size=(5, 3))
    np.testing.assert_allclose(ego_to_world(world_to_ego(pts, poses), poses), pts, atol=1e-9)
    ahead_left = world_to_ego(np.array([[1.0, 5.0]]), (1.0, 0.0, math.pi / 2))        # 5 m north of a car facing north
    np.testing.assert_allclose(ahead_left, [[5.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(to_ego_frame(pts[0], *poses[0]), world_to_ego(pts[0], poses[0]))


def test_wrap_angle_keeps_floats_floats_and_arrays_arrays():
    assert isinstance(wrap_angle(3 * math.pi), float) and wrap_angle(3 * math.pi) == pytest.approx(-math.pi)
    np.testing.assert_allclose(wrap_angle(np.array([0.0, 2 * math.pi + 0.1])), [0.0, 0.1])
    assert geometry.DUPLICATE_M > 0
