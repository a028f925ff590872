"""Closed-loop pieces that run without the simulator: tracker, route progress, the protocol's rules
(at fault, completion, score, step cap, spawn check), the yielding IDM's decision, the statistics and
the resume bookkeeping (docs/closed_loop_protocol.md)."""
import math

import numpy as np
import pytest

from deead_lab import closed_loop as cl
from deead_lab.closed_loop import (
    EXPERT,
    FULL,
    SIM_ERROR,
    SIM_FAILURE,
    SPAWN_BLOCKED,
    failed,
    fill_not_scored,
    next_job,
    non_inferior,
    scored_seeds,
    summarise,
)
from deead_lab.driving.loop import RouteProgress, gaps_m
from deead_lab.driving.rules import at_fault, driving_score, route_completion, spawn_is_clear, step_cap
from deead_lab.driving.tracker import PurePursuit
from deead_lab.stats import mcnemar_exact, paired_bootstrap, wilson_interval
from deead_lab.sim.scenario import episode_config
from deead_lab.sim.traffic import PathAhead, idm_acceleration, yield_to
from test.conftest import episode
from deead_ros.geometry import arc_lengths

TIMES = 0.5 * np.arange(1, 7)


def straight(speed, lateral=0.0):
    return np.stack([speed * TIMES, np.full(6, lateral)], axis=1)


# --------------------------------------------------------------------------- tracker and progress
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


# --------------------------------------------------------------------------- protocol rules
def test_step_cap_is_twice_the_route_at_target_speed_plus_slack():
    assert step_cap(400.0, 10.0) == 900, "2 x 400 m / 10 m/s = 80 s, + 10 s, at 10 Hz"
    assert step_cap(0.0, 10.0) == 100


def test_route_completion_is_progress_over_length_and_one_on_arrival():
    assert route_completion(100.0, 400.0, arrived=False) == pytest.approx(0.25)
    assert route_completion(395.0, 400.0, arrived=True) == 1.0, "the destination zone starts before the end"
    assert route_completion(500.0, 400.0, arrived=False) == 1.0
    assert route_completion(10.0, 0.0, arrived=False) == 0.0


def test_driving_score_applies_one_factor_per_incident_kind():
    assert driving_score(1.0, False, False, False) == 1.0
    assert driving_score(0.5, True, False, False) == pytest.approx(0.3)
    assert driving_score(0.5, False, True, False) == pytest.approx(0.325)
    assert driving_score(0.5, False, False, True) == pytest.approx(0.35)


@pytest.mark.parametrize("kind, speed, other, lateral, expected", [
    ("object", 5.0, None, 0.0, (True, "object")),
    ("vehicle", 0.2, np.array([3.0, 0.0]), 0.0, (False, "stopped")),            # hit while standing
    ("vehicle", 5.0, np.array([4.5, 0.5]), 0.0, (True, "front")),               # ran into the car ahead
    ("vehicle", 5.0, np.array([3.0, 2.0]), 0.0, (True, "front")),               # front corner: within 40 deg
    ("vehicle", 5.0, np.array([-4.6, 0.3]), 0.0, (False, "rear_ended")),
    ("vehicle", 5.0, np.array([0.5, 3.0]), 0.0, (False, "side_hit")),           # T-boned from the left
    ("vehicle", 5.0, np.array([0.5, 3.0]), 0.8, (True, "side_moving_towards")),  # changing lane to the left
    ("vehicle", 5.0, np.array([0.5, -3.0]), 0.8, (False, "side_hit")),          # moving away from it
    ("vehicle", 5.0, np.array([0.5, -3.0]), -0.8, (True, "side_moving_towards")),
])
def test_at_fault_rule(kind, speed, other, lateral, expected):
    assert at_fault(kind, speed, other, lateral) == expected


def test_spawn_is_clear_unless_a_vehicle_overlaps_or_stands_on_the_lane_ahead():
    lane = 3.5
    assert spawn_is_clear(np.zeros((0, 2)), 5.0, lane)
    assert not spawn_is_clear(np.array([[1.0, 0.5]]), 0.0, lane), "overlapping the ego"
    assert not spawn_is_clear(np.array([[20.0, 0.3]]), 5.0, lane), "within 4.5 + 10 + 2 x 5 m on the lane"
    assert spawn_is_clear(np.array([[30.0, 0.3]]), 5.0, lane), "beyond the clear distance"
    assert spawn_is_clear(np.array([[10.0, 3.5]]), 5.0, lane), "on the next lane"
    assert spawn_is_clear(np.array([[-10.0, 0.0]]), 5.0, lane), "behind"


def test_episode_config_uses_the_protocols_traffic_and_keeps_the_maps():
    ep = episode_config(3000)
    assert ep["traffic_density"] == 0.1 and ep["traffic_mode"] == "trigger" and ep["reactive_traffic"]
    dense = episode_config(3000, traffic_density=0.2)
    assert dense["traffic_density"] == 0.2
    assert {k: v for k, v in dense.items() if k != "traffic_density"} == \
        {k: v for k, v in ep.items() if k != "traffic_density"}, "the same map, speeds and spawn"


# --------------------------------------------------------------------------- yielding IDM
def path(start, heading_deg, speed, name, length=30.0, active=True):
    d = np.array([math.cos(math.radians(heading_deg)), math.sin(math.radians(heading_deg))])
    pts = np.asarray(start, dtype=float) + np.outer(np.arange(0.0, length + 0.5, 1.0), d)
    return PathAhead(pts, arc_lengths(pts), speed, active, name)


def test_yield_to_a_crossing_vehicle_that_gets_there_first():
    me = path([0.0, 0.0], 0.0, 8.0, "b")                 # enters the crossing (x = 18) in 2.25 s
    crossing = path([20.0, -6.0], 90.0, 4.0, "a")        # enters it (y = -2) in 1 s, clears it 2.4 s later
    hit = yield_to(me, crossing)
    assert hit is not None and hit[0] == pytest.approx(20.0 - 2.0, abs=1.0) and hit[1] == 0.0
    assert yield_to(crossing, me) is None, "the first to arrive goes"


def test_no_yield_when_the_crossing_vehicle_has_cleared_before_i_arrive_or_is_beyond_the_horizon():
    me = path([0.0, 0.0], 0.0, 2.0, "b", length=15.0)     # 14 m at 2 m/s: 7 s, beyond the horizon
    assert yield_to(me, path([14.0, -3.0], 90.0, 10.0, "a")) is None
    me = path([0.0, 0.0], 0.0, 4.0, "b")                  # reaches x=14 in 3 s
    fast = path([14.0, -3.0], 90.0, 15.0, "a")            # there at once, gone in 0.6 s
    assert yield_to(me, fast) is None


def test_follow_a_vehicle_ahead_on_the_same_path_at_its_speed():
    me = path([0.0, 0.0], 0.0, 8.0, "b")
    lead = path([12.0, 0.0], 0.0, 5.0, "a")
    hit = yield_to(me, lead)
    assert hit is not None and hit[1] == pytest.approx(5.0) and hit[0] < 12.0


def test_parked_vehicles_only_matter_where_they_stand_and_a_vehicle_in_the_zone_carries_on():
    me = path([0.0, 0.0], 0.0, 8.0, "b")
    parked_across = path([15.0, -6.0], 90.0, 0.0, "a", length=1.0, active=False)   # beside the road
    assert yield_to(me, parked_across) is None
    parked_on = path([15.0, 0.0], 90.0, 0.0, "a", length=1.0, active=False)
    assert yield_to(me, parked_on) is not None
    inside = path([0.0, 0.0], 0.0, 3.0, "b")
    assert yield_to(inside, path([1.0, -1.0], 90.0, 8.0, "a")) is None, "already in the conflict zone"


def test_ties_go_to_the_smaller_name_so_two_yielding_vehicles_never_both_wait():
    a = path([-10.0, 0.0], 0.0, 5.0, "a")
    b = path([0.0, -10.0], 90.0, 5.0, "b")
    assert (yield_to(a, b) is None) != (yield_to(b, a) is None)
    assert yield_to(a, b) is None


def test_idm_brakes_harder_the_closer_the_conflict_point():
    far, near = idm_acceleration(8.0, 10.0, 30.0, 0.0), idm_acceleration(8.0, 10.0, 8.0, 0.0)
    assert near < far and near < -4.0
    assert idm_acceleration(5.0, 10.0, 200.0, 5.0) > 0.0, "a far obstacle at my speed: accelerate to target"


# --------------------------------------------------------------------------- statistics
def test_wilson_interval_is_honest_at_zero_and_small_n():
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and 0.05 < high < 0.08
    low, high = wilson_interval(25, 50)
    assert low < 0.5 < high
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_wilson_interval_holds_the_rate_exactly():
    """Rounding once put 0 a hair below the lower bound at k = 0 (n = 11, 22, ...): the plot's error bars went
    negative and the confirmation's report failed at 45 seeds."""
    for n in range(1, 401):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert low <= k / n <= high, (k, n)


def test_mcnemar_exact_on_discordant_pairs():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0


def test_paired_bootstrap_is_deterministic_and_centred_on_the_mean_difference():
    rng = np.random.default_rng(1)
    a = rng.random(200)
    same = paired_bootstrap(a, a)
    assert same["diff"] == 0.0 and same["ci90"] == [0.0, 0.0]
    shifted = paired_bootstrap(a + 0.1, a)
    assert shifted["diff"] == pytest.approx(0.1) and shifted["ci95"] == pytest.approx([0.1, 0.1])
    b = rng.random(200)
    first, second = paired_bootstrap(a, b), paired_bootstrap(a, b)
    assert first == second, "fixed RNG seed"
    assert first["ci95"][0] <= first["ci90"][0] <= first["diff"] <= first["ci90"][1] <= first["ci95"][1]
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10])


def test_non_inferiority_verdict_against_the_margin():
    assert non_inferior({"ci90": [-0.02, 0.03]}, 0.05, higher_is_worse=True) == "non-inferior"
    assert non_inferior({"ci90": [-0.02, 0.08]}, 0.05, higher_is_worse=True) == "inconclusive"
    assert non_inferior({"ci90": [0.06, 0.12]}, 0.05, higher_is_worse=True) == "inferior"
    assert non_inferior({"ci90": [-0.03, 0.02]}, 0.05, higher_is_worse=False) == "non-inferior"
    assert non_inferior({"ci90": [-0.09, -0.06]}, 0.05, higher_is_worse=False) == "inferior"


def test_summary_scores_the_seeds_every_setting_finished_and_compares_with_full_depth():
    settings = [EXPERT, FULL, "deead_2"]
    records = []
    for seed in range(40):
        records += [episode(seed, EXPERT), episode(seed, FULL, crash=seed < 4, exit_layer=24),
                    episode(seed, "deead_2", crash=seed < 6, exit_layer=11)]
    records.append(episode(40, EXPERT))                               # seed 40 not finished by every setting
    records += [failed(41, s, SPAWN_BLOCKED, 0.0) for s in settings]
    summary = summarise(records, settings)
    assert summary["seeds"] == list(range(40))
    assert summary["not_scored"] == {SPAWN_BLOCKED: [41]}
    full, deead = summary["settings"][FULL], summary["settings"]["deead_2"]
    assert full["collision_rate"] == pytest.approx(0.1) and deead["collision_rate"] == pytest.approx(0.15)
    assert deead["success_rate"] == pytest.approx(0.85) and deead["mean_exit_layer"] == 11
    assert summary["settings"][EXPERT]["score"] == 1.0
    comparison = summary["comparisons"]["deead_2"]
    assert comparison["collision"]["only_setting"] == 2 and comparison["collision"]["only_full"] == 0
    assert comparison["collision"]["mcnemar_p"] == pytest.approx(0.5)
    assert comparison["collision"]["diff"] == pytest.approx(0.05)
    assert comparison["collision"]["verdict"] in ("inconclusive", "inferior")
    assert EXPERT not in summary["comparisons"] and FULL not in summary["comparisons"]


def test_a_setting_that_collides_much_more_is_worse_than_full():
    settings = [FULL, "fixed_11"]
    records = []
    for seed in range(60):
        records += [episode(seed, FULL, crash=seed < 3), episode(seed, "fixed_11", crash=seed < 20)]
    comparison = summarise(records, settings)["comparisons"]["fixed_11"]
    assert comparison["collision"]["mcnemar_p"] < 0.001 and comparison["worse_than_full"]
    assert comparison["collision"]["verdict"] == "inferior"


# --------------------------------------------------------------------------- resume bookkeeping
def test_next_job_goes_setting_by_setting_and_retries_a_failed_episode_once():
    settings = [EXPERT, FULL, "deead_2"]
    records = [episode(7, EXPERT)]
    assert next_job(records, 7, settings) == (FULL, 1)
    records.append(failed(7, FULL, SIM_ERROR, 900.0))
    assert next_job(records, 7, settings) == (FULL, 2), "the second and last attempt"
    records.append(episode(7, FULL))
    assert next_job(records, 7, settings) == ("deead_2", 1)
    records.append(episode(7, "deead_2"))
    assert next_job(records, 7, settings) is None
    assert scored_seeds(records, settings) == [7]


def test_a_seed_that_fails_twice_is_recorded_as_sim_failure_for_every_setting():
    settings = [EXPERT, FULL, "deead_2"]
    records = [episode(8, EXPERT), failed(8, FULL, SIM_ERROR, 900.0), failed(8, FULL, SIM_FAILURE, 900.0)]
    assert next_job(records, 8, settings) is None
    filled = fill_not_scored(records, 8, settings)
    assert [(r["setting"], r["end_reason"]) for r in filled] == [("deead_2", SIM_FAILURE)], \
        "the settings without a record get one; the expert's drive is kept but not scored"
    records += filled
    assert fill_not_scored(records, 8, settings) == [], "filled once"
    assert scored_seeds(records, settings) == []
    assert summarise(records, settings)["not_scored"] == {SIM_FAILURE: [8]}


def test_a_blocked_spawn_skips_the_seed_for_every_setting():
    settings = [EXPERT, FULL]
    records = [dict(episode(9, EXPERT), end_reason=SPAWN_BLOCKED)]
    assert next_job(records, 9, settings) is None
    assert [r["setting"] for r in fill_not_scored(records, 9, settings)] == [FULL]


def test_an_interrupted_run_resumes_where_it_stopped():
    settings = [EXPERT, FULL, "deead_2"]
    records = [episode(10, EXPERT), episode(10, FULL)]           # killed while driving deead_2 on seed 10
    assert next_job(records, 10, settings) == ("deead_2", 1), "the lost episode is run, the others are not"
    assert cl.PROTOCOL_VERSION == 2


def test_the_expert_slows_for_curves_ahead_and_not_for_lane_jumps():
    from deead_lab.sim.traffic import curve_speed_limit
    line = np.stack([np.arange(0.0, 60.0), np.zeros(60)], axis=1)
    assert curve_speed_limit(line, arc_lengths(line)) > 100.0
    theta = np.arange(0.0, 40.0) / 15.0                                     # a 15 m radius bend from 0 m on
    bend = np.stack([15.0 * np.sin(theta), 15.0 * (1 - np.cos(theta))], axis=1)
    assert curve_speed_limit(bend, arc_lengths(bend)) == pytest.approx(math.sqrt(1.5 * 15.0), rel=0.1)
    later = np.vstack([line[:30], bend + [30.0, 0.0]])                    # the bend starts 30 m ahead
    v_later = curve_speed_limit(later, arc_lengths(later))
    assert v_later == pytest.approx(math.sqrt(1.5 * 15.0 + 2 * 2.0 * 29.0), rel=0.1), "brake to it in time"
    offset = np.vstack([[[0.0, -0.3]], line])                             # the car 0.3 m off its lane: no curve
    assert curve_speed_limit(offset, arc_lengths(offset)) > 100.0
    jump = np.vstack([line[:20], line[20:] + [0.0, 3.5]])                  # a lane jump: no curve
    assert curve_speed_limit(jump, arc_lengths(jump)) > 100.0


def closed_loop_bench():
    """bench/closed_loop.py as a module (it is a script, not part of the package)."""
    import importlib.util
    import sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "closed_loop_bench", Path(__file__).resolve().parents[2] / "bench" / "closed_loop.py")
    assert spec is not None and spec.loader is not None, "bench/closed_loop.py cannot be loaded as a module"
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench                    # its dataclasses look their module up
    spec.loader.exec_module(bench)
    return bench


class SimulatedWorkers:
    """Stands in for the worker processes / Ray actors (no simulator here): the supervisor's real loop drives it.

    Episodes finish newest first (out of order, as parallel workers do); (seed 3002, full) fails on its first
    attempt and the expert's spawn on seed 3004 is blocked.
    """

    def __init__(self, count):
        self.count, self.pending, self.started = count, [], []

    @property
    def free(self):
        return self.count - len(self.pending)

    def submit(self, job, attempt):
        self.started.append((job[0], job[1], attempt))
        self.pending.append((job, attempt))

    def poll(self, timeout_s, episode_timeout_s):
        job, attempt = self.pending.pop()
        seed, setting = job[0], job[1]
        running = type("Running", (), {"job": job, "attempt": attempt, "started": 0.0})
        if (seed, setting, attempt) == (3002, FULL, 1):
            return [(running, None, "RuntimeError: the renderer hung")]
        record = dict(episode(seed, setting, crash=seed % 3 == 0), wall_s=30.0)
        if (seed, setting) == (3004, EXPERT):
            record["end_reason"] = SPAWN_BLOCKED
        return [(running, record, "")]

    def close(self):
        pass


@pytest.mark.parametrize("workers", [1, 3])
def test_the_supervisor_drives_the_same_seeds_with_one_worker_or_many(tmp_path, monkeypatch, workers):
    import argparse
    bench = closed_loop_bench()
    simulated = SimulatedWorkers(workers)
    monkeypatch.setattr(bench, "make_workers", lambda args: simulated)
    settings = [EXPERT, FULL, "deead_2"]
    args = argparse.Namespace(seeds=5, first_seed=3000, density=0.1, max_steps=None, out=tmp_path, workers=workers,
                              episode_timeout_s=900.0, protocol=cl.PROTOCOL_VERSION)
    records = bench.run(args, settings, "abc", tmp_path / "episodes.jsonl")
    assert scored_seeds(records, settings) == [3000, 3001, 3002, 3003, 3005], "3004 blocked: replaced by 3005"
    assert summarise(records, settings)["not_scored"] == {SPAWN_BLOCKED: [3004]}
    finished = sorted((r["seed"], r["setting"], r["end_reason"]) for r in records)
    assert (3002, FULL, SIM_ERROR) in finished and (3002, FULL, "arrive_dest") in finished, "retried once"
    assert len(simulated.started) == len(set(simulated.started)), "no episode started twice"
    logged = bench.load_records(tmp_path / "episodes.jsonl", "abc", 0.1, None)
    assert sorted((r["seed"], r["setting"], r["end_reason"]) for r in logged) == finished, "every record logged"


def test_a_resumed_run_replaces_a_seed_blocked_in_an_earlier_run(tmp_path, monkeypatch):
    import argparse
    bench = closed_loop_bench()
    settings = [EXPERT, FULL]
    args = argparse.Namespace(seeds=5, first_seed=3000, density=0.1, max_steps=None, out=tmp_path, workers=2,
                              episode_timeout_s=900.0, protocol=cl.PROTOCOL_VERSION)
    log = tmp_path / "episodes.jsonl"
    monkeypatch.setattr(bench, "make_workers", lambda args: SimulatedWorkers(2))
    args.seeds = 4
    bench.run(args, settings, "abc", log)                       # 3000-3003 scored
    args.seeds = 5
    records = bench.run(args, settings, "abc", log)             # 3004 blocked: the run goes on to 3005
    assert scored_seeds(records, settings) == [3000, 3001, 3002, 3003, 3005]
    args.seeds = 6
    records = bench.run(args, settings, "abc", log)             # resumed next to the blocked seed
    assert scored_seeds(records, settings) == [3000, 3001, 3002, 3003, 3005, 3006]


def test_the_log_keeps_this_protocols_records_and_survives_a_line_cut_short(tmp_path):
    import json
    bench = closed_loop_bench()
    tag = {"protocol": cl.PROTOCOL_VERSION, "expert_version": bench.EXPERT_VERSION, "density": 0.1,
           "cap_override": None}
    keep = [dict(episode(1, EXPERT), model=EXPERT, **tag), dict(episode(1, FULL), model="abc", **tag)]
    other = [dict(episode(2, FULL), model="other-model", **tag),
             dict(episode(2, EXPERT), model=EXPERT, **dict(tag, protocol=1)),
             dict(episode(3, EXPERT), model=EXPERT, **dict(tag, density=0.2))]
    log = tmp_path / "episodes.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in keep + other) + '{"seed": 4, "setting": "fu')
    records = bench.load_records(log, "abc", 0.1, None)
    assert [(r["seed"], r["setting"]) for r in records] == [(1, EXPERT), (1, FULL)]


def test_paired_rate_interval_is_honest_where_the_bootstrap_collapses():
    from deead_lab.stats import paired_rate_interval
    same = np.array([True, False, False])                                   # 3 seeds, no discordant pair
    lo, hi = paired_rate_interval(same, same, 1.645)
    assert lo < -0.1 and hi > 0.1, "3 concordant seeds say little"
    assert paired_bootstrap(same.astype(float), same.astype(float))["ci90"] == [0.0, 0.0], "the bootstrap collapses"
    none = np.zeros(200, dtype=bool)
    lo, hi = paired_rate_interval(none, none, 1.645)
    assert -0.02 < lo < 0.0 < hi < 0.02
    more = np.zeros(60, dtype=bool)
    more[:20] = True
    lo, hi = paired_rate_interval(more, np.zeros(60, dtype=bool), 1.96)
    assert 0.15 < lo < 1 / 3 < hi < 0.5
    lo2, hi2 = paired_rate_interval(np.zeros(60, dtype=bool), more, 1.96)
    assert (lo2, hi2) == pytest.approx((-hi, -lo)), "symmetric in the two settings"


def test_paired_rate_interval_does_not_shrink_when_both_settings_crash_on_the_same_seeds():
    from deead_lab.stats import paired_rate_interval
    shared = np.zeros(30, dtype=bool)
    shared[:15] = True                           # 15 shared crashes, no discordant pair: the plain phi is 1
    lo, hi = paired_rate_interval(shared, shared, 1.96)
    assert lo == pytest.approx(-hi) and hi > 0.05, "the same 15 crashes in 30 seeds do not pin the difference to 0"
    # With AD - BC <= N/2 the corrected correlation is 0: the interval is the unpaired square-and-add one.
    weak_x, weak_y = np.zeros(10, dtype=bool), np.zeros(10, dtype=bool)
    weak_x[:2], weak_y[[0, 2, 3]] = True, True   # a = 1, b = 1, c = 2, d = 6: AD - BC = 4 <= 5
    l1, u1 = wilson_interval(2, 10, 1.96)
    l2, u2 = wilson_interval(3, 10, 1.96)
    unpaired = [-0.1 - math.hypot(0.2 - l1, u2 - 0.3), -0.1 + math.hypot(u1 - 0.2, 0.3 - l2)]
    assert paired_rate_interval(weak_x, weak_y, 1.96) == pytest.approx(unpaired)
    # Cavo et al. 2012's paired table (a, b, c, d) = (59, 6, 16, 80), Fagerland et al.'s worked example:
    # AD - BC = 4624 > N/2, so phi = (4624 - 80.5) / sqrt(65 * 96 * 75 * 86).
    x = np.array([True] * 65 + [False] * 96)
    y = np.array([True] * 59 + [False] * 6 + [True] * 16 + [False] * 80)
    l1, u1 = wilson_interval(65, 161, 1.96)
    l2, u2 = wilson_interval(75, 161, 1.96)
    p1, p2, phi = 65 / 161, 75 / 161, (4624 - 80.5) / math.sqrt(65 * 96 * 75 * 86)
    expected = [p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)),
                p1 - p2 + math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1))]
    assert paired_rate_interval(x, y, 1.96) == pytest.approx(expected)


def test_two_outcomes_for_one_episode_are_refused():
    records = [episode(0, FULL), episode(0, "deead_2"), episode(0, FULL, crash=True)]
    with pytest.raises(ValueError, match="seed 0, setting full"):
        summarise(records, [FULL, "deead_2"])


def test_no_verdict_on_too_few_seeds():
    settings = [FULL, "deead_2"]
    records = [r for seed in range(3) for r in (episode(seed, FULL, crash=seed == 0),
                                                 episode(seed, "deead_2", crash=seed == 0))]
    comparison = summarise(records, settings)["comparisons"]["deead_2"]
    assert {comparison[m]["verdict"] for m in ("collision", "at_fault", "completion", "score")} == {"too few seeds"}
    assert comparison["collision"]["interval"] == "newcombe" and not comparison["worse_than_full"]


def test_the_fixed_exit_layer_comes_from_bench_exit_only_when_it_measured_this_model(tmp_path):
    import json
    bench = closed_loop_bench()
    measured = tmp_path / "bench_exit.json"
    assert bench.matched_fixed(measured, "model b", 2.0) is None, "no bench_exit.json yet"
    measured.write_text(json.dumps({"model_version": "model b", "settings": {
        "full": {}, "fixed_14": {}, "deead_2": {"mean_exit_layer": 13.6}, "deead_0.25": {"mean_exit_layer": 21.2}}}))
    assert bench.matched_fixed(measured, "model b", 2.0) == "fixed_14"
    assert bench.matched_fixed(measured, "model b", 0.25) == "fixed_21"
    assert bench.matched_fixed(measured, "model b", 0.5) is None, "deead at 0.5 m not measured"
    assert bench.matched_fixed(measured, "model a", 2.0) is None, "measured on another model"


def test_the_settings_add_the_recommended_delta_and_its_fixed_exit_once():
    bench = closed_loop_bench()
    assert bench.settings(["fixed_13", "fixed_21"], 0.25) == [
        EXPERT, FULL, "deead_0.25", "deead_0.5", "deead_1", "deead_2", "fixed_13", "fixed_21", "patience",
        "deead_or_patience_2"]
    assert bench.settings(["fixed_11", "fixed_11"], 2.0) == [
        EXPERT, FULL, "deead_0.5", "deead_1", "deead_2", "fixed_11", "patience", "deead_or_patience_2"]
    assert bench.dense_split_settings("fixed_21", 0.25) == [EXPERT, FULL, "deead_0.25", "fixed_21"]
    assert bench.dense_split_settings(None, 0.25) == [EXPERT, FULL, "deead_0.25"], "no fixed exit measured"


def test_each_split_reports_to_its_own_file():
    assert cl.report_name(0.1) == "closed_loop.json"
    assert cl.report_name(0.2) == "closed_loop_density_0.2.json"
    assert cl.report_name(0.2, ".png") == "closed_loop_density_0.2.png"
    assert (cl.split_seeds(0.1), cl.split_seeds(0.2)) == (cl.PROTOCOL_SEEDS, cl.DENSE_SPLIT_SEEDS)
    assert cl.split_file_name("episodes", 0.2, ".jsonl") == "episodes_density_0.2.jsonl"


def test_gaps_are_the_nearest_vehicle_and_the_nearest_one_ahead_in_the_corridor():
    others = np.array([[-4.0, 0.0], [12.0, 1.0], [6.0, 4.0], [30.0, -2.0]])    # behind, ahead, beside-ahead, ahead
    nearest, ahead = gaps_m(others)
    assert nearest == pytest.approx(4.0) and ahead == pytest.approx(12.0)
    assert all(math.isnan(g) for g in gaps_m(np.zeros((0, 2))))
    assert math.isnan(gaps_m(np.array([[-5.0, 0.0]]))[1]), "nothing ahead"


def test_simulator_failures_are_counted_for_the_setting_that_failed_not_the_filled_ones():
    records = [episode(9, EXPERT), failed(9, FULL, SIM_ERROR, 130.0), failed(9, FULL, SIM_FAILURE, 130.0)]
    records += fill_not_scored(records, 9, [EXPERT, FULL, "deead_2"])
    assert [r["setting"] for r in records[3:]] == ["deead_2"], "the other settings are filled"
    assert cl.failures_by_setting(records) == {FULL: [9]}
    assert summarise(records, [EXPERT, FULL, "deead_2"])["sim_failure_by_setting"] == {FULL: [9]}


def test_the_confirmation_drives_each_seed_in_an_order_drawn_from_the_seed(tmp_path, monkeypatch):
    import argparse
    bench = closed_loop_bench()
    settings = list(cl.CONFIRMATION_SETTINGS)
    orders = {seed: cl.seed_order(seed, settings) for seed in range(4000, 4010)}
    assert all(sorted(order) == sorted(settings) for order in orders.values())
    assert orders == {seed: cl.seed_order(seed, settings) for seed in orders}, "the same order on a resumed run"
    assert len({tuple(order) for order in orders.values()}) > 1, "not one fixed order"
    simulated = SimulatedWorkers(1)
    monkeypatch.setattr(bench, "make_workers", lambda args: simulated)
    args = argparse.Namespace(seeds=2, first_seed=4000, density=0.1, max_steps=None, out=tmp_path, workers=1,
                              episode_timeout_s=900.0, protocol=cl.CONFIRMATION_PROTOCOL)
    records = bench.run(args, settings, "abc", tmp_path / "episodes.jsonl")
    assert [r["setting"] for r in records if r["seed"] == 4000] == orders[4000]
    assert all(r["protocol"] == cl.CONFIRMATION_PROTOCOL and r["max_checks"] == cl.max_checks_of(3) > 0
               for r in records)
    assert cl.max_checks_of(cl.PROTOCOL_VERSION) == 0, "protocol 2's settings keep their unbounded tail"


def test_the_confirmation_headline_reads_the_paired_comparisons():
    settings = list(cl.CONFIRMATION_SETTINGS)
    records = []
    for seed in range(4000, 4200):
        for setting in settings:
            r = dict(episode(seed, setting, crash=setting == cl.CONFIRMATION_FIXED and seed % 2 == 0,
                             exit_layer=float("nan") if setting == EXPERT else 20.0))
            r.update(plan_ms_mean={FULL: 12.0}.get(setting, 6.0), plan_ms_p95={FULL: 13.0}.get(setting, 12.0))
            records.append(r)
    headline = cl.confirmation_headline(summarise(records, settings))
    assert headline["seeds"] == 200 and headline["setting"] == cl.CONFIRMED_SETTING
    assert headline["plan_ms_mean_ratio"] == pytest.approx(0.5)
    assert headline["plan_ms_p95_ratio"] == pytest.approx(12 / 13)
    assert headline["non_inferior"] == {"collisions": True, "at_fault": True, "completion": True, "score": True}
    assert headline["matched_fixed_setting"] == cl.CONFIRMATION_FIXED and headline["matched_fixed_worse"]
