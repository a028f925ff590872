"""One episode: observe the simulator each step (camera, pose, route, command), drive it to its end, and turn the
record into a data-set episode with the expert's future in each frame's ego frame."""
from __future__ import annotations

import functools
import random
import copy
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from deead_lab.sim.commander import LaneChangeCommander
from deead_lab.sim.labels import (LOOKAHEAD_SCENARIO_M, lead_gap, route_ahead, route_labels, sample_route,
                                  scenario_label, to_right_handed)
from deead_lab.sim.scenario import TRAFFIC_DENSITY, episode_config, patch_panda3d
from deead_lab.sim.traffic import EXPERT_VERSION, make_traffic_reactive, step_cache, yielding_idm_class
from deead_lab import dataset_format as fmt
from deead_ros.geometry import wrap_angle

# --------------------------------------------------------------------------- one episode
def make_env(seed: int, ep: dict[str, Any], width: int, height: int, expert: bool = True, camera: bool = True):
    """Build a MetaDrive env for exactly this seed (`start_seed`, one scenario).

    expert: the ego is driven by the yielding IDM expert (the action given to `step` is ignored);
    False: by the [steering, throttle] actions given to `step` (closed-loop evaluation). Background
    traffic becomes the yielding IDM too in `start_episode` when ep["reactive_traffic"]. The env ends an episode on
    arrival, a crash or MetaDrive's own out-of-road (`not on_lane`); touching a solid line does not end it
    (`on_continuous_line_done=False`): the closed loop reports it as "left the lane".

    Python's and numpy's global random generators are seeded from `seed` first: MetaDrive 0.2.6 draws
    parts of what the camera renders from them, so without this two runs of one seed see different
    images (about a fifth of the pixels of the first frame), and a model driving it ends differently.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    patch_panda3d()
    from metadrive.envs.metadrive_env import MetaDriveEnv
    from metadrive.component.map.base_map import BaseMap
    from metadrive.component.map.pg_map import MapGenerateMethod
    from metadrive.policy.env_input_policy import EnvInputPolicy

    idm_base: Any = yielding_idm_class()             # a subclass of MetaDrive's IDMPolicy, made at run time

    class ExpertIDM(idm_base):
        NORMAL_SPEED = ep["target_speed_kmh"]          # km/h, as IDMPolicy compares it with speed

        def act(self, *args, **kwargs):
            target = None
            if ep.get("lane_changes"):
                if getattr(self, "lane_changes", None) is None:
                    self.lane_changes = LaneChangeCommander(ep["lane_changes"])
                me = self.control_object
                others = [pos for v, pos, _speed, _active in step_cache(self.engine)["vehicles"] if v is not me]
                target = self.lane_changes.update(me, self.engine.episode_step * fmt.DT_S, others)
            if target is None:
                return super().act(*args, **kwargs)
            # IDM's own act steers to its lane and updates the PID controllers' state: steer once, to the target
            controllers = copy.deepcopy((self.heading_pid, self.lateral_pid))
            _steering, acc = super().act(*args, **kwargs)
            self.heading_pid, self.lateral_pid = controllers
            return [self.steering_control(target), acc]

    config = dict(
        use_render=False, offscreen_render=camera, show_terrain=False, show_skybox=False,
        show_interface=False, show_logo=False, show_fps=False, window_size=(width, height),
        start_seed=seed, environment_num=1,
        map_config={BaseMap.GENERATE_TYPE: MapGenerateMethod.BIG_BLOCK_SEQUENCE,
                    BaseMap.GENERATE_CONFIG: ep["blocks"], BaseMap.LANE_NUM: ep["lane_num"],
                    BaseMap.LANE_WIDTH: 3.5},
        traffic_density=ep["traffic_density"], traffic_mode=ep["traffic_mode"],
        random_spawn_lane_index=True, agent_policy=ExpertIDM if expert else EnvInputPolicy, rgb_clip=False,
        on_continuous_line_done=False, horizon=None,
        vehicle_config=dict(show_navi_mark=False, spawn_longitude=ep["spawn_longitude"]),
    )
    if camera:                 # state-only otherwise (the expert needs no image): the same physics, 10x faster
        config["vehicle_config"].update(image_source="rgb_camera", rgb_camera=(width, height), stack_size=1,
                                        rgb_clip=False)
    return MetaDriveEnv(config)


@dataclass(frozen=True)
class Observation:
    """What the ego sees at one step, in the right-handed world frame (the data set's conventions)."""

    image: np.ndarray            # (H, W, 3) uint8 RGB front camera
    pose: np.ndarray             # (3,) x, y, yaw
    speed_mps: float
    route: dict[str, Any]        # route_ahead's dense route and pieces
    route_world: np.ndarray      # (ROUTE_POINTS, 2) resampled route, padded
    route_valid: int
    labels: dict[str, Any]       # route_labels: command, junction, lane change, curvature


def observe(obs: dict[str, Any], vehicle, lane_change: tuple[Any, float] | None = None) -> Observation:
    """Read the camera image, ego pose and speed, and the route ahead (with a commanded lane change) and its command."""
    img = np.asarray(obs["image"])[..., -1]                    # (H, W, 3) BGR floats 0..255
    pos = np.asarray(vehicle.position, dtype=np.float64)
    yaw = -float(vehicle.heading_theta)
    route = route_ahead(vehicle, (fmt.ROUTE_POINTS - 1) * fmt.ROUTE_SPACING_M + 2.0, lane_change)
    pts, valid = sample_route(route["points"])
    return Observation(np.clip(img[..., ::-1], 0, 255).astype(np.uint8),
                       np.array([pos[0], -pos[1], float(wrap_angle(yaw))]), float(vehicle.speed) / 3.6,
                       route, pts, valid, route_labels(route, yaw))


def _read_rgb_array(buffer) -> np.ndarray:
    """MetaDrive's `ImageBuffer.get_rgb_array` without its detour through a Python list (4 ms a frame).

    The same bytes in the same layout: the screenshot's BGRA rows, flipped to top-down, alpha dropped.
    """
    if buffer.engine.episode_step <= 1:
        buffer.engine.graphicsEngine.renderFrame()
    shot = buffer.cam.node().getDisplayRegion(0).getScreenshot()
    pixels = np.frombuffer(memoryview(shot.getRamImage()), dtype=np.uint8)
    return pixels.reshape((shot.getYSize(), shot.getXSize(), 4))[::-1, :, :-1].copy()


def _render_only_what_is_read(env) -> None:
    """Draw only the ego's RGB camera and read it without a Python list; its images stay byte-identical.

    MetaDrive 0.2.6 draws, every step, its main window and a depth camera and a mini map besides the
    RGB camera. Each draws into an output of its own, so the RGB camera's images stay byte-identical
    (`--check-render`), while llvmpipe no longer draws the scene three more times a step.
    """
    engine = env.engine
    if engine.win is None:                 # state-only env: nothing is drawn at all
        return
    for i in range(engine.win.getNumDisplayRegions()):
        engine.win.getDisplayRegion(i).setActive(False)
    read = env.vehicle.config["image_source"]
    for name, sensor in env.vehicle.image_sensors.items():
        if name != read:
            sensor.buffer.setActive(False)
    camera = type(env.vehicle.image_sensors[read])._singleton
    camera.get_rgb_array = functools.partial(_read_rgb_array, camera)


def start_episode(env, ep: dict[str, Any], stock_rendering: bool = False) -> dict[str, Any]:
    """Reset the env and give the ego the episode's initial speed; returns the first observation.

    stock_rendering: draw and read as MetaDrive does (`--check-render`'s reference), not `_render_only_what_is_read`.
    """
    obs = env.reset()
    if not stock_rendering:
        _render_only_what_is_read(env)
    if ep.get("reactive_traffic", False):
        make_traffic_reactive(env)
    v0 = ep["initial_speed_frac"] * ep["target_speed_kmh"] / 3.6
    if v0 > 0.1:
        env.vehicle.set_velocity(env.vehicle.heading, v0)
    return obs


def why_done(info: dict[str, Any]) -> str:
    """The simulator's reason for ending an episode."""
    return next((k for k in ("arrive_dest", "crash_vehicle", "crash_object", "crash_building", "out_of_road",
                             "max_step") if info.get(k)), "done")


def run_episode(seed: int, max_steps: int, width: int, height: int,
                traffic_density: float = TRAFFIC_DENSITY, lane_change_share: float = 0.0,
                on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Drive one seed with the expert and return the episode dict (tail without future dropped).

    on_step(step) is called after every simulated step (the worker's heartbeat).
    """
    ep = episode_config(seed, traffic_density=traffic_density, lane_change_share=lane_change_share)
    env = make_env(seed, ep, width, height)
    try:
        t_reset = time.time()
        obs = start_episode(env, ep)
        vehicle = env.vehicle
        reset_s = time.time() - t_reset
        rec: dict[str, list] = {k: [] for k in (
            "images", "pose", "speed", "route_world", "route_valid", "command", "labels", "lead",
            "block", "lane_key", "crash_vehicle", "crash_object", "out_of_road")}
        info: dict[str, Any] = {}
        end_reason = "max_steps"
        t0 = time.time()
        from metadrive.component.vehicle.base_vehicle import BaseVehicle
        expert = env.engine.get_policy(vehicle.name)
        for step in range(max_steps):
            if step > 0:
                obs, _r, done, info = env.step([0.0, 0.0])
            commander = getattr(expert, "lane_changes", None)
            seen = observe(obs, vehicle, commander.route_hint() if commander is not None else None)
            xy, route, pts, labels = seen.pose[:2], seen.route, seen.route_world, seen.labels
            rec["images"].append(seen.image)
            rec["pose"].append(seen.pose.tolist())
            rec["speed"].append(seen.speed_mps)
            rec["route_world"].append(pts)
            rec["route_valid"].append(seen.route_valid)
            rec["command"].append(labels["command"])
            rec["labels"].append(labels)
            others = [o for o in env.engine.get_objects(lambda o: isinstance(o, BaseVehicle)).values()
                      if o is not vehicle]
            others_xy = to_right_handed(np.array([np.asarray(o.position)[:2] for o in others])) if others \
                else np.zeros((0, 2))
            rec["lead"].append(lead_gap(pts[:seen.route_valid], route["lane_width"], xy, others_xy))
            rec["block"].append(route["pieces"][0]["block"])
            lane = vehicle.navigation.current_lane
            rec["lane_key"].append(f"{lane.index[0]}|{lane.index[1]}|{lane.index[2]}")
            rec["crash_vehicle"].append(bool(info.get("crash_vehicle", False)))
            rec["crash_object"].append(bool(info.get("crash_object", False)))
            rec["out_of_road"].append(bool(info.get("out_of_road", False)))
            if on_step is not None:
                on_step(step)
            if step > 0 and done:
                end_reason = why_done(info)
                break
        sim_s = time.time() - t0
        commander = getattr(expert, "lane_changes", None)
        ep = dict(ep, lane_changes_made=commander.completed if commander is not None else 0)
    finally:
        env.close()
    return finish_episode(seed, ep, rec, end_reason, reset_s, sim_s, width, height, max_steps)


def finish_episode(seed, ep, rec, end_reason, reset_s, sim_s, width, height, max_steps) -> dict[str, Any]:
    """Post-process one recorded episode: yaw rate, future, scenario labels, tail drop."""
    n_sim = len(rec["pose"])
    pose = np.asarray(rec["pose"], dtype=np.float64)
    horizon = max(fmt.FUTURE_STEPS)
    n = n_sim - horizon
    yaw_rate = fmt.yaw_rate_from_yaw(pose[:, 2])
    future = fmt.future_in_ego(pose)
    bad = np.asarray(rec["crash_vehicle"]) | np.asarray(rec["crash_object"]) | np.asarray(rec["out_of_road"])
    bad_from = np.array([bad[t:t + horizon + 1].any() for t in range(max(n, 0))], dtype=bool)
    lanes = rec["lane_key"]
    scenario = []
    for t in range(max(n, 0)):
        # an actual lane change of the expert within the next 3 s on the same road
        road_t = lanes[t].rsplit("|", 1)[0]
        lc = any(lanes[u].rsplit("|", 1)[0] == road_t and lanes[u] != lanes[t]
                 for u in range(t + 1, t + horizon + 1))
        lc = lc or (rec["labels"][t]["lane_change"] is not None
                    and rec["labels"][t]["lane_change"][0] <= LOOKAHEAD_SCENARIO_M)
        scenario.append(scenario_label(rec["speed"][t], rec["lead"][t], rec["labels"][t],
                                       rec["block"][t], lc))
    sl = slice(0, max(n, 0))
    data: dict[str, Any] = {
        "images": np.asarray(rec["images"][sl], dtype=np.uint8).reshape(-1, height, width, 3),
        "pose": pose[sl],
        "speed": np.asarray(rec["speed"][sl], dtype=np.float32),
        "yaw_rate": yaw_rate[sl].astype(np.float32),
        "route_world": np.asarray(rec["route_world"][sl], dtype=np.float32).reshape(-1, fmt.ROUTE_POINTS, 2),
        "route_valid": np.asarray(rec["route_valid"][sl], dtype=np.int16),
        "command": np.asarray(rec["command"][sl], dtype=np.str_).reshape(-1),
        "scenario": np.asarray(scenario, dtype=np.str_).reshape(-1),
        "future_ego": future.astype(np.float32).reshape(-1, len(fmt.FUTURE_STEPS), 2),
        "has_full_future": np.ones(max(n, 0), dtype=bool),
        "future_clean": ~bad_from,
        "crash_vehicle": np.asarray(rec["crash_vehicle"][sl], dtype=bool),
        "crash_object": np.asarray(rec["crash_object"][sl], dtype=bool),
        "out_of_road": np.asarray(rec["out_of_road"][sl], dtype=bool),
        "timestamp": np.arange(max(n, 0), dtype=np.float64) * fmt.DT_S,
        "map_seed": int(seed),
    }
    if data["command"].dtype.kind != "U":                       # empty episode
        data["command"] = data["command"].astype("<U1")
        data["scenario"] = data["scenario"].astype("<U1")
    data["meta"] = json.dumps({
        "collector": "deead_lab.collect_metadrive", "simulator": "metadrive-simulator 0.2.6.0",
        "expert": f"YieldingIDM v{EXPERT_VERSION}", "episode": ep, "image_wh": [width, height], "dt_s": fmt.DT_S,
        "max_steps": max_steps, "steps_simulated": n_sim, "steps_dropped_tail": n_sim - max(n, 0),
        "end_reason": end_reason, "frame": "right-handed world (x, -y_metadrive), yaw = -heading_theta",
        "route_points": fmt.ROUTE_POINTS, "route_spacing_m": fmt.ROUTE_SPACING_M,
        "future_times_s": list(fmt.FUTURE_TIMES_S), "reset_s": round(reset_s, 2),
        "sim_s": round(sim_s, 2), "sim_fps": round(n_sim / max(sim_s, 1e-6), 2),
    }, sort_keys=True)
    return data
