"""Closed-loop pieces that run without the simulator: the tracker, route progress, and the statistics."""
import math

import numpy as np
import pytest

from deead_ros.tools.closed_loop import (EXPERT, PurePursuit, RouteProgress, left_out, summarise, timed_out,
                                         wilson_interval)

TIMES = 0.5 * np.arange(1, 7)


def straight(speed, lateral=0.0):
    return np.stack([speed * TIMES, np.full(6, lateral)], axis=1)


def test_pure_pursuit_steers_towards_the_plan_and_tracks_its_speed():
    tracker = PurePursuit()
    steer, throttle = tracker.action(straight(8.0), 8.0)
    assert steer == pytest.approx(0.0) and throttle == pytest.approx(0.0)
    slowing = np.stack([np.cumsum([4.5, 4.0, 3.5, 3.0, 2.5, 2.0]), np.zeros(6)], axis=1)   # 9, 8, 7 ... m/s
    assert tracker.target_speed(slowing) == pytest.approx(7.0), "the speed of the step from 1 to 1.5 s"
    left = np.stack([8.0 * TIMES, 0.08 * (8.0 * TIMES) ** 2], axis=1)        # curving left (y > 0)
    assert tracker.action(left, 8.0)[0] > 0.05
    assert tracker.action(left * [1, -1], 8.0)[0] < -0.05
    assert tracker.action(straight(12.0), 8.0)[1] > 0.5, "a faster plan accelerates"
    stop = np.tile([[2.0, 0.0]], (6, 1))                                       # stops 2 m ahead
    steer, throttle = tracker.action(stop, 8.0)
    assert throttle == -1.0, "a plan that stops brakes fully from 8 m/s"


def test_pure_pursuit_holds_the_wheel_for_a_plan_that_stays_put():
    assert PurePursuit().action(np.zeros((6, 2)), 0.0) == (0.0, 0.0)


def test_route_progress_ignores_jumps_to_a_nearby_part_of_the_route():
    out_and_back = np.array([[0.0, 0.0], [50.0, 0.0], [50.0, 4.0], [0.0, 4.0]])   # a U-turn 4 m apart
    progress = RouteProgress(out_and_back)
    for x in range(0, 30, 2):
        progress.update(np.array([float(x), 1.9]))          # nearer the return leg now and then
    assert progress.best_m == pytest.approx(28.0, abs=0.1) and progress.length_m == pytest.approx(104.0)


def test_wilson_interval_is_honest_at_zero_and_small_n():
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and 0.05 < high < 0.08
    low, high = wilson_interval(25, 50)
    assert low < 0.5 < high
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def episode(seed, setting, progress, crash=False, steps=200, exit_layer=float("nan")):
    return {"seed": seed, "setting": setting, "steps": steps, "end_reason": "crash_vehicle" if crash else "max_steps",
            "crash_vehicle": crash, "crash_object": False, "out_of_road": False, "arrived": False,
            "progress_m": progress, "route_length_m": 300.0, "mean_exit_layer": exit_layer, "plan_ms_p50": 5.0}


def test_summary_compares_settings_on_common_seeds_against_the_expert():
    episodes = [episode(1, EXPERT, 100.0), episode(2, EXPERT, 80.0), episode(3, EXPERT, 90.0),
                episode(4, EXPERT, 0.5, crash=True, steps=3), episode(4, "full", 0.5, crash=True, steps=3),
                episode(1, "full", 50.0, exit_layer=24), episode(2, "full", 80.0, crash=True, steps=60, exit_layer=24)]
    summary = summarise(episodes, max_steps=200)
    assert summary[EXPERT]["episodes"] == summary["full"]["episodes"] == 2, "seed 3 is not finished by every setting"
    assert summary["full"]["excluded_seeds"] == [4], "spawned into a crash: left out for every setting"
    full = summary["full"]
    assert full["collision_rate"] == 0.5 and full["success_rate"] == 0.5
    assert full["route_completion"] == pytest.approx(0.75)                   # 0.5 and 1.0 of the expert's
    assert full["driving_score"] == pytest.approx((0.5 + 0.6) / 2)
    assert summary[EXPERT]["driving_score"] == pytest.approx(1.0) and full["mean_exit_layer"] == 24


def test_a_seed_the_simulator_hung_on_is_left_out_for_every_setting():
    episodes = [episode(1, EXPERT, 100.0), episode(2, EXPERT, 80.0), episode(1, "full", 90.0, exit_layer=24),
                timed_out(2, "full", 240.0)]
    summary = summarise(episodes, max_steps=200)
    assert summary["full"]["episodes"] == summary[EXPERT]["episodes"] == 1
    assert summary["full"]["excluded_seeds"] == [2]


def test_seeds_left_out_are_known_before_every_setting_ran_them():
    episodes = [episode(1, EXPERT, 100.0), episode(2, EXPERT, 0.5, crash=True, steps=3), timed_out(3, "full", 240.0),
                episode(4, "full", 0.5, crash=True, steps=3)]
    assert left_out(episodes) == {2, 3}, "a driver's own early crash is scored, the expert's is the spawn's fault"
    assert summarise(episodes, max_steps=200)["full"]["excluded_seeds"] == [2, 3]
