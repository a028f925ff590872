"""Closed-loop driving in MetaDrive: the model drives held-out maps through the exit controller.

Each episode is one map seed and one setting (the IDM expert, or the model with an exit policy).
Every camera frame is planned by `Runner.plan`, the code path of the node; a pure-pursuit steering
and proportional speed controller tracks the planned trajectory. The simulator pauses while the
model plans, so latency does not change the driving here (it is reported, not simulated).
Map, traffic and initial speed come from the seed (`collect_metadrive.episode_config`), so every
setting meets the same episodes. Runs in the MetaDrive venv, which also holds onnxruntime.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deead_ros.tools import collect_metadrive as sim
from deead_ros.tools import dataset_format as fmt

EXPERT = "expert"
SPAWN_STEPS = 10                           # 1 s at 10 Hz
SIM_TIMEOUT = "sim_timeout"                # end reason of an episode the simulator never finished


@dataclass(frozen=True)
class PurePursuit:
    """Steering and throttle that track a planned trajectory in the ego frame (x forward, y left).

    Why pure pursuit: it follows the planned path geometrically and adds no behaviour of its own,
    so what the closed loop measures is the plan. The target speed is the plan's speed around
    `speed_lookahead_s` (ahead of now, to make up for the car's response time), so a plan that
    speeds up makes the car speed up and a plan that stops makes it brake.
    """

    wheelbase_m: float = 2.47              # MetaDrive's default vehicle (1.05 m front + 1.42 m rear)
    max_steering_deg: float = 40.0         # MetaDrive's vehicle_config max_steering
    lookahead_s: float = 0.8
    min_lookahead_m: float = 3.0
    speed_gain: float = 0.4                # throttle per m/s of speed error
    speed_lookahead_s: float = 1.5
    dt_s: float = 0.5                      # the plan's time step

    @staticmethod
    def _path(trajectory_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plan from the ego's position (the origin) and its arc length at each point."""
        path = np.vstack([np.zeros((1, 2)), np.asarray(trajectory_m, dtype=np.float64)])
        return path, fmt.polyline_arclength(path)

    def _speed(self, arc: np.ndarray) -> float:
        k = int(np.clip(round(self.speed_lookahead_s / self.dt_s), 1, len(arc) - 1))
        return float(arc[k] - arc[k - 1]) / self.dt_s

    def target_speed(self, trajectory_m: np.ndarray) -> float:
        """The plan's speed over the step that ends nearest `speed_lookahead_s`, m/s."""
        return self._speed(self._path(trajectory_m)[1])

    def action(self, trajectory_m: np.ndarray, speed_mps: float) -> tuple[float, float]:
        """[steering, throttle] in MetaDrive's [-1, 1] (positive steering turns left)."""
        path, arc = self._path(trajectory_m)
        throttle = float(np.clip(self.speed_gain * (self._speed(arc) - speed_mps), -1.0, 1.0))
        if arc[-1] < 0.5:                                   # a plan that stays put: hold the wheel straight
            return 0.0, throttle
        lookahead = max(self.min_lookahead_m, speed_mps * self.lookahead_s)
        x, y = fmt.resample_polyline(path, [min(lookahead, arc[-1])])[0]
        distance_sq = max(x * x + y * y, 1e-6)
        steer_rad = math.atan(self.wheelbase_m * 2.0 * y / distance_sq)
        return float(np.clip(math.degrees(steer_rad) / self.max_steering_deg, -1.0, 1.0)), throttle


@dataclass
class EpisodeResult:
    """One episode's outcome: what the simulator said, how far the ego got, and how the model ran."""

    seed: int
    setting: str
    steps: int
    end_reason: str                        # arrive_dest | crash_vehicle | crash_object | out_of_road | max_steps ...
    crash_vehicle: bool
    crash_object: bool
    out_of_road: bool
    arrived: bool
    progress_m: float                      # along the route from the start
    route_length_m: float
    mean_exit_layer: float                 # nan for the expert (layers run = exit layer)
    plan_ms_p50: float
    plan_ms_p95: float
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RouteProgress:
    """Distance travelled along the whole navigation route, robust to a route that passes near itself."""

    MAX_JUMP_M = 15.0

    def __init__(self, route_world: np.ndarray) -> None:
        self.route = route_world
        self.length_m = float(fmt.polyline_arclength(route_world)[-1]) if len(route_world) > 1 else 0.0
        self.best_m = 0.0
        self._last_m = 0.0

    def update(self, xy: np.ndarray) -> float:
        _, s, _ = fmt.project_to_polyline(xy, self.route)
        if abs(s - self._last_m) < self.MAX_JUMP_M:
            self._last_m = s
            self.best_m = max(self.best_m, s)
        return self.best_m


def drive(seed: int, setting: str, runner, policy, max_steps: int, tracker: PurePursuit,
          trace: list[dict[str, float]] | None = None) -> EpisodeResult:
    """Drive one seed with one setting (runner/policy None for the expert) until done or max_steps.

    trace: a list to append one row per planned step to (what the model saw and planned, what the
    tracker did, where the car was in its lane): how to see why an episode ended as it did.
    """
    from deead_ros.model.encoding import FrameInputs, SpeedHistory
    start = time.time()
    ep = sim.episode_config(seed)
    env = sim.make_env(seed, ep, sim.IMAGE_W, sim.IMAGE_H, expert=setting == EXPERT)
    exits, plan_ms = [], []
    flags = {"crash_vehicle": False, "crash_object": False, "out_of_road": False}
    end_reason, steps = "max_steps", 0
    try:
        obs = sim.start_episode(env, ep)
        vehicle = env.vehicle
        progress = RouteProgress(sim.route_ahead(vehicle, 1e5)["points"])
        previous_yaw = None
        speeds = SpeedHistory(runner.encoder.accel_window_s) if runner is not None else None
        for steps in range(1, max_steps + 1):
            action = [0.0, 0.0]
            if runner is not None:
                seen = sim.observe(obs, vehicle)
                yaw_rate = 0.0 if previous_yaw is None else \
                    float(fmt.wrap_angle(seen.pose[2] - previous_yaw)) / fmt.DT_S
                previous_yaw = seen.pose[2]
                valid = seen.route_valid
                route = fmt.world_to_ego(seen.route_world[:valid], seen.pose) if valid >= 2 else None
                speeds.add(steps * fmt.DT_S, seen.speed_mps)
                accel = speeds.acceleration_mps2()
                result = runner.plan(FrameInputs(seen.image, route, seen.speed_mps, yaw_rate,
                                                 seen.labels["command"], accel), policy=policy)
                exits.append(result.trace.exit_layer)
                plan_ms.append(result.total_ms)
                action = list(tracker.action(result.trajectory_m, seen.speed_mps))
                if trace is not None:
                    lane = vehicle.lane
                    trace.append({
                        "t_s": round(steps * fmt.DT_S, 2), "speed_mps": seen.speed_mps,
                        "accel_mps2": accel,
                        "plan_speed_mps": tracker.target_speed(result.trajectory_m), "steering": action[0],
                        "throttle": action[1], "exit_layer": result.trace.exit_layer,
                        "lane_offset_m": float(lane.local_coordinates(vehicle.position)[1]) if lane else float("nan"),
                        "plan_lateral_3s_m": float(result.trajectory_m[-1, 1]),
                        "route_lateral_3s_m": float(result.prior.trajectory_m[-1, 1])
                        if result.prior.is_valid else float("nan")})
            obs, _reward, done, info = env.step(action)
            pos = np.asarray(vehicle.position, dtype=np.float64)
            progress.update(np.array([pos[0], -pos[1]]))
            for key in flags:
                flags[key] |= bool(info.get(key, False))
            if done:
                end_reason = sim.why_done(info)
                break
    finally:
        env.close()
    nan = float("nan")
    return EpisodeResult(
        seed=seed, setting=setting, steps=steps, end_reason=end_reason, arrived=end_reason == "arrive_dest",
        progress_m=round(progress.best_m, 2), route_length_m=round(progress.length_m, 2),
        mean_exit_layer=float(np.mean(exits)) if exits else nan,
        plan_ms_p50=float(np.percentile(plan_ms, 50)) if plan_ms else nan,
        plan_ms_p95=float(np.percentile(plan_ms, 95)) if plan_ms else nan,
        wall_s=round(time.time() - start, 1), **flags)


def timed_out(seed: int, setting: str, after_s: float) -> dict[str, Any]:
    """The record of an episode the simulator never finished (its seed is left out for every setting)."""
    nan = float("nan")
    return EpisodeResult(seed=seed, setting=setting, steps=0, end_reason=SIM_TIMEOUT, crash_vehicle=False,
                         crash_object=False, out_of_road=False, arrived=False, progress_m=0.0, route_length_m=0.0,
                         mean_exit_layer=nan, plan_ms_p50=nan, plan_ms_p95=nan,
                         wall_s=after_s).as_dict()


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate: honest at 0 and 1 and for small n (unlike p +- 1.96 se)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """Mean and its normal-approximation 95% interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    half = z * float(values.std(ddof=1)) / math.sqrt(values.size) if values.size > 1 else float("nan")
    return mean, mean - half, mean + half


def spawned_into_a_crash(episode: dict[str, Any]) -> bool:
    """A collision within the first second: the spawn's fault, not the driver's."""
    return (episode["crash_vehicle"] or episode["crash_object"]) and episode["steps"] <= SPAWN_STEPS


def left_out(episodes: list[dict[str, Any]]) -> set[int]:
    """Seeds no setting is scored on: the expert spawned into a crash, or the simulator hung in some setting."""
    return {e["seed"] for e in episodes
            if e["end_reason"] == SIM_TIMEOUT or (e["setting"] == EXPERT and spawned_into_a_crash(e))}


def summarise(episodes: list[dict[str, Any]], max_steps: int) -> dict[str, dict[str, Any]]:
    """Per setting, over the seeds every setting has finished: rates with Wilson intervals, score, depth.

    Seeds where the expert collides within SPAWN_STEPS are left out for every setting: the
    simulator spawned the ego into a collision before anyone drove; so are seeds on which the
    simulator hung for some setting (SIM_TIMEOUT). Route completion is progress
    over the expert's progress on the same seed within the same step
    cap (capped at 1), because a capped episode cannot finish a long route; the driving score is
    route completion x 0.6^(vehicle collision) x 0.65^(object collision), the CARLA leaderboard's
    factors (an episode ends at its first collision, so each factor applies at most once).
    """
    by_setting: dict[str, dict[int, dict]] = {}
    for e in episodes:
        by_setting.setdefault(e["setting"], {})[e["seed"]] = e
    common = sorted(set.intersection(*(set(v) for v in by_setting.values()))) if by_setting else []
    expert = by_setting.get(EXPERT, {})
    broken = left_out(episodes)
    common = [seed for seed in common if seed not in broken]
    summary = {}
    for setting, runs in by_setting.items():
        rows = [runs[s] for s in common]
        n = len(rows)
        completion = []
        for r in rows:
            reference = expert[r["seed"]]["progress_m"] if r["seed"] in expert else r["route_length_m"]
            completion.append(min(1.0, r["progress_m"] / reference) if reference > 1.0 else 1.0)
        completion = np.asarray(completion)
        score = completion * np.array([0.6 ** r["crash_vehicle"] * 0.65 ** r["crash_object"] for r in rows])
        success = [not (r["crash_vehicle"] or r["crash_object"] or r["out_of_road"])
                   and (r["arrived"] or r["steps"] >= max_steps) for r in rows]
        row: dict[str, Any] = {"episodes": n, "excluded_seeds": sorted(broken)}
        for key, hits in (("collision", [r["crash_vehicle"] or r["crash_object"] for r in rows]),
                          ("vehicle_collision", [r["crash_vehicle"] for r in rows]),
                          ("off_road", [r["out_of_road"] for r in rows]), ("success", success)):
            k = int(np.sum(hits))
            row[f"{key}_rate"] = k / n if n else float("nan")
            row[f"{key}_ci"] = wilson_interval(k, n)
        for key, values in (("route_completion", completion), ("driving_score", score)):
            mean, low, high = mean_interval(values)
            row[key], row[f"{key}_ci"] = mean, (max(0.0, low), min(1.0, high))     # both lie in [0, 1]
        exits = [r["mean_exit_layer"] for r in rows if not math.isnan(r["mean_exit_layer"])]
        row["mean_exit_layer"] = float(np.mean(exits)) if exits else float("nan")
        row["plan_ms_p50"] = float(np.nanmedian([r["plan_ms_p50"] for r in rows])) if exits else float("nan")
        summary[setting] = row
    return summary
