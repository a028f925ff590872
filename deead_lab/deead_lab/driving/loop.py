"""The drive loop: one closed-loop episode in MetaDrive, every camera frame planned by `Runner.plan` (the node's
code path) and tracked by the pure-pursuit tracker; its record; the runner and exit policy each setting drives
with, and the worker-process entry points the closed-loop benchmark schedules."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from deead_lab.sim import episode, labels, scenario
from deead_lab import dataset_format as fmt
from deead_ros.geometry import arc_lengths, project_to_polyline, world_to_ego, wrap_angle

from deead_lab.closed_loop import EXPERT, SPAWN_BLOCKED, EpisodeResult
from deead_lab.driving.rules import at_fault, driving_score, route_completion, spawn_is_clear, step_cap
from deead_lab.driving.tracker import PurePursuit


_episode_worker: dict[str, Any] = {}      # in a worker process: its runner and stall watch




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


