"""A plan's motion per waypoint (deead_ros.trajectory_kinematics): what the Autoware trajectory carries."""
import math

import numpy as np
import pytest

from deead_ros.geometry import path_headings, quaternion_from_yaw, yaw_from_quaternion
from deead_ros.trajectory_kinematics import trajectory_kinematics

DT = 0.5
TIMES = DT * np.arange(1, 7)


def test_a_constant_speed_circle_has_its_speed_heading_and_turn_rate():
    radius, speed = 20.0, 8.0                      # a left turn: yaw rate v / r
    yaw_rate = speed / radius
    angles = yaw_rate * TIMES
    points = np.stack([radius * np.sin(angles), radius * (1.0 - np.cos(angles))], axis=1)
    motion = trajectory_kinematics(points, TIMES)
    chord = 2.0 * radius * math.sin(yaw_rate * DT / 2.0) / DT       # the speed along each straight segment
    np.testing.assert_allclose(motion.speed_mps, chord, rtol=1e-12)
    np.testing.assert_allclose(motion.accel_mps2, 0.0, atol=1e-9)
    # each segment's direction is the chord's: halfway between the angles at its ends
    np.testing.assert_allclose(motion.yaw_rad, angles - yaw_rate * DT / 2.0, atol=1e-12)
    np.testing.assert_allclose(motion.yaw_rate_rps, yaw_rate, rtol=1e-9)
    np.testing.assert_array_equal(motion.times_s, TIMES)
    np.testing.assert_array_equal(motion.points_m, points)


def test_speeding_up_straight_ahead():
    accel = 2.0
    times = DT * np.arange(0, 7)
    points = np.stack([5.0 * times + 0.5 * accel * times**2, np.zeros_like(times)], axis=1)
    motion = trajectory_kinematics(points, times)
    midpoints = 5.0 + accel * (times[1:] - DT / 2.0)        # a segment's mean speed: the speed at its middle
    np.testing.assert_allclose(motion.speed_mps[1:], midpoints)
    assert motion.speed_mps[0] == motion.speed_mps[1], "the first point takes the first segment's speed"
    np.testing.assert_allclose(motion.accel_mps2, accel)      # the first point's: the first segment's, like its speed
    np.testing.assert_allclose(motion.yaw_rad, 0.0)
    np.testing.assert_allclose(motion.yaw_rate_rps, 0.0)


def test_a_stopped_plan_stands_still_facing_ahead():
    motion = trajectory_kinematics(np.zeros((6, 2)), TIMES)
    for values in (motion.speed_mps, motion.accel_mps2, motion.yaw_rad, motion.yaw_rate_rps):
        np.testing.assert_array_equal(values, 0.0)


def test_a_plan_that_stops_keeps_its_heading():
    points = np.array([[2.0, 2.0], [4.0, 4.0], [4.0, 4.0], [4.0, 4.0]])
    motion = trajectory_kinematics(points, TIMES[:4])
    np.testing.assert_allclose(motion.yaw_rad, math.pi / 4)        # not back to the ego's heading at the stop
    np.testing.assert_allclose(motion.yaw_rate_rps, 0.0)
    np.testing.assert_allclose(motion.speed_mps, [2 * math.sqrt(2) / DT] * 2 + [0.0, 0.0])


def test_a_single_point_has_no_segment():
    motion = trajectory_kinematics(np.array([[3.0, 3.0]]), np.array([DT]))
    assert motion.speed_mps.tolist() == motion.accel_mps2.tolist() == motion.yaw_rate_rps.tolist() == [0.0]
    assert motion.yaw_rad.tolist() == pytest.approx([math.pi / 4]), "facing the step from the ego"


def test_a_heading_across_pi_turns_smoothly():
    angles = np.linspace(0.4 * math.pi, 0.6 * math.pi, 7)       # round a circle to the left: heading angle + 90 deg
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 10.0 + [[0.0, -10.0]]
    motion = trajectory_kinematics(points[1:], TIMES)
    assert motion.yaw_rad.max() > 3.0 and motion.yaw_rad[2:].min() < -3.0, "the headings cross +-pi"
    # from the third point on (the first heading is the step from the ego, here far off the circle)
    np.testing.assert_allclose(motion.yaw_rate_rps[2:], (angles[1] - angles[0]) / DT, rtol=1e-9)


@pytest.mark.parametrize("times, message", [([0.5, 0.5], "increase strictly"), ([0.5], "2 waypoints but 1 times")])
def test_times_that_do_not_fit_are_refused(times, message):
    with pytest.raises(ValueError, match=message):
        trajectory_kinematics(np.zeros((2, 2)), np.array(times))


def test_quaternion_from_yaw_is_the_inverse_of_yaw_from_quaternion():
    yaws = np.array([-3.0, -1.0, 0.0, 0.5, 3.1])
    quaternions = quaternion_from_yaw(yaws)
    assert quaternions.shape == (5, 4)
    np.testing.assert_allclose(np.linalg.norm(quaternions, axis=1), 1.0)
    assert [yaw_from_quaternion(*q) for q in quaternions] == pytest.approx(yaws.tolist())
    np.testing.assert_array_equal(path_headings(np.zeros((0, 2))), np.zeros(0))


def test_two_points_have_one_segment_and_no_acceleration():
    motion = trajectory_kinematics(np.array([[4.0, 0.0], [8.0, 0.0]]), TIMES[:2])
    assert motion.speed_mps.tolist() == [8.0, 8.0] and motion.accel_mps2.tolist() == [0.0, 0.0]
