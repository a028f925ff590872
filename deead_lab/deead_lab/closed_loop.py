"""Closed-loop driving in MetaDrive: the model drives held-out maps through the exit controller.

The protocol is docs/closed_loop_protocol.md (its version is PROTOCOL_VERSION, stored with every
episode). Each episode is one map seed and one setting (the yielding IDM expert, or the model with
an exit policy) and drives the whole route: it ends on arrival, a crash, leaving the road or the
step cap from the route length. Every camera frame is planned by `Runner.plan`, the code path of
the node; a pure-pursuit steering and proportional speed controller tracks the planned trajectory.
The simulator pauses while the model plans, so latency does not change the driving here (it is
reported, not simulated). Map, traffic and initial speed come from the seed
(`collect_metadrive.episode_config`), so every setting meets the same episodes. The pure parts
(at-fault rule, completion, score, spawn check, the paired statistics and the resume bookkeeping)
run without the simulator. Runs in the MetaDrive venv, which also holds onnxruntime.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deead_lab.sim import episode, labels, scenario
from deead_lab.sim.scenario import STOPPED_MPS, VEHICLE_LENGTH_M
from deead_lab import dataset_format as fmt
from deead_ros.geometry import arc_lengths, project_to_polyline, sample_at_arc_lengths, world_to_ego, wrap_angle

PROTOCOL_VERSION = 2                       # docs/closed_loop_protocol.md; a new version starts the log over
EXPERT = "expert"
FULL = "full"
# the confirmation (protocol 3, declared in docs/closed_loop_protocol.md before its first episode): the setting
# chosen on protocol 2's 200 seeds, with the bounded tail, against full depth and the fixed exit at its depth,
# on fresh seeds, each seed's settings in an order drawn from the seed
CONFIRMATION_PROTOCOL = 3
CONFIRMATION_FIRST_SEED = 4000
CONFIRMED_SETTING = "deead_0.5"            # the fastest setting non-inferior on all four metrics in protocol 2
CONFIRMATION_FIXED = "fixed_23"            # its protocol-2 mean depth 21.9 + the bounded tail's +1.3 layers open loop
CONFIRMATION_SETTINGS = (EXPERT, FULL, CONFIRMED_SETTING, CONFIRMATION_FIXED)
# end reasons that are no driving outcome: the seed is not scored for any setting
SPAWN_BLOCKED = "spawn_blocked"            # the spawn-clear check failed (decided before anyone drove)
SIM_ERROR = "sim_error"                    # one failed attempt (crash or hang); retried once
SIM_FAILURE = "sim_failure"                # failed twice: recorded for every setting on the seed
FILLED_NOTE = "recorded for every setting of the seed"   # a not-scored seed's record for the other settings
NOT_SCORED = (SPAWN_BLOCKED, SIM_FAILURE)

# step cap: twice the route at the expert's target speed, plus slack for the start and waiting
CAP_ROUTE_FACTOR = 2.0
CAP_SLACK_S = 10.0
# spawn-clear check
SPAWN_CLEAR_M = 10.0                       # free road ahead of the ego's front bumper, plus 2 s at its speed
SPAWN_CLEAR_S = 2.0
VEHICLE_WIDTH_M = 1.85
# at-fault rule (docs/closed_loop_protocol.md)
FRONT_SECTOR_DEG = 40.0
REAR_SECTOR_DEG = 140.0
LATERAL_TOWARDS_MPS = 0.3
# driving score factors (CARLA leaderboard's collision penalties; out of road 0.7)
SCORE_VEHICLE = 0.6
SCORE_OBJECT = 0.65
SCORE_OUT_OF_ROAD = 0.7
# non-inferiority margins, declared before the run: (metric, margin, higher_is_worse)
MARGINS = (("collision", 0.05, True), ("at_fault", 0.05, True), ("completion", 0.05, False),
           ("score", 0.05, False))
BOOTSTRAP_SAMPLES = 10_000
MIN_SEEDS_FOR_VERDICT = 30                 # no non-inferiority verdict on fewer paired seeds
PROTOCOL_SEEDS = 200                       # paired seeds per setting the protocol asks for
DENSE_SPLIT_SEEDS = 30                     # ... and its secondary dense split (declared in the protocol)


def is_main_split(density: float) -> bool:
    """Whether a run at this traffic density is the protocol's main split (MetaDrive's default density)."""
    return density == scenario.TRAFFIC_DENSITY


def split_seeds(density: float) -> int:
    """The paired seeds the protocol asks of a split: the main one's, or the denser split's."""
    return PROTOCOL_SEEDS if is_main_split(density) else DENSE_SPLIT_SEEDS


def split_file_name(stem: str, density: float, suffix: str) -> str:
    """A split's file: `stem + suffix` for the main split, a denser split's beside it with its density in the name."""
    return f"{stem}{suffix}" if is_main_split(density) else f"{stem}_density_{density:g}{suffix}"


def report_name(density: float, suffix: str = ".json") -> str:
    """The report's file name in docs/ (suffix ".png": its figure)."""
    return split_file_name("closed_loop", density, suffix)


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
        return path, arc_lengths(path)

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
        x, y = sample_at_arc_lengths(path, [min(lookahead, arc[-1])])[0]
        distance_sq = max(x * x + y * y, 1e-6)
        steer_rad = math.atan(self.wheelbase_m * 2.0 * y / distance_sq)
        return float(np.clip(math.degrees(steer_rad) / self.max_steering_deg, -1.0, 1.0)), throttle


@dataclass
class EpisodeResult:
    """One episode's outcome: what the simulator said, how far the ego got, and how the model ran."""

    seed: int
    setting: str
    steps: int
    max_steps: int
    end_reason: str                        # arrive_dest | crash_vehicle | crash_object | out_of_road | max_steps | ...
    arrived: bool
    crash_vehicle: bool
    crash_object: bool                     # objects and buildings
    out_of_road: bool                      # MetaDrive's `not on_lane`, or the sidewalk
    left_lane: bool                        # touched a solid line (does not end the episode)
    at_fault: bool                         # the collision is the ego's under the written rule
    fault_reason: str
    progress_m: float                      # along the route from the start
    route_length_m: float
    completion: float
    score: float
    mean_exit_layer: float                 # nan for the expert (layers run = exit layer)
    plan_ms_p50: float
    plan_ms_p95: float
    wall_s: float
    protocol: int = PROTOCOL_VERSION
    plan_ms_mean: float = float("nan")     # the runner's time per planned frame, mean over the episode

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RouteProgress:
    """Distance travelled along the whole navigation route, robust to a route that passes near itself."""

    MAX_JUMP_M = 15.0

    def __init__(self, route_world: np.ndarray) -> None:
        self.route = route_world
        self.length_m = float(arc_lengths(route_world)[-1]) if len(route_world) > 1 else 0.0
        self.best_m = 0.0
        self._last_m = 0.0

    def update(self, xy: np.ndarray) -> float:
        _, s, _ = project_to_polyline(xy, self.route)
        if abs(s - self._last_m) < self.MAX_JUMP_M:
            self._last_m = s
            self.best_m = max(self.best_m, s)
        return self.best_m


# --------------------------------------------------------------------------- pure episode rules
def step_cap(route_length_m: float, target_speed_mps: float, dt_s: float = fmt.DT_S) -> int:
    """Steps allowed for a route: (2 x length / target speed + 10 s) / dt, rounded up."""
    return math.ceil((CAP_ROUTE_FACTOR * route_length_m / max(target_speed_mps, 0.1) + CAP_SLACK_S) / dt_s)


def route_completion(progress_m: float, route_length_m: float, arrived: bool) -> float:
    """Progress over route length in [0, 1]; 1 on arrival (the destination zone starts before the route's end)."""
    if arrived:
        return 1.0
    if route_length_m <= 1.0:
        return 0.0
    return float(np.clip(progress_m / route_length_m, 0.0, 1.0))


def driving_score(completion: float, crash_vehicle: bool, crash_object: bool, out_of_road: bool) -> float:
    """Completion x 0.6 (vehicle collision) x 0.65 (object collision) x 0.7 (out of road)."""
    return float(completion * SCORE_VEHICLE ** bool(crash_vehicle) * SCORE_OBJECT ** bool(crash_object)
                 * SCORE_OUT_OF_ROAD ** bool(out_of_road))


def at_fault(kind: str, ego_speed_mps: float, other_xy_ego: np.ndarray | None,
             ego_lateral_mps: float) -> tuple[bool, str]:
    """Decide whether the ego caused a collision (docs/closed_loop_protocol.md), with the rule that decided.

    Args:
        kind: "vehicle" or "object" (objects and buildings).
        ego_speed_mps: the ego's speed at the collision.
        other_xy_ego: (2,) the other vehicle's centre in the ego frame (x forward, y left), m; None if unknown.
        ego_lateral_mps: the ego's speed across its lane, left positive.
    """
    if kind != "vehicle":
        return True, "object"
    if ego_speed_mps < STOPPED_MPS:
        return False, "stopped"
    if other_xy_ego is None:
        return True, "unknown_other"
    x, y = float(other_xy_ego[0]), float(other_xy_ego[1])
    bearing = abs(math.degrees(math.atan2(y, x)))
    if bearing <= FRONT_SECTOR_DEG:
        return True, "front"
    if bearing >= REAR_SECTOR_DEG:
        return False, "rear_ended"
    towards = ego_lateral_mps * math.copysign(1.0, y)
    if towards > LATERAL_TOWARDS_MPS:
        return True, "side_moving_towards"
    return False, "side_hit"


def spawn_is_clear(others_xy_ego: np.ndarray, initial_speed_mps: float, lane_width_m: float) -> bool:
    """Whether no vehicle overlaps the ego or stands on its lane within the clear distance ahead.

    others_xy_ego: (N, 2) other vehicles' centres in the ego frame (x forward, y left), m.
    Blocked when a centre is within a vehicle length / width of the ego's (overlap), or on the
    ego's lane (|y| < lane width / 2) ahead, closer than 4.5 m + 10 m + 2 s x initial speed.
    """
    pts = np.asarray(others_xy_ego, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return True
    overlap = (np.abs(pts[:, 0]) < VEHICLE_LENGTH_M) & (np.abs(pts[:, 1]) < VEHICLE_WIDTH_M)
    reach = VEHICLE_LENGTH_M + SPAWN_CLEAR_M + SPAWN_CLEAR_S * max(initial_speed_mps, 0.0)
    ahead = (pts[:, 0] > 0.0) & (pts[:, 0] < reach) & (np.abs(pts[:, 1]) < 0.5 * lane_width_m)
    return not bool((overlap | ahead).any())


# --------------------------------------------------------------------------- one episode in the simulator
def _others(env, vehicle) -> list:
    from metadrive.component.vehicle.base_vehicle import BaseVehicle
    return [o for o in env.engine.get_objects(lambda o: isinstance(o, BaseVehicle)).values() if o is not vehicle]


def _ego_frame(vehicle, xy_md: np.ndarray) -> np.ndarray:
    """MetaDrive-frame points (N, 2) into the ego frame (x forward, y left; right-handed)."""
    pos = np.asarray(vehicle.position, dtype=np.float64)[:2]
    pose = np.array([pos[0], -pos[1], -float(vehicle.heading_theta)])
    pts = np.asarray(xy_md, dtype=np.float64).reshape(-1, 2) * [1.0, -1.0]
    return world_to_ego(pts, pose) if len(pts) else pts


def _others_xy_ego(env, vehicle) -> np.ndarray:
    """Every other vehicle's centre in the ego frame, (N, 2); (0, 2) when there is none."""
    return _ego_frame(vehicle, np.array([np.asarray(o.position)[:2] for o in _others(env, vehicle)]).reshape(-1, 2))


def gaps_m(others_xy_ego: np.ndarray, corridor_half_width_m: float = 2.5) -> tuple[float, float]:
    """(distance to the nearest other vehicle, distance to the nearest one ahead within the corridor), NaN if none:
    centre to centre, from vehicle positions in the ego frame (x forward, y left)."""
    if not len(others_xy_ego):
        return float("nan"), float("nan")
    ahead = others_xy_ego[(others_xy_ego[:, 0] > 0) & (np.abs(others_xy_ego[:, 1]) <= corridor_half_width_m)]
    return (float(np.linalg.norm(others_xy_ego, axis=1).min()),
            float(ahead[:, 0].min()) if len(ahead) else float("nan"))


def _fault(env, vehicle, kind: str, lateral_mps: float) -> tuple[bool, str]:
    """Apply `at_fault` to the simulator state at a collision: the other vehicle is the nearest one."""
    other_xy = None
    if kind == "vehicle":
        xy = _others_xy_ego(env, vehicle)
        if len(xy):
            other_xy = xy[int(np.argmin(np.linalg.norm(xy, axis=1)))]
    return at_fault(kind, float(vehicle.speed) / 3.6, other_xy, lateral_mps)


def _lane_offset_m(vehicle) -> float:
    """The ego's offset from its lane's centre line, left positive (right-handed; MetaDrive's lateral
    coordinate is positive to the right, its y axis being flipped), m; NaN off any lane."""
    lane = vehicle.lane
    return -float(lane.local_coordinates(vehicle.position)[1]) if lane is not None else float("nan")


def _lateral_mps(vehicle) -> float:
    """The ego's speed across its current lane, left positive (right-handed), m/s."""
    lane = vehicle.lane
    if lane is None:
        return 0.0
    long, _ = lane.local_coordinates(vehicle.position)
    h_lane = -float(lane.heading_theta_at(long))
    h_ego = -float(vehicle.heading_theta)
    return float(vehicle.speed) / 3.6 * math.sin(h_ego - h_lane)


def drive(seed: int, setting: str, runner, policy, tracker: PurePursuit, density: float = scenario.TRAFFIC_DENSITY,
          trace: list[dict[str, float]] | None = None, max_steps: int | None = None,
          on_step: Callable[[int], None] | None = None) -> EpisodeResult:
    """Drive one seed with one setting (runner/policy None for the expert) over its whole route.

    Ends on arrival, a crash, out of road (MetaDrive's, or the sidewalk) or the step cap from the route
    length (`max_steps` overrides it: quick looks only). A seed whose spawn is not clear ends at once
    as SPAWN_BLOCKED (the same for every setting: it depends on the seed only).
    trace: a list to append one row per planned step to (what the model saw and planned, what the
    tracker did, where the car was in its lane): how to see why an episode ended as it did.
    on_step(step) is called after every simulated step (a worker's heartbeat: `sim_workers.StallWatch.beat`).
    """
    from deead_ros.model.encoding import FrameInputs, SpeedHistory
    start = time.time()
    ep = scenario.episode_config(seed, traffic_density=density)
    env = episode.make_env(seed, ep, scenario.IMAGE_W, scenario.IMAGE_H, expert=setting == EXPERT,
                           camera=runner is not None)
    exits, plan_ms = [], []
    flags = {"crash_vehicle": False, "crash_object": False, "out_of_road": False, "left_lane": False}
    end_reason, steps, fault, cap = "max_steps", 0, (False, ""), 0
    try:
        obs = episode.start_episode(env, ep)
        vehicle = env.vehicle
        progress = RouteProgress(labels.route_ahead(vehicle, 1e5)["points"])
        cap = max_steps or step_cap(progress.length_m, ep["target_speed_kmh"] / 3.6)
        xy = _others_xy_ego(env, vehicle)
        lane_width = float(vehicle.navigation.current_lane.width)
        if not spawn_is_clear(xy, ep["initial_speed_frac"] * ep["target_speed_kmh"] / 3.6, lane_width):
            end_reason = SPAWN_BLOCKED
            cap = 0
        previous_yaw = None
        speeds = SpeedHistory(runner.encoder.accel_window_s) if runner is not None else None
        for steps in range(1, cap + 1):
            action = [0.0, 0.0]
            if runner is not None and speeds is not None:       # speeds exists whenever runner does
                seen = episode.observe(obs, vehicle)
                yaw_rate = 0.0 if previous_yaw is None else \
                    float(wrap_angle(seen.pose[2] - previous_yaw)) / fmt.DT_S
                previous_yaw = seen.pose[2]
                valid = seen.route_valid
                route = world_to_ego(seen.route_world[:valid], seen.pose) if valid >= 2 else None
                speeds.add(steps * fmt.DT_S, seen.speed_mps)
                accel = speeds.acceleration_mps2()
                result = runner.plan(FrameInputs(seen.image, route, seen.speed_mps, yaw_rate,
                                                 seen.labels["command"], accel), policy=policy)
                exits.append(result.trace.exit_layer)
                plan_ms.append(result.total_ms)
                action = list(tracker.action(result.trajectory_m, seen.speed_mps))
                if trace is not None:
                    nearest, ahead = gaps_m(_others_xy_ego(env, vehicle))
                    trace.append({
                        "t_s": round(steps * fmt.DT_S, 2), "speed_mps": seen.speed_mps,
                        "accel_mps2": accel,
                        "plan_speed_mps": tracker.target_speed(result.trajectory_m), "steering": action[0],
                        "throttle": action[1], "exit_layer": result.trace.exit_layer,
                        "lane_offset_m": _lane_offset_m(vehicle),
                        "plan_lateral_3s_m": float(result.trajectory_m[-1, 1]),
                        "route_lateral_3s_m": float(result.prior.trajectory_m[-1, 1])
                        if result.prior.is_valid else float("nan"),
                        "nearest_vehicle_m": nearest, "vehicle_ahead_m": ahead})
            lateral = _lateral_mps(vehicle)            # before the step: how the ego moved into a collision
            obs, _reward, done, info = env.step(action)
            if on_step is not None:
                on_step(steps)
            pos = np.asarray(vehicle.position, dtype=np.float64)
            progress.update(np.array([pos[0], -pos[1]]))
            flags["left_lane"] |= bool(vehicle.on_white_continuous_line or vehicle.on_yellow_continuous_line)
            flags["crash_vehicle"] |= bool(info.get("crash_vehicle", False))
            flags["crash_object"] |= bool(info.get("crash_object", False) or info.get("crash_building", False))
            flags["out_of_road"] |= bool(info.get("out_of_road", False) or vehicle.crash_sidewalk)
            if (flags["crash_vehicle"] or flags["crash_object"]) and not fault[1]:
                fault = _fault(env, vehicle, "vehicle" if flags["crash_vehicle"] else "object", lateral)
            if done or flags["out_of_road"]:
                end_reason = episode.why_done(info) if done else "out_of_road"
                break
    finally:
        env.close()
    nan = float("nan")
    arrived = end_reason == "arrive_dest"
    completion = route_completion(progress.best_m, progress.length_m, arrived)
    return EpisodeResult(
        seed=seed, setting=setting, steps=steps if end_reason != SPAWN_BLOCKED else 0, max_steps=cap,
        end_reason=end_reason, arrived=arrived, at_fault=fault[0], fault_reason=fault[1],
        progress_m=round(progress.best_m, 2), route_length_m=round(progress.length_m, 2),
        completion=round(completion, 4),
        score=round(driving_score(completion, flags["crash_vehicle"], flags["crash_object"], flags["out_of_road"]), 4),
        mean_exit_layer=float(np.mean(exits)) if exits else nan,
        plan_ms_p50=float(np.percentile(plan_ms, 50)) if plan_ms else nan,
        plan_ms_p95=float(np.percentile(plan_ms, 95)) if plan_ms else nan,
        plan_ms_mean=float(np.mean(plan_ms)) if plan_ms else nan,
        wall_s=round(time.time() - start, 1), **flags)


_episode_worker: dict[str, Any] = {}      # in a worker process: its runner and stall watch


def max_checks_of(protocol: int) -> int:
    """The bound on deead's looks a protocol drives with: none in protocol 2 (before the bounded tail existed)."""
    from deead_ros.parameters import default
    return 0 if protocol <= PROTOCOL_VERSION else int(default("exit.max_checks"))


def open_runner(model: str, first_checkpoint: int, max_checks: int) -> Any:
    """The runner every model-driven episode plans with: ONNX Runtime on one thread (a worker per core)."""
    from deead_ros.engines import make_engine
    from deead_ros.exit import ExitSettings, PriorSettings
    from deead_ros.runner import Runner
    return Runner(make_engine("onnxruntime", model, num_threads=1),
                  ExitSettings(first_checkpoint=first_checkpoint, max_checks=max_checks), PriorSettings())


def policy_for(setting: str, runner: Any) -> Any:
    """The exit policy a setting name stands for, on the runner's own exit settings."""
    from deead_ros.exit.settings import named_settings
    return named_settings(setting, runner.settings[0]).build_policy()


def init_episode_worker(model: str, first_checkpoint: int, max_checks: int, watch: Any = None) -> None:
    """Open the engines once per worker process (a `sim_workers` initializer); `watch.beat` hears every step."""
    _episode_worker.update(runner=open_runner(model, first_checkpoint, max_checks), watch=watch)


def drive_job(job: tuple[int, str, float, int | None]) -> dict[str, Any]:
    """Drive one (seed, setting, density, step cap) in a worker opened by `init_episode_worker`; its record."""
    seed, setting, density, max_steps = job
    runner = None if setting == EXPERT else _episode_worker["runner"]
    policy = None if runner is None else policy_for(setting, runner)
    watch = _episode_worker.get("watch")
    return drive(seed, setting, runner, policy, PurePursuit(dt_s=runner.dt_s if runner else 0.5), density=density,
                 max_steps=max_steps, on_step=watch.beat if watch is not None else None).as_dict()


def failed(seed: int, setting: str, reason: str, wall_s: float, note: str = "") -> dict[str, Any]:
    """The record of an episode the simulator did not finish: SIM_ERROR (first attempt) or SIM_FAILURE."""
    nan = float("nan")
    record = EpisodeResult(seed=seed, setting=setting, steps=0, max_steps=0, end_reason=reason, arrived=False,
                           crash_vehicle=False, crash_object=False, out_of_road=False, left_lane=False,
                           at_fault=False, fault_reason="", progress_m=0.0, route_length_m=0.0, completion=nan,
                           score=nan, mean_exit_layer=nan, plan_ms_p50=nan, plan_ms_p95=nan,
                           wall_s=round(wall_s, 1)).as_dict()
    record["note"] = note
    return record


# --------------------------------------------------------------------------- resume bookkeeping
def seed_status(records: list[dict[str, Any]], seed: int) -> str | None:
    """NOT_SCORED reason of a seed (any setting blocked or failed on it), or None."""
    reasons = {r["end_reason"] for r in records if r["seed"] == seed}
    return next((reason for reason in NOT_SCORED if reason in reasons), None)


def seed_order(seed: int, settings: list[str]) -> list[str]:
    """The settings in an order drawn from the seed: a simulator hang or a slow machine then falls on no
    setting more than another (protocol 3), and a resumed run drives them in the same order."""
    return [settings[i] for i in np.random.default_rng(seed).permutation(len(settings))]


def next_job(records: list[dict[str, Any]], seed: int, settings: list[str],
             running: Collection[tuple[int, str]] = (), shuffle: bool = False) -> tuple[str, int] | None:
    """The next (setting, attempt) to run on a seed, attempt 1 or 2; None when nothing is left to start.

    The settings go in their given order, or in `seed_order` with shuffle.

    A (seed, setting) is finished once it has a record other than SIM_ERROR; one SIM_ERROR record
    means the next run is its second (last) attempt; one in `running` (being driven by a worker) is
    not handed out again. A seed that is not scored (spawn blocked, simulator failure) needs no more
    driving: `fill_not_scored` records it for the other settings.
    """
    if seed_status(records, seed) is not None:
        return None
    for setting in seed_order(seed, settings) if shuffle else settings:
        if (seed, setting) in running:
            continue
        mine = [r["end_reason"] for r in records if r["seed"] == seed and r["setting"] == setting]
        if any(reason != SIM_ERROR for reason in mine):
            continue
        return setting, len(mine) + 1
    return None


def fill_not_scored(records: list[dict[str, Any]], seed: int, settings: list[str]) -> list[dict[str, Any]]:
    """Records for the settings a not-scored seed has none for yet (the same reason for every setting)."""
    reason = seed_status(records, seed)
    if reason is None:
        return []
    have = {r["setting"] for r in records if r["seed"] == seed and r["end_reason"] != SIM_ERROR}
    return [failed(seed, s, reason, 0.0, note=FILLED_NOTE) for s in settings if s not in have]


def failures_by_setting(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """The seeds on which each setting's own episode failed twice in the simulator: a hang can depend on
    the trajectory, so a setting that hangs more often loses its seeds for every setting."""
    out: dict[str, list[int]] = {}
    for r in records:
        if r["end_reason"] == SIM_FAILURE and r.get("note") != FILLED_NOTE:
            out.setdefault(r["setting"], []).append(r["seed"])
    return {setting: sorted(seeds) for setting, seeds in sorted(out.items())}


def scored_seeds(records: list[dict[str, Any]], settings: list[str]) -> list[int]:
    """Seeds with a driving outcome for every setting (not blocked, no simulator failure)."""
    final: dict[int, set[str]] = {}
    for r in records:
        if r["end_reason"] not in (SIM_ERROR,) + NOT_SCORED:
            final.setdefault(r["seed"], set()).add(r["setting"])
    return sorted(seed for seed, have in final.items()
                  if set(settings) <= have and seed_status(records, seed) is None)


# --------------------------------------------------------------------------- statistics
def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate: honest at 0 and 1 and for small n (unlike p +- 1.96 se)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs b (only A) and c (only B): binomial(b+c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0) -> dict[str, float | list[float]]:
    """Mean difference a - b over paired values and its 90% / 95% percentile intervals (seeds resampled)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two equal, non-empty samples; got {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(samples, d.size))].mean(axis=1)
    lo90, hi90, lo95, hi95 = np.percentile(means, [5.0, 95.0, 2.5, 97.5])
    return {"diff": float(d.mean()), "ci90": [float(lo90), float(hi90)], "ci95": [float(lo95), float(hi95)]}


def paired_rate_interval(x: np.ndarray, y: np.ndarray, z: float) -> list[float]:
    """Newcombe's interval (1998, method 10) for the difference of two paired rates, mean(x) - mean(y).

    Built from the two Wilson intervals and the correlation of the pairs, so it stays honest where
    a bootstrap collapses: with no discordant pair a bootstrap interval is [0, 0] at any n, this one
    is not (e.g. +-0.19 at 3 seeds, +-0.013 at 200). The correlation is Newcombe's corrected one
    (with AD > BC its numerator is max(AD - BC - N/2, 0), otherwise AD - BC; as in Altman et al. 2000,
    "Statistics with confidence", ch. 6): the plain phi is 1 when both settings crash on the same seeds
    and shrinks the interval to the Wilson intervals' asymmetry, [0, 0] for 15 shared crashes in 30 seeds.
    """
    x, y = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool)
    n = x.size
    a, b = int(np.sum(x & y)), int(np.sum(x & ~y))
    c, d = int(np.sum(~x & y)), int(np.sum(~x & ~y))
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    denominator = math.sqrt(float((a + b) * (c + d) * (a + c) * (b + d)))
    association = a * d - b * c
    corrected = association - n / 2 if association > n / 2 else min(association, 0)
    phi = corrected / denominator if denominator > 0 else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return [p1 - p2 - delta, p1 - p2 + epsilon]


def bootstrap_mean_interval(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[float]:
    """95% percentile interval of a mean (seeds resampled)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    return [float(v) for v in np.percentile(means, [2.5, 97.5])]


def non_inferior(boot: dict[str, Any], margin: float, higher_is_worse: bool) -> str:
    """Verdict against a margin from the 90% interval (one-sided 95%): non-inferior, inferior or inconclusive.

    Fewer than MIN_SEEDS_FOR_VERDICT seeds give "too few seeds" whatever the interval says.
    """
    if boot.get("seeds", MIN_SEEDS_FOR_VERDICT) < MIN_SEEDS_FOR_VERDICT:
        return "too few seeds"
    lo, hi = boot["ci90"]
    if higher_is_worse:
        return "non-inferior" if hi < margin else "inferior" if lo > margin else "inconclusive"
    return "non-inferior" if lo > -margin else "inferior" if hi < -margin else "inconclusive"


def _outcomes(r: dict[str, Any]) -> dict[str, float]:
    return {"collision": float(r["crash_vehicle"] or r["crash_object"]), "at_fault": float(r["at_fault"]),
            "completion": float(r["completion"]), "score": float(r["score"])}


def compare(setting_rows: list[dict[str, Any]], full_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A setting against full depth on the same seeds (rows in the same seed order): tests and verdicts."""
    out: dict[str, Any] = {"seeds": len(setting_rows)}
    a = [_outcomes(r) for r in setting_rows]
    b = [_outcomes(r) for r in full_rows]
    for metric, margin, higher_is_worse in MARGINS:
        x = np.array([o[metric] for o in a])
        y = np.array([o[metric] for o in b])
        boot: dict[str, Any] = {**paired_bootstrap(x, y), "seeds": len(x)}
        if metric in ("collision", "at_fault"):      # rates: Newcombe's paired interval, not the bootstrap
            boot.update(ci90=paired_rate_interval(x > 0, y > 0, 1.645), ci95=paired_rate_interval(x > 0, y > 0, 1.96),
                        interval="newcombe")
        else:
            boot["interval"] = "paired bootstrap"
        row = {**boot, "margin": margin, "verdict": non_inferior(boot, margin, higher_is_worse)}
        if metric in ("collision", "at_fault"):
            only_setting, only_full = int(np.sum((x > 0) & (y == 0))), int(np.sum((x == 0) & (y > 0)))
            row.update(only_setting=only_setting, only_full=only_full,
                       mcnemar_p=mcnemar_exact(only_setting, only_full))
        out[metric] = row
    collision, score = out["collision"], out["score"]
    enough = len(setting_rows) >= MIN_SEEDS_FOR_VERDICT
    out["worse_because"] = [reason for reason, fired in (
        ("it collides more", collision["mcnemar_p"] < 0.05 and collision["diff"] > 0),
        ("its driving score is lower", score["ci95"][1] < 0.0)) if enough and fired]
    out["worse_than_full"] = bool(out["worse_because"])
    return out


def summarise(records: list[dict[str, Any]], settings: list[str]) -> dict[str, Any]:
    """Per setting, over the seeds every setting has a driving outcome for; comparisons against full depth.

    Returns {"seeds": [...], "not_scored": {reason: [seeds]}, "sim_failure_by_setting": {setting: [seeds]},
    "settings": {...}, "comparisons": {...}}.
    """
    seeds = scored_seeds(records, settings)
    by_key: dict[tuple[int, str], dict[str, Any]] = {}
    for r in records:
        if r["end_reason"] in (SIM_ERROR,) + NOT_SCORED:
            continue
        episode = (r["seed"], r["setting"])
        if episode in by_key:
            raise ValueError(f"two driving outcomes for seed {episode[0]}, setting {episode[1]}: two runs wrote one "
                             "log? Keep one record per seed and setting (the earlier one) and report again.")
        by_key[episode] = r
    not_scored: dict[str, list[int]] = {}
    for seed in sorted({r["seed"] for r in records}):
        reason = seed_status(records, seed)
        if reason is not None:
            not_scored.setdefault(reason, []).append(seed)
    out: dict[str, Any] = {"seeds": seeds, "not_scored": not_scored,
                           "sim_failure_by_setting": failures_by_setting(records), "settings": {}, "comparisons": {}}
    for setting in settings:
        rows = [by_key[(seed, setting)] for seed in seeds]
        n = len(rows)
        row: dict[str, Any] = {"episodes": n}
        for key, hits in (("success", [r["arrived"] for r in rows]),
                          ("collision", [r["crash_vehicle"] or r["crash_object"] for r in rows]),
                          ("vehicle_collision", [r["crash_vehicle"] for r in rows]),
                          ("object_collision", [r["crash_object"] for r in rows]),
                          ("at_fault", [r["at_fault"] for r in rows]),
                          ("out_of_road", [r["out_of_road"] for r in rows]),
                          ("left_lane", [r["left_lane"] for r in rows]),
                          ("timeout", [r["end_reason"] == "max_steps" for r in rows])):
            k = int(np.sum(hits))
            row[f"{key}_rate"] = k / n if n else float("nan")
            row[f"{key}_ci"] = list(wilson_interval(k, n))
        for key in ("completion", "score"):
            values = np.array([r[key] for r in rows], dtype=np.float64)
            row[key] = float(values.mean()) if n else float("nan")
            row[f"{key}_ci"] = bootstrap_mean_interval(values)
        exits = [r["mean_exit_layer"] for r in rows if not math.isnan(r["mean_exit_layer"])]
        row["mean_exit_layer"] = float(np.mean(exits)) if exits else float("nan")
        row["plan_ms_p50"] = float(np.nanmedian([r["plan_ms_p50"] for r in rows])) if exits else float("nan")
        for key in ("plan_ms_mean", "plan_ms_p95"):        # the mean over episodes of each episode's mean / p95
            times = np.array([r.get(key, float("nan")) for r in rows], dtype=np.float64)
            row[key] = float(np.nanmean(times)) if exits and not np.all(np.isnan(times)) else float("nan")
        out["settings"][setting] = row
        if setting not in (FULL, EXPERT) and FULL in settings and n:
            out["comparisons"][setting] = compare(rows, [by_key[(seed, FULL)] for seed in seeds])
    return out


def confirmation_headline(summary: dict[str, Any], setting: str = CONFIRMED_SETTING,
                          fixed: str = CONFIRMATION_FIXED) -> dict[str, Any]:
    """The confirmation's answer in one record: planning time against full depth (the mean and the p95 of each
    episode's planning times, averaged over the paired seeds), the four non-inferiority verdicts, and whether the
    fixed exit at the same depth drives worse on the score."""
    rows, full = summary["settings"][setting], summary["settings"][FULL]
    verdicts = summary["comparisons"][setting]
    worse = summary["comparisons"].get(fixed, {})
    return {"setting": setting, "seeds": len(summary["seeds"]),
            "mean_exit_layer": rows["mean_exit_layer"],
            "plan_ms_mean_ratio": rows["plan_ms_mean"] / full["plan_ms_mean"],
            "plan_ms_p95_ratio": rows["plan_ms_p95"] / full["plan_ms_p95"],
            "non_inferior": {metric: verdicts[metric]["verdict"] == "non-inferior" for metric, _, _ in MARGINS},
            "matched_fixed_setting": fixed,
            "matched_fixed_worse": "its driving score is lower" in worse.get("worse_because", [])}
