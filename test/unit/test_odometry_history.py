"""The ego state at the camera stamp: interpolation, extrapolation, staleness and resets."""
import math
import random
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deead_ros.errors import ConfigError
from deead_ros.frame_assembly import EgoState
from deead_ros.geometry import wrap_angle
from deead_ros.odometry_history import OdometryHistory, extrapolate


def ego(stamp_s, x=0.0, y=0.0, yaw=0.0, speed=0.0, yaw_rate=0.0, frame="map", accel=0.0):
    return EgoState(x, y, yaw, speed, yaw_rate, frame, stamp_s, accel)


def driving(stamps, speed=10.0, yaw_rate=0.0, x0=0.0):
    """Samples of an ego driving along +x (or a CTRV arc) at the given stamps."""
    start = ego(0.0, x=x0, speed=speed, yaw_rate=yaw_rate)
    return [extrapolate(start, t) for t in stamps]


def history(samples, **kwargs):
    h = OdometryHistory(**kwargs)
    for s in samples:
        assert h.add(s) is None, f"unexpected reset adding {s}"
    return h


def test_interpolates_midway():
    h = history([ego(10.0, x=1.0, y=2.0, yaw=0.2, speed=4.0, yaw_rate=0.1, accel=1.0),
                 ego(10.1, x=2.0, y=4.0, yaw=0.4, speed=6.0, yaw_rate=0.3, accel=3.0)])
    s = h.at(10.05, max_gap_s=0.25, max_extrapolation_s=0.1)
    assert isinstance(s, EgoState), s
    assert (s.x, s.y, s.speed_mps, s.stamp_s, s.frame_id) == pytest.approx((1.5, 3.0, 5.0, 10.05, "map"))
    assert (s.yaw, s.yaw_rate_rps, s.accel_mps2) == pytest.approx((0.3, 0.2, 2.0))


@pytest.mark.parametrize("yaw_a, yaw_b", [(math.pi - 0.1, -math.pi + 0.1), (-math.pi + 0.1, math.pi - 0.1)])
def test_yaw_interpolates_across_the_wrap(yaw_a, yaw_b):
    h = history([ego(1.0, yaw=yaw_a), ego(1.2, yaw=yaw_b)])
    s = h.at(1.1, 0.25, 0.1)
    assert abs(wrap_angle(s.yaw - math.pi)) < 1e-9, f"expected +-pi, got {s.yaw}"
    quarter = h.at(1.05, 0.25, 0.1)
    assert abs(wrap_angle(quarter.yaw - (yaw_a + math.copysign(0.05, yaw_a)))) < 1e-9, quarter.yaw


def test_exact_stamp_returns_the_sample():
    samples = driving([1.0, 1.1, 1.2])
    h = history(samples)
    assert h.at(1.1, 0.25, 0.1) is samples[1]
    assert h.at(1.0, 0.25, 0.0) is samples[0] and h.at(1.2, 0.25, 0.0) is samples[2]


def test_extrapolates_a_turn_forwards_and_backwards():
    turn = driving([1.0, 1.1], speed=10.0, yaw_rate=0.5)
    h = history(turn)
    truth = driving([1.3, 0.9], speed=10.0, yaw_rate=0.5)
    for stamp, expected in zip((1.3, 0.9), truth):
        s = h.at(stamp, 0.25, 0.25)
        assert isinstance(s, EgoState), s
        assert (s.x, s.y, s.yaw, s.stamp_s) == pytest.approx((expected.x, expected.y, expected.yaw, stamp), abs=1e-9)


def test_stale_after_the_newest_says_why():
    h = history(driving([11.8, 11.9]))
    reason = h.at(12.4, 0.25, 0.25)
    assert reason == "no odometry within 0.25 s of the camera stamp 12.400 s (newest 11.900 s, 0.500 s before)"


def test_stale_before_the_oldest_says_why():
    reason = history(driving([11.8, 11.9])).at(11.0, 0.25, 0.25)
    assert isinstance(reason, str) and "oldest 11.800 s, 0.800 s after" in reason


def test_gap_on_both_sides_says_why():
    reason = history(driving([1.0, 1.6])).at(1.3, 0.25, 0.25)
    assert isinstance(reason, str) and "previous 1.000 s, next 1.600 s" in reason


def test_empty_history():
    h = OdometryHistory()
    assert h.at(1.0, 0.25, 0.25) == "no odometry received yet"
    assert h.newest() is None and len(h) == 0 and not h.has_after(0.0)


def test_pose_jump_resets_with_a_reason():
    h = history(driving([1.0, 1.1, 1.2]))
    jumped = ego(1.3, x=3.0 + 120.0)
    reason = h.add(jumped)
    assert reason and "jumped" in reason and "reset" in reason, reason
    assert len(h) == 1 and h.newest() is jumped


def test_frame_change_resets():
    h = history(driving([1.0, 1.1]))
    reason = h.add(ego(1.2, x=2.0, frame="odom"))
    assert reason and "'map' to 'odom'" in reason, reason
    assert len(h) == 1


def test_stamp_going_back_beyond_the_window_resets():
    h = history(driving([10.0, 10.1, 10.2]), window_s=2.0)
    assert h.add(ego(9.9, x=99.0, speed=10.0)) is None                # slightly late: inserted
    reason = h.add(ego(5.0))
    assert reason and "went back" in reason, reason
    assert len(h) == 1 and h.newest().stamp_s == 5.0


def test_out_of_order_insertion_matches_in_order():
    samples = driving(np.arange(20) * 0.05 + 3.0, speed=8.0, yaw_rate=0.3)
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    a, b = history(samples), history(shuffled)
    assert len(a) == len(b) == 20
    for t in np.linspace(3.0, 4.0, 37):
        assert a.at(t, 0.1, 0.1) == b.at(t, 0.1, 0.1)


def test_same_stamp_replaces():
    h = history([ego(1.0, x=0.0), ego(1.1, x=1.0)])
    assert h.add(ego(1.1, x=1.2)) is None and len(h) == 2
    assert h.at(1.1, 0.1, 0.1).x == 1.2


def test_window_and_max_samples_prune():
    h = history(driving(np.arange(100) * 0.1), window_s=2.0)
    assert len(h) == 21 and h.at(7.0, 0.25, 0.25).startswith("no odometry")
    small = history(driving(np.arange(50) * 0.01), max_samples=10)
    assert len(small) == 10 and small.newest().stamp_s == pytest.approx(0.49)


@pytest.mark.parametrize("odometry_hz", [5.0, 100.0])
def test_slower_and_faster_odometry_than_the_camera(odometry_hz):
    stamps = np.arange(0.0, 3.0, 1.0 / odometry_hz)
    h = history(driving(stamps, speed=10.0), window_s=5.0)
    for camera_s in np.arange(0.03, 2.9, 0.1):                         # 10 Hz camera between odometry samples
        s = h.at(camera_s, max_gap_s=0.25, max_extrapolation_s=0.1)
        assert isinstance(s, EgoState), s
        assert s.x == pytest.approx(10.0 * camera_s, abs=1e-9) and s.stamp_s == camera_s


def test_has_after_and_clear():
    h = history(driving([1.0, 1.1]))
    assert h.has_after(1.1) and not h.has_after(1.15)
    assert h.has_after(0.9, within_s=0.1) and not h.has_after(0.5, within_s=0.25), "only samples soon after count"
    h.clear()
    assert len(h) == 0 and not h.has_after(0.0)


def test_non_finite_sample_is_ignored_with_a_reason():
    h = history(driving([1.0]))
    assert "NaN" in h.add(ego(1.1, x=float("nan")))
    assert len(h) == 1


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="window_s"):
        OdometryHistory(window_s=0.0)


def test_concurrent_add_and_at():
    h = OdometryHistory(window_s=1.0)
    samples = driving(np.arange(2000) * 0.01)
    errors = []

    def reader():
        for i in range(2000):
            s = h.at(i * 0.01, 0.05, 0.05)
            if isinstance(s, EgoState) and not s.x == pytest.approx(10.0 * s.stamp_s, abs=1e-6):
                errors.append(s)

    thread = threading.Thread(target=reader)
    thread.start()
    for s in samples:
        h.add(s)
    thread.join()
    assert not errors and len(h) == 101


@given(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4), st.floats(-50, 50), st.floats(-50, 50),
       st.floats(0.001, 0.5), st.floats(0.0, 1.0), st.floats(-math.pi, math.pi, exclude_max=True),
       st.floats(-math.pi, math.pi, exclude_max=True))
def test_interpolated_position_lies_between_the_neighbours(x, y, dx, dy, dt, f, yaw_a, yaw_b):
    a, b = ego(100.0, x=x, y=y, yaw=yaw_a), ego(100.0 + dt, x=x + dx, y=y + dy, yaw=yaw_b)
    h = OdometryHistory(max_jump_speed_mps=1e6)
    assert h.add(a) is None and h.add(b) is None
    s = h.at(100.0 + f * dt, 1.0, 0.0)
    assert isinstance(s, EgoState), s
    p, q, r = np.array([a.x, a.y]), np.array([b.x, b.y]), np.array([s.x, s.y])
    seg = q - p
    u = float(np.clip(np.dot(r - p, seg) / max(np.dot(seg, seg), 1e-300), 0.0, 1.0))
    assert np.linalg.norm(p + u * seg - r) <= 1e-6 * (1 + np.abs(p).max()), "off the segment"
    assert -math.pi <= s.yaw < math.pi
    assert abs(wrap_angle(s.yaw - a.yaw)) <= abs(wrap_angle(b.yaw - a.yaw)) + 1e-9, "yaw took the long way"


def test_acceleration_over_the_window_before_the_stamp():
    h = history([ego(t, speed=10.0 - 2.0 * t) for t in np.arange(0.0, 1.01, 0.1)])
    assert h.acceleration_at(1.0, 0.5) == pytest.approx(-2.0)
    assert h.acceleration_at(0.25, 0.5) == pytest.approx(-2.0), "over less than the window at the start"
    assert h.acceleration_at(0.0, 0.5) == 0.0 and h.acceleration_at(-1.0, 0.5) == 0.0
    assert h.acceleration_at(1.2, 0.5) == pytest.approx((8.0 - 8.6) / 0.5), "speed held after the newest sample"
    assert OdometryHistory().acceleration_at(1.0, 0.5) == 0.0


def test_nearest_gap():
    h = history(driving([1.0, 1.2]))
    assert h.nearest_gap_s(1.05) == pytest.approx(0.05) and h.nearest_gap_s(1.19) == pytest.approx(0.01)
    assert h.nearest_gap_s(2.0) == pytest.approx(0.8) and h.nearest_gap_s(0.5) == pytest.approx(0.5)
    assert OdometryHistory().nearest_gap_s(1.0) == math.inf
