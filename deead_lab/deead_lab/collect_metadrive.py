"""Collect the MetaDrive driving data set: yielding IDM expert drives, front RGB camera, route, future plan.

Run it in the MetaDrive venv (``scripts/setup_metadrive.sh``)::

    .venv-metadrive/bin/python -m deead_lab.collect_metadrive --out data/metadrive \\
        --test-seeds 2000:2014 --val-seeds 1000:1010 --train-seeds 0:110 --workers 2

One map seed is one episode: MetaDrive 0.2.6 builds a procedural map from a block sequence drawn
from the seed (3-5 blocks after the entrance, at least one intersection, T-junction or roundabout
among the first two), two or three lanes, a random spawn lane, spawn offset, initial speed and IDM
target speed, so speeds and situations vary between episodes. Expert and traffic are those of the
closed loop (docs/closed_loop_protocol.md): traffic density 0.1 in trigger mode (``--traffic-density``
to change it), reactive traffic, and the ego driven by ``YieldingIDM``: MetaDrive's ``IDMPolicy``
that also gives way to vehicles whose path crosses its own first (``yield_to``; the action given
to ``step`` is ignored). Touching a solid line no longer ends an episode. Each 0.1 s step
records the camera image, the ego state, the route ahead (the centre line of the ego's own lane,
continued through the lanes of its navigation checkpoints), a command derived from that route, a
scenario label and the simulator's safety flags. After the episode the expert's future positions
at 0.5 ... 3.0 s are expressed in each frame's ego frame; the last 30 steps (no full future) are
dropped. The file format is documented in ``deead_lab/deead_lab/dataset_format.py``.

Coordinates. MetaDrive 0.2.6 keeps its 2-D world as Panda3D's frame with y negated
(``metadrive_position = (x, -y_panda)``, ``heading_theta`` likewise mirrored): a left-handed frame
in which turning left *decreases* heading_theta. Every position, heading and route point stored here
is converted to a right-handed frame: ``x = x_md, y = -y_md, yaw = -heading_theta`` (this is
Panda3D's ground plane). Checked by ``--check-frame``: moving forward adds (cos yaw, sin yaw) per
metre and a left turn increases yaw. ``vehicle.speed`` is km/h in 0.2.6; speed is stored in m/s.

Rendering on a CPU (Mesa llvmpipe via EGL) is only usable with: no terrain, no skybox, offscreen
render, multisampling off and no ``threading-model`` Panda3D line (patched in before the engine
starts), and a small main window.

Output: ``<out>/{train,val,test}/ep_<seed:05d>.npz``, written atomically. An existing complete file
is skipped (resumable). An episode whose simulation raises is retried once, then logged to
``<out>/skipped.txt`` and skipped. Only numpy, MetaDrive and ``dataset_format`` are imported.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import multiprocessing as mp
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deead_lab import dataset_format as fmt
from deead_lab.sim_workers import ProcessWorkers, StallWatch, worker_count
from deead_ros.geometry import arc_lengths, project_to_polyline, sample_at_arc_lengths, world_to_ego, wrap_angle

IMAGE_W, IMAGE_H = 160, 96
MAX_STEPS = 300                   # episode cap (simulated steps, 30 s)
JUNCTION_BLOCKS = ("X", "T", "O")
LOOKAHEAD_COMMAND_M = 40.0        # junction / lane change within this distance sets the command
LOOKAHEAD_SCENARIO_M = 20.0       # junction within this distance sets the scenario label
TURN_DEG = 30.0                   # net heading change through a junction that counts as a turn
CURVE_DEG = 10.0                  # heading change over the next 30 m of route that counts as a curve
LEAD_GAP_M = 20.0                 # lead vehicle within this bumper gap in the ego lane
STOPPED_MPS = 0.5
VEHICLE_LENGTH_M = 4.5


# Traffic of the closed-loop protocol (docs/closed_loop_protocol.md), also recorded by the collector:
TRAFFIC_DENSITY = 0.1             # MetaDrive's default
DENSE_TRAFFIC_DENSITY = 0.2       # the denser split, reported separately
TRAFFIC_MODE = "trigger"          # a block's vehicles start when the ego reaches it; no respawn
REACTIVE_TRAFFIC = True           # background vehicles yield at conflict points (YieldingIDM)

EXPERT_VERSION = 1                # YieldingIDM's behaviour; a change starts the closed-loop log over
# Yielding IDM (see `yield_to`): conflict detection between predicted paths.
YIELD_HORIZON_S = 4.0             # look this far ahead along both paths
YIELD_CONFLICT_M = 2.5            # two path points closer than this are a conflict point
YIELD_FLOOR_MPS = 2.0             # a slower (e.g. waiting) vehicle is timed as if it started at this speed
YIELD_RADIUS_M = 60.0             # vehicles farther than this are ignored
SAME_DIRECTION_DEG = 45.0         # paths meeting at a smaller angle merge or follow
CURVE_LATERAL_MPS2 = 1.5          # the expert slows so that speed^2 x curvature stays below this on its path
CURVE_BRAKE_MPS2 = 2.0            # ... braking at this rate ahead of a curve
IDM_JAM_M = 2.0                   # yielding IDM: jam distance to the conflict point (front bumper)
IDM_TIME_GAP_S = 1.0
IDM_COMFORT_MPS2 = 2.0
IDM_MAX_MPS2 = 4.0
# Commanded lane changes (the collector's data only; the closed loop's expert keeps its lane):
LANE_CHANGE_SHARE = 0.5           # share of the collected maps whose expert is told to change lanes
LANE_CHANGE_FIRST_S = (2.0, 6.0)  # the first command comes this long after the start (uniform)
LANE_CHANGE_GAP_S = (4.0, 10.0)   # ... and the next this long after a change ends
LANE_CHANGE_LEAD_S = 3.0          # the route jumps lanes this long ahead of the command (at the speed then) ...
LANE_CHANGE_LEAD_M = 20.0         # ... but at least this far
LANE_CHANGE_LENGTH_M = 15.0       # the route's diagonal from one lane's centre to the other's
LANE_CHANGE_CLEAR_M = (15.0, 8.0)  # the target lane must be free this far behind / ahead of the ego


# --------------------------------------------------------------------------- per-seed scenario
def episode_config(seed: int, traffic_density: float = TRAFFIC_DENSITY,
                   reactive_traffic: bool = REACTIVE_TRAFFIC, lane_change_share: float = 0.0) -> dict[str, Any]:
    """Draw the map and traffic of one seed deterministically from it (stored in `meta`).

    The map, lanes, speeds and spawn are drawn from the seed as before (the same maps as earlier
    data sets); traffic follows the protocol: `traffic_density` in trigger mode, reactive or not.
    With `lane_change_share` > 0, that share of the seeds (drawn from a generator of its own, so the
    other draws stay) gets `lane_changes`: the expert is commanded to change lanes (`LaneChangeCommander`).
    """
    rng = np.random.default_rng(1_000_003 + seed)
    n_blocks = int(rng.integers(3, 6))
    pool, weights = ["C", "S", "X", "T", "O"], np.array([0.32, 0.13, 0.22, 0.2, 0.13])
    blocks = list(rng.choice(pool, size=n_blocks, p=weights / weights.sum()))
    if not any(b in JUNCTION_BLOCKS for b in blocks[:2]):
        blocks[int(rng.integers(0, 2))] = str(rng.choice(["X", "T", "O"], p=[0.4, 0.35, 0.25]))
    lane_num = int(rng.choice([2, 3, 3]))
    rng.uniform(0.12, 0.30), rng.random()    # the old traffic draws, unused: speeds and spawns stay as they were
    config: dict[str, Any] = {
        "blocks": "".join(blocks),
        "lane_num": lane_num,
        "traffic_density": float(traffic_density),
        "traffic_mode": TRAFFIC_MODE,
        "reactive_traffic": bool(reactive_traffic),
        "target_speed_kmh": round(float(rng.uniform(20.0, 45.0)), 1),
        "spawn_longitude": round(float(rng.uniform(1.0, 8.0)), 2),
        "initial_speed_frac": round(float(rng.uniform(0.0, 0.8)), 2),
    }
    lc_rng = np.random.default_rng(2_000_003 + seed)
    if lc_rng.random() < lane_change_share:
        config["lane_changes"] = {"first_s": round(float(lc_rng.uniform(*LANE_CHANGE_FIRST_S)), 1),
                                  "prefer": "left" if lc_rng.random() < 0.5 else "right",
                                  "seed": int(lc_rng.integers(2**31))}
    return config


def _patch_panda3d() -> None:
    """Apply the Panda3D settings that make CPU rendering usable: no multisampling, no render threads."""
    from panda3d.core import loadPrcFileData
    import metadrive.engine.core.engine_core as engine_core

    if getattr(engine_core, "_deead_patched", False):
        return
    original = engine_core.loadPrcFileData

    def filtered(name: str, data: str) -> None:
        key = data.strip().split(" ")[0]
        if key == "threading-model":
            return
        if key in ("framebuffer-multisample", "multisamples"):
            data = f"{key} 0"
        original(name, data)

    engine_core.loadPrcFileData = filtered
    loadPrcFileData("", "framebuffer-multisample 0")
    loadPrcFileData("", "multisamples 0")
    engine_core._deead_patched = True


# --------------------------------------------------------------------------- yielding IDM
@dataclass(frozen=True)
class PathAhead:
    """A vehicle's predicted path: centre-line points from its position on (MetaDrive frame), and motion."""

    points: np.ndarray           # (M, 2) from the vehicle's position, about 1 m apart
    arc_m: np.ndarray            # (M,) arc length of each point
    speed_mps: float
    is_active: bool              # moving under a policy (False: parked traffic not yet triggered)
    name: str


def _heading_at(path: PathAhead, i: int) -> np.ndarray:
    """Unit tangent of a path at point i."""
    a, b = (i, i + 1) if i + 1 < len(path.points) else (max(i - 1, 0), i)
    d = path.points[b] - path.points[a]
    n = float(np.hypot(*d))
    return d / n if n > 1e-9 else np.array([1.0, 0.0])


def yield_to(me: PathAhead, other: PathAhead) -> tuple[float, float] | None:
    """Decide whether `me` gives way to `other`: (distance to the conflict point, its speed along my path) or None.

    The conflict zone is where the two paths run within YIELD_CONFLICT_M of each other; each vehicle
    enters it at the first point of its path that close to the other's path. Arrival times are
    distance / speed (speed at least YIELD_FLOOR_MPS; a parked, not yet active
    vehicle never arrives anywhere but where it stands). I give way when the other gets there first
    (ties: the smaller name goes first) and has not cleared it by the time I would arrive; a vehicle
    whose path runs the same way at the conflict (a merge, or a vehicle ahead in my lane) is then
    followed at its speed, a crossing one is treated as standing at the conflict point. I never give
    way when I am already at the conflict point (first come, first served), nor beyond the horizon.
    """
    if len(me.points) < 2 or len(other.points) < 1:
        return None
    gap = np.linalg.norm(me.points[:, None, :] - other.points[None, :, :], axis=2)    # (M, K)
    close = gap < YIELD_CONFLICT_M
    if not close.any():
        return None
    i = int(np.argmax(close.any(axis=1)))           # where I enter the conflict zone
    j = int(np.argmax(close.any(axis=0)))           # where the other enters it (symmetric: both agree)
    s_me, s_other = float(me.arc_m[i]), float(other.arc_m[j])
    if s_me < 0.5:                                  # I am in the conflict zone already: carry on
        return None
    t_me = s_me / max(me.speed_mps, YIELD_FLOOR_MPS)
    if t_me > YIELD_HORIZON_S:
        return None
    if other.is_active:
        t_other = s_other / max(other.speed_mps, YIELD_FLOOR_MPS)
    else:
        t_other = 0.0 if s_other < 0.5 else math.inf
    if t_other > YIELD_HORIZON_S:
        return None
    if abs(t_other - t_me) < 0.05:
        goes_first = other.name < me.name
    else:
        goes_first = t_other < t_me
    if not goes_first:
        return None
    h_me, h_other = _heading_at(me, i), _heading_at(other, j)
    cos = float(np.clip(h_me @ h_other, -1.0, 1.0))
    if cos > math.cos(math.radians(SAME_DIRECTION_DEG)):
        return s_me, max(0.0, other.speed_mps * cos)          # merge / follow: IDM behind it
    clear_s = t_other + (VEHICLE_LENGTH_M + 2.0 * YIELD_CONFLICT_M) / max(other.speed_mps, 0.5)
    if t_me >= clear_s:                             # it will have crossed before I get there
        return None
    return s_me, 0.0


def curve_speed_limit(points: np.ndarray, arc_m: np.ndarray) -> float:
    """Highest speed [m/s] from which a car can brake (CURVE_BRAKE_MPS2) to every curve's speed on a path.

    A curve's speed keeps the lateral acceleration below CURVE_LATERAL_MPS2: sqrt(a_lat / curvature),
    curvature from the heading change over 3 m of path. Uneven steps between consecutive points (a
    lane jump, or the car's offset from its lane's centre at the start) are not curvature.
    """
    if len(points) < 5:
        return math.inf
    d = np.diff(points, axis=0)
    step = np.hypot(d[:, 0], d[:, 1])
    heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    k = 3                                                       # about 3 m at the path's 1 m spacing
    if len(heading) <= k:
        return math.inf
    span = arc_m[k + 1:] - arc_m[1:-k]                          # arc length over which the heading changes
    turn = np.abs(heading[k:] - heading[:-k])
    even = (step > 0.5) & (step < 1.6)              # not a jump, not the short step from the car onto its lane
    smooth = np.array([even[i:i + k + 1].all() for i in range(len(turn))])
    curvature = np.where(smooth & (span > 0.5), turn / np.maximum(span, 0.5), 0.0)
    v_curve = np.sqrt(CURVE_LATERAL_MPS2 / np.maximum(curvature, 1e-4))
    s_at = arc_m[1:-k]
    return float(np.min(np.sqrt(v_curve ** 2 + 2.0 * CURVE_BRAKE_MPS2 * s_at)))


def idm_acceleration(speed_mps: float, target_mps: float, gap_m: float, obstacle_mps: float) -> float:
    """IDM acceleration [m/s^2] towards an obstacle `gap_m` ahead of the front bumper moving at obstacle_mps."""
    free = 1.0 - (speed_mps / max(target_mps, 0.1)) ** 4
    desired = IDM_JAM_M + max(0.0, speed_mps * IDM_TIME_GAP_S + speed_mps * (speed_mps - obstacle_mps)
                              / (2.0 * math.sqrt(IDM_MAX_MPS2 * IDM_COMFORT_MPS2)))
    return IDM_MAX_MPS2 * (free - (desired / max(gap_m, 0.1)) ** 2)


def lane_path(vehicle, lane, length_m: float, step_m: float = 1.0) -> np.ndarray:
    """Centre-line points (MetaDrive frame) from the vehicle's position along `lane` and its route's next lanes."""
    nav = getattr(vehicle, "navigation", None)
    pos = np.asarray(vehicle.position, dtype=np.float64)[:2]
    s0 = float(np.clip(lane.local_coordinates(pos)[0], 0.0, lane.length))
    ckpts = list(nav.checkpoints) if nav is not None and nav.checkpoints is not None else []
    net = nav.map.road_network if nav is not None else None
    k = next((i for i in range(len(ckpts) - 1)
              if ckpts[i] == lane.index[0] and ckpts[i + 1] == lane.index[1]), None)
    pts, left = [pos[None]], length_m
    while left > 0:
        s1 = min(lane.length, s0 + left)
        if s1 - s0 > 1e-3:
            n = max(2, math.ceil((s1 - s0) / step_m) + 1)
            pts.append(np.array([lane.position(s, 0.0) for s in np.linspace(s0, s1, n)], dtype=np.float64))
            left -= s1 - s0
        if left <= 0:
            break
        if k is None or net is None or k + 2 >= len(ckpts) or ckpts[k + 2] not in net.graph.get(ckpts[k + 1], {}):
            end = np.asarray(lane.position(lane.length, 0.0))         # end of the known route: straight on
            h = lane.heading_theta_at(lane.length)
            d = np.array([math.cos(h), math.sin(h)])
            pts.append(end + np.outer(np.arange(1, int(left / step_m) + 2) * step_m, d))
            break
        lane, _jump = _next_lane(lane, list(net.graph[ckpts[k + 1]][ckpts[k + 2]]))
        s0, k = 0.0, k + 1
    return np.concatenate(pts, axis=0)


def _step_cache(engine) -> dict[str, Any]:
    """Per simulation step: every vehicle's (object, position, speed m/s, active) and the paths built so far."""
    cache = getattr(engine, "_deead_step_cache", None)
    if cache is not None and cache["step"] == engine.episode_step and cache["map"] is engine.current_map:
        return cache
    from metadrive.component.vehicle.base_vehicle import BaseVehicle
    traffic = engine._managers.get("traffic_manager")
    moving = {id(v) for v in getattr(traffic, "_traffic_vehicles", [])}
    moving |= {id(v) for v in engine.agent_manager.active_agents.values()}
    vehicles = [(v, np.asarray(v.position, dtype=np.float64)[:2], float(v.speed) / 3.6, id(v) in moving)
                for v in engine.get_objects(lambda o: isinstance(o, BaseVehicle)).values()]
    cache = {"step": engine.episode_step, "map": engine.current_map, "vehicles": vehicles, "paths": {}}
    engine._deead_step_cache = cache
    return cache


def _path_of(cache: dict[str, Any], vehicle, lane, speed_mps: float, horizon_m: float, active: bool) -> PathAhead:
    """The vehicle's PathAhead, built once per simulation step."""
    key = (vehicle.name, id(lane))
    if key not in cache["paths"]:
        pts = lane_path(vehicle, lane, horizon_m)
        cache["paths"][key] = PathAhead(pts, arc_lengths(pts), speed_mps, active, vehicle.name)
    return cache["paths"][key]


def _path_length(speed_mps: float) -> float:
    return max(speed_mps, YIELD_FLOOR_MPS) * YIELD_HORIZON_S + VEHICLE_LENGTH_M + 2.0


def yielding_idm_class():
    """MetaDrive's IDMPolicy that slows for curves and gives way at conflict points; built once MetaDrive is importable.

    Every step, after IDM's own lane following and car following: predict its path along its lanes
    (the lane it steers to, then its navigation's next lanes) and each nearby vehicle's path along
    that vehicle's current lane and route, find conflict points and, for each vehicle `yield_to`
    says to give way to, the IDM acceleration towards the conflict point, and the acceleration that
    keeps it at `curve_speed_limit` of its path (MetaDrive's IDM does not slow for curves: it left
    the road on roundabout entries and tight junction turns); the smallest of these
    and IDM's own is the throttle/brake (MetaDrive's [-1, 1], 1 = its full engine force, taken here
    as about IDM_MAX_MPS2).
    """
    cls = getattr(yielding_idm_class, "_cls", None)
    if cls is not None:
        return cls
    from metadrive.policy.idm_policy import IDMPolicy

    class YieldingIDM(IDMPolicy):
        def act(self, *args, **kwargs):
            steering, acc = super().act(*args, **kwargs)
            brake = self.yield_acceleration()
            if brake is not None:
                acc = min(float(acc), brake)
            return [steering, acc]

        def yield_acceleration(self) -> float | None:
            me = self.control_object
            cache = _step_cache(self.engine)
            lane = self.routing_target_lane or me.lane
            here = next(((pos, speed) for v, pos, speed, _ in cache["vehicles"] if v is me), None)
            if here is None:
                return None
            here, speed = here
            mine = _path_of(cache, me, lane, speed, _path_length(speed), True)
            target = self.target_speed / 3.6
            v_curve = curve_speed_limit(mine.points, mine.arc_m)
            best = None
            if v_curve < target:                    # slow down for the curve ahead (IDM's free-road term)
                best = IDM_MAX_MPS2 * (1.0 - (speed / max(v_curve, 0.5)) ** 4)
            for other, pos, o_speed, active in cache["vehicles"]:
                if other is me:
                    continue
                o_length = _path_length(o_speed) if active else 1.0
                if math.hypot(pos[0] - here[0], pos[1] - here[1]) > \
                        min(YIELD_RADIUS_M, mine.arc_m[-1] + o_length + YIELD_CONFLICT_M):
                    continue                        # the two paths cannot meet
                o_lane = getattr(getattr(other, "navigation", None), "current_lane", None) or other.lane
                theirs = _path_of(cache, other, o_lane, o_speed, o_length, active)
                hit = yield_to(mine, theirs)
                if hit is None:
                    continue
                s_me, obstacle_mps = hit
                gap = s_me - 0.5 * VEHICLE_LENGTH_M - 0.5
                a = idm_acceleration(speed, target, gap, obstacle_mps)
                best = a if best is None else min(best, a)
            return None if best is None else float(np.clip(best / IDM_MAX_MPS2, -1.0, 1.0))

    yielding_idm_class._cls = YieldingIDM
    return YieldingIDM


def make_traffic_reactive(env) -> int:
    """Give every background vehicle MetaDrive spawned with its IDMPolicy the yielding IDM; returns how many.

    The policies' class is swapped in place after the reset (YieldingIDM adds behaviour, no state),
    so each keeps its random state and MetaDrive's own code is left as it is. Trigger-mode traffic
    is all spawned at the reset; respawned vehicles keep their policy object.
    """
    from metadrive.policy.idm_policy import IDMPolicy
    cls = yielding_idm_class()
    n = 0
    for policy in env.engine._object_policies.values():
        if type(policy) is IDMPolicy:
            policy.__class__ = cls
            n += 1
    return n


@dataclass
class LaneChange:
    """One commanded lane change: into `target` (a lane of the ego's road), the route jumping at `s_jump`."""

    target: Any                  # MetaDrive lane
    s_jump: float                # arc length on the ego's lane where the route leaves it
    steering: bool = False       # the expert has started to move over


class LaneChangeCommander:
    """Tells the expert when to change lanes, as a route planner with lane-level routing would.

    MetaDrive's IDM only changes lanes to overtake or where lanes end, and its navigation never
    asks for it, so a data set recorded with it has no lane-change commands. On maps whose
    `episode_config` has `lane_changes`, after `first_s` and then every LANE_CHANGE_GAP_S, on a road
    outside junctions with an adjacent route lane and road enough left, a change is commanded: the
    route (`route_ahead`) leaves the ego's lane LANE_CHANGE_LEAD_S ahead and reaches the adjacent
    lane's centre LANE_CHANGE_LENGTH_M later, so the command follows from the route as everywhere
    else ("change lane to the left/right" while the jump is ahead). The expert steers to the target
    lane from the jump on, once the target lane is clear (LANE_CHANGE_CLEAR_M), and gives up if its
    road ends first.
    """

    def __init__(self, plan: dict[str, Any]) -> None:
        self.prefer = plan["prefer"]
        self.rng = np.random.default_rng(plan["seed"])
        self.next_s = float(plan["first_s"])
        self.active: LaneChange | None = None
        self.completed = 0

    def _rest(self, t_s: float) -> None:
        self.active = None
        self.next_s = t_s + float(self.rng.uniform(*LANE_CHANGE_GAP_S))

    def update(self, vehicle, t_s: float, others_xy: list[np.ndarray]):
        """Advance the command at time t_s; returns the lane the expert must steer to, or None (its own)."""
        nav = vehicle.navigation
        lane = nav.current_lane
        ref = list(nav.current_ref_lanes or [])
        if self.active is not None:
            change = self.active
            if lane is change.target:
                self.completed += 1
                self._rest(t_s)
                return None
            s_ego = float(lane.local_coordinates(vehicle.position)[0])
            if lane not in ref or change.target not in ref or s_ego > lane.length - 5.0:
                self._rest(t_s)                          # the road ended or changed first: give up
                return None
            if not change.steering and s_ego >= change.s_jump and self._clear(change.target, vehicle, others_xy):
                change.steering = True
            return change.target if change.steering else None
        if t_s < self.next_s or lane not in ref or len(ref) < 2 or _block_of(lane) in JUNCTION_BLOCKS:
            return None
        i = ref.index(lane)
        neighbours = {"left": i - 1, "right": i + 1}   # MetaDrive numbers a road's lanes from the left
        order = [self.prefer, "right" if self.prefer == "left" else "left"]
        direction = next((d for d in order if 0 <= neighbours[d] < len(ref)), None)
        s_ego = float(lane.local_coordinates(vehicle.position)[0])
        s_jump = s_ego + max(LANE_CHANGE_LEAD_M, LANE_CHANGE_LEAD_S * float(vehicle.speed) / 3.6)
        if direction is None or s_jump + LANE_CHANGE_LENGTH_M + 5.0 > lane.length:
            return None                                  # not here: try again on the next road
        self.active = LaneChange(ref[neighbours[direction]], s_jump)
        return None

    @staticmethod
    def _clear(target, vehicle, others_xy: list[np.ndarray]) -> bool:
        s_me = float(target.local_coordinates(vehicle.position)[0])
        behind, ahead = LANE_CHANGE_CLEAR_M[0] + VEHICLE_LENGTH_M, LANE_CHANGE_CLEAR_M[1] + VEHICLE_LENGTH_M
        for pos in others_xy:
            s, lat = target.local_coordinates(pos)
            if abs(lat) < 0.75 * float(target.width) and -behind < s - s_me < ahead:
                return False
        return True

    def route_hint(self) -> tuple[Any, float] | None:
        """(target lane, jump arc length on the ego's lane) while a change is commanded, for `route_ahead`."""
        return None if self.active is None else (self.active.target, self.active.s_jump)


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
    _patch_panda3d()
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
                others = [pos for v, pos, _speed, _active in _step_cache(self.engine)["vehicles"] if v is not me]
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


# --------------------------------------------------------------------------- route and labels
def _lane_points(lane, s0: float, s1: float, step: float = 0.5) -> np.ndarray:
    """Sample centre-line points of a MetaDrive lane between arc lengths s0 and s1 (MetaDrive frame)."""
    n = max(2, int(math.ceil((s1 - s0) / step)) + 1)
    return np.array([lane.position(s, 0.0) for s in np.linspace(s0, s1, n)], dtype=np.float64)


def _to_rh(xy: np.ndarray) -> np.ndarray:
    """Convert MetaDrive (left-handed) points to the right-handed world: negate y."""
    out = np.array(xy, dtype=np.float64, copy=True)
    out[..., 1] *= -1.0
    return out


def _block_of(lane) -> str:
    """Return the id of the block a lane belongs to (X, T, O, S, C, ... or ? if unknown)."""
    from metadrive.component.road_network import Road
    try:
        return Road(lane.index[0], lane.index[1]).block_ID()
    except (AttributeError, TypeError, IndexError):      # a node name without a block id
        return "?"


def _next_lane(cur, candidates):
    """Pick the lane of the next road that continues `cur`: (lane, jump), jump True for a lane change."""
    for lane in candidates:
        if cur.is_previous_lane_of(lane):
            return lane, False
    end = np.asarray(cur.end)
    dists = [float(np.linalg.norm(np.asarray(lane.start) - end)) for lane in candidates]
    best = int(np.argmin(dists))
    return candidates[best], dists[best] > 0.5


def _heading_rh(lane, s: float) -> float:
    """Return the right-handed heading [rad] of a MetaDrive lane at arc length s."""
    return -float(lane.heading_theta_at(float(np.clip(s, 0.0, lane.length))))


def _entry_heading(net, ckpts: list, k: int, block: str) -> float | None:
    """Return the heading at the end of the last road before the junction block of road k."""
    from metadrive.component.road_network import Road
    j = k
    while j > 0 and Road(ckpts[j - 1], ckpts[j]).block_ID() == block:
        j -= 1
    if j == 0:
        return None
    lanes = net.graph[ckpts[j - 1]][ckpts[j]]
    lane = lanes[0]
    return _heading_rh(lane, lane.length)


def route_ahead(vehicle, length_m: float, lane_change: tuple[Any, float] | None = None) -> dict[str, Any]:
    """Walk the ego's own lane forward through the navigation checkpoints.

    Starts on ``navigation.current_lane`` (the lane the ego is on, as MetaDrive localises it) at the
    point abreast of the ego and continues, road by road along ``navigation.checkpoints``, with the
    lane that continues it geometrically (or, where lanes end, the nearest one: a lane jump). With a
    commanded `lane_change` (target lane of the same road, jump arc length on the ego's lane), the
    route leaves the ego's lane at the jump (or at the ego, once past it) and joins the target lane
    LANE_CHANGE_LENGTH_M further on: a lane jump like the others. Returns
    the dense centre line (right-handed world frame) and per-lane pieces as dicts: s_a, s_b (arc
    length along the route), block id, jump flag, h_end (heading at the lane end); plus the ego lane's
    width and, when the ego is inside a junction block, the heading at that junction's entry.
    """
    nav = vehicle.navigation
    net = nav.map.road_network
    lane = nav.current_lane
    ref = list(nav.current_ref_lanes or [])
    nxt = list(nav.next_ref_lanes or [])
    if lane not in ref and lane not in nxt and ref:
        # off the route's lanes (rare): take the route lane closest to the ego
        lane = min(ref, key=lambda ln: abs(ln.local_coordinates(vehicle.position)[1]))
    lane_width = float(lane.width)
    s_ego = float(np.clip(lane.local_coordinates(vehicle.position)[0], 0.0, lane.length))
    ckpts = list(nav.checkpoints)
    k = None                                       # index of the lane's road in the checkpoints
    for i in range(len(ckpts) - 1):
        if ckpts[i] == lane.index[0] and ckpts[i + 1] == lane.index[1]:
            k = i
            break
    first_block = _block_of(lane)
    entry_heading = None
    if first_block in JUNCTION_BLOCKS and k is not None:
        entry_heading = _entry_heading(net, ckpts, k, first_block)
    pieces: list[dict[str, Any]] = []
    pts: list[np.ndarray] = []
    total = 0.0
    s0, jump = s_ego, False
    switch = lane_change if lane_change is not None and lane_change[0] in ref and lane is not lane_change[0] \
        else None                                  # (target lane, jump) still to make on this road
    while True:
        s1 = lane.length if switch is None else float(np.clip(switch[1], s0, lane.length))
        if s1 - s0 > 1e-3:
            seg = _to_rh(_lane_points(lane, s0, s1))
        else:
            seg = _to_rh(np.asarray([lane.position(s1, 0.0)], dtype=np.float64))
        seg_len = poly_len(seg)
        gap = float(np.linalg.norm(seg[0] - pts[-1][-1])) if jump else 0.0   # the line drawn from lane to lane
        pieces.append({"s_a": total, "s_b": total + gap + seg_len, "block": _block_of(lane), "jump": jump,
                       "h_end": _heading_rh(lane, s1)})
        pts.append(seg if (not pts or jump) else seg[1:])
        total += gap + seg_len
        if switch is not None:                     # over to the target lane, on the same road
            target = switch[0]
            s0 = min(float(target.local_coordinates(lane.position(s1, 0.0))[0]) + LANE_CHANGE_LENGTH_M,
                     float(target.length))
            lane, jump, switch = target, True, None
            continue
        if total >= length_m or k is None or k + 2 >= len(ckpts):
            break
        lane, jump = _next_lane(lane, list(net.graph[ckpts[k + 1]][ckpts[k + 2]]))
        s0, k = 0.0, k + 1
    return {"points": np.concatenate(pts, axis=0), "pieces": pieces, "lane_width": lane_width,
            "entry_heading": entry_heading, "ego_heading_on_lane": _heading_rh(nav.current_lane, s_ego)}


def sample_route(dense: np.ndarray) -> tuple[np.ndarray, int]:
    """Resample the dense route every ROUTE_SPACING_M; pad with the last point. Returns (R,2), valid."""
    total = poly_len(dense)
    valid = int(min(fmt.ROUTE_POINTS, math.floor(total / fmt.ROUTE_SPACING_M + 1e-6) + 1))
    q = np.arange(fmt.ROUTE_POINTS) * fmt.ROUTE_SPACING_M
    q = np.minimum(q, (valid - 1) * fmt.ROUTE_SPACING_M)
    return sample_at_arc_lengths(dense, q), valid


def _heading_change(poly: np.ndarray, s_a: float, s_b: float) -> float:
    """Measure the signed heading change [deg] of a polyline from s_a to s_b (left = positive)."""
    total = poly_len(poly)
    if total < 1e-6:
        return 0.0

    def heading_at(sq: float) -> float:
        sq = float(np.clip(sq, 0.0, total))
        a, b = sample_at_arc_lengths(poly, [max(sq - 1.0, 0.0), min(sq + 1.0, total)])
        return math.atan2(b[1] - a[1], b[0] - a[0])

    return math.degrees(float(wrap_angle(heading_at(s_b) - heading_at(s_a))))


def route_labels(route: dict[str, Any], ego_yaw: float) -> dict[str, Any]:
    """Derive the command and route facts: junction ahead and its turn, lane jump, curvature.

    The turn of a junction is the heading change of the route from the lane before the junction
    block to the last lane of that block (> +TURN_DEG left, < -TURN_DEG right, else straight).
    """
    poly, pieces = route["points"], route["pieces"]
    junction = None                                # (distance to entry, turn [deg], block)
    for i, pc in enumerate(pieces):
        if pc["block"] not in JUNCTION_BLOCKS:
            continue
        j = i
        while j + 1 < len(pieces) and pieces[j + 1]["block"] == pc["block"] and not pieces[j + 1]["jump"]:
            j += 1
        if i > 0:
            h_in = pieces[i - 1]["h_end"]
        elif route["entry_heading"] is not None:
            h_in = route["entry_heading"]
        else:
            h_in = route["ego_heading_on_lane"]
        turn = math.degrees(float(wrap_angle(pieces[j]["h_end"] - h_in)))
        junction = (pc["s_a"], turn, pc["block"])
        break
    lane_change = None                             # (distance, +1 left / -1 right)
    for i, pc in enumerate(pieces):
        if pc["jump"]:
            s_a = pc["s_a"]
            before, after = sample_at_arc_lengths(poly, [max(s_a - 0.5, 0.0), min(s_a + 0.5, poly_len(poly))])
            lane_heading = pieces[i - 1]["h_end"] if i > 0 else ego_yaw     # the side is the lane's, not the car's
            d = world_to_ego(after[None], np.array([before[0], before[1], lane_heading]))[0]
            lane_change = (s_a, 1 if d[1] > 0 else -1)
            break
    if junction is not None and junction[0] <= LOOKAHEAD_COMMAND_M:
        turn = junction[1]
        command = ("turn left at the junction" if turn > TURN_DEG else
                   "turn right at the junction" if turn < -TURN_DEG else "go straight at the junction")
    elif lane_change is not None and lane_change[0] <= LOOKAHEAD_COMMAND_M:
        command = "change lane to the left" if lane_change[1] > 0 else "change lane to the right"
    else:
        command = "follow the lane"
    curve = abs(_heading_change(poly, 0.0, 30.0))
    return {"command": command, "junction": junction, "lane_change": lane_change, "curve_deg": curve}


def poly_len(poly: np.ndarray) -> float:
    """Return the length [m] of a polyline (M, 2)."""
    return float(arc_lengths(poly)[-1]) if len(poly) > 1 else 0.0


def lead_gap(route_xy: np.ndarray, lane_width: float, ego_xy: np.ndarray, others_xy: np.ndarray) -> float:
    """Return the bumper gap [m] to the nearest vehicle ahead in the ego's route lane (inf if none)."""
    if len(others_xy) == 0 or len(route_xy) < 2:
        return math.inf
    _, s_ego, _ = project_to_polyline(ego_xy, route_xy)
    best = math.inf
    for p in others_xy:
        if np.linalg.norm(p - ego_xy) > LEAD_GAP_M + 30.0:
            continue
        d, s, _ = project_to_polyline(p, route_xy)
        if d < 0.5 * lane_width and s > s_ego:
            best = min(best, s - s_ego - VEHICLE_LENGTH_M)
    return best


def scenario_label(speed: float, lead: float, labels: dict[str, Any], in_block: str,
                   lane_change_soon: bool) -> str:
    """Label one frame, by priority (see dataset_format.SCENARIOS)."""
    if speed < STOPPED_MPS:
        return "stopped"
    if lead <= LEAD_GAP_M:
        return "following_traffic"
    j = labels["junction"]
    if in_block == "O" or (j is not None and j[2] == "O" and j[0] <= LOOKAHEAD_SCENARIO_M):
        return "roundabout"
    if j is not None and j[0] <= LOOKAHEAD_SCENARIO_M:
        return "junction_left" if j[1] > TURN_DEG else "junction_right" if j[1] < -TURN_DEG \
            else "junction_straight"
    if lane_change_soon:
        return "lane_change"
    if labels["curve_deg"] > CURVE_DEG:
        return "curve"
    return "straight"


# --------------------------------------------------------------------------- one episode
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
            others_xy = _to_rh(np.array([np.asarray(o.position)[:2] for o in others])) if others \
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


# --------------------------------------------------------------------------- workers
def _parse_seeds(text: str | None) -> list[int]:
    """Parse '0:100' (end exclusive), '5,7,9' or '' into a list of seeds."""
    if not text:
        return []
    if ":" in text:
        a, b = text.split(":")
        return list(range(int(a), int(b)))
    return [int(x) for x in text.split(",") if x.strip()]


_collector_state: dict[str, Any] = {}    # in a worker process: the collection settings and the stall watch


def _init_collector(settings: dict[str, Any], watch: StallWatch) -> None:
    _collector_state.update(settings=settings, watch=watch)


def _collect_episode(job: tuple[str, int]) -> tuple[int, int, str]:
    """Simulate and save one episode (split, seed) in a worker; returns (frames, steps simulated, end)."""
    split, seed = job
    settings, watch = _collector_state["settings"], _collector_state["watch"]
    density = settings["dense_traffic_density" if split == "test_dense" else "traffic_density"]
    data = run_episode(seed, settings["max_steps"], settings["width"], settings["height"], density,
                       settings["lane_change_share"], on_step=watch.beat)
    fmt.save_episode(fmt.episode_path(Path(settings["out"]), split, seed), data)
    meta = json.loads(data["meta"])
    return len(data["pose"]), meta["steps_simulated"], meta["end_reason"]


def collect(args) -> int:
    """Supervise worker processes over the seed plan (test, then val, then train); resumable."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = [("test", s) for s in _parse_seeds(args.test_seeds)] + \
           [("test_dense", s) for s in _parse_seeds(args.test_dense_seeds)] + \
           [("val", s) for s in _parse_seeds(args.val_seeds)] + \
           [("train", s) for s in _parse_seeds(args.train_seeds)]
    seen: dict[int, str] = {}
    for split, s in plan:
        if s in seen and seen[s] != split:
            raise SystemExit(f"seed {s} is in both {seen[s]} and {split}: splits must not share maps")
        seen[s] = split
    for split, s in plan:                              # and no map of another split already on disk
        for other in fmt.SPLITS:
            if other != split and fmt.episode_path(out, other, s).exists():
                raise SystemExit(f"seed {s} requested for {split} but {out}/{other} already has it")
    skipped_before = set()                           # failed twice in an earlier run: resolved, not retried
    if (out / "skipped.txt").exists():
        skipped_before = {(line.split()[0], int(line.split()[1])) for line in
                          (out / "skipped.txt").read_text().splitlines() if line.strip()}
    todo = [(sp, s) for sp, s in plan
            if (sp, s) not in skipped_before and not fmt.is_complete(fmt.episode_path(out, sp, s))]
    n_skipped_before = sum((sp, s) in skipped_before for sp, s in plan)
    print(f"[collect] {len(plan)} episodes planned, {len(plan) - len(todo) - n_skipped_before} already complete, "
          f"{n_skipped_before} skipped in an earlier run (skipped.txt), {len(todo)} to run with {args.workers} "
          f"worker(s); out={out}", flush=True)
    if not todo:
        return 0
    (out / "collect_config.json").write_text(json.dumps(vars(args), indent=2, sort_keys=True))
    settings = {"out": str(out), "max_steps": args.max_steps, "width": args.width, "height": args.height,
                "traffic_density": args.traffic_density, "lane_change_share": args.lane_change_share,
                "dense_traffic_density": args.dense_traffic_density}
    workers = ProcessWorkers(args.workers, _init_collector, (settings,), _collect_episode,
                             tasks_per_worker=args.episodes_per_worker)
    pending = [(job, 0) for job in todo]                # (split, seed), attempt
    t_start = time.time()
    done = frames = skipped = 0
    try:
        while pending or workers.free < args.workers:
            while pending and workers.free:
                workers.submit(*pending.pop(0))
            for running, result, error in workers.poll(5.0, episode_timeout_s=math.inf):
                split, seed = running.job
                path = fmt.episode_path(out, split, seed)
                if result is None and fmt.is_complete(path):    # the worker failed after saving it: it is done
                    saved = fmt.load_episode(path, images=False)
                    result = (len(saved["pose"]), saved["meta"]["steps_simulated"], saved["meta"]["end_reason"])
                if result is None and running.attempt == 0:
                    print(f"[collect] {split} seed {seed} failed ({error}); retrying once", flush=True)
                    pending.insert(0, (running.job, 1))
                    continue
                done += 1
                if result is None:
                    skipped += 1
                    with open(out / "skipped.txt", "a") as f:
                        f.write(f"{split} {seed} {error}\n")
                    print(f"[collect] {done}/{len(todo)} {split} seed {seed} SKIPPED after 2 attempts: {error}",
                          flush=True)
                    continue
                n, n_sim, end_reason = result
                frames += n
                elapsed = time.time() - t_start
                print(f"[collect] {done}/{len(todo)} {split} seed {seed}: {n} frames (sim {n_sim}, end {end_reason}) "
                      f"in {time.time() - running.started:.0f}s | total {frames} frames, "
                      f"{frames / max(elapsed, 1e-6):.1f} frames/s, elapsed {elapsed / 60:.1f} min, "
                      f"ETA {elapsed / done * (len(todo) - done) / 60:.1f} min", flush=True)
    finally:
        workers.close()
    print(f"[collect] done: {frames} frames in {done - skipped} episodes, {skipped} skipped, "
          f"{(time.time() - t_start) / 60:.1f} min", flush=True)
    return 0


# --------------------------------------------------------------------------- frame check
def check_frame(seed: int, steps: int = 300) -> int:
    """Drive one seed and verify the stored frame convention against the simulator itself.

    Checks: (1) motion is along (cos yaw, sin yaw); (2) over 1 s windows the motion direction and
    yaw turn the same way (so the frame is consistent); (3) the opposing carriageway, which the
    camera shows on the left (right-hand traffic, yellow centre line on the left), has y > 0 in the
    ego frame: the converted frame is right-handed with y to the left, so a left turn raises yaw.
    """
    from metadrive.component.road_network import Road
    ep = episode_config(seed)
    env = make_env(seed, ep, IMAGE_W, IMAGE_H)
    opposing_y = []
    try:
        env.reset()
        v = env.vehicle
        poses = []
        net = v.navigation.map.road_network
        for _ in range(steps):
            env.step([0.0, 0.0])
            p = np.asarray(v.position)
            pose = np.array([p[0], -p[1], -v.heading_theta])
            poses.append((pose[0], pose[1], pose[2], v.speed / 3.6))
            lane = v.navigation.current_lane
            neg = -Road(lane.index[0], lane.index[1])
            if neg.start_node in net.graph and neg.end_node in net.graph[neg.start_node]:
                opp = net.graph[neg.start_node][neg.end_node][0]
                long, _ = opp.local_coordinates(v.position)
                q = _to_rh(np.asarray(opp.position(long, 0.0)))
                opposing_y.append(float(world_to_ego(q[None], pose)[0, 1]))
    finally:
        env.close()
    a = np.asarray(poses)
    d = np.diff(a[:, :2], axis=0)
    mov = np.linalg.norm(d, axis=1) > 0.2
    fwd = (d[mov, 0] * np.cos(a[:-1][mov, 2]) + d[mov, 1] * np.sin(a[:-1][mov, 2])) / np.linalg.norm(d[mov], axis=1)
    k = 10
    d10 = a[k:, :2] - a[:-k, :2]
    ok = np.linalg.norm(d10, axis=1) > 2.0
    mdir = np.unwrap(np.arctan2(d10[:, 1], d10[:, 0]))
    dm = mdir[k:] - mdir[:-k]
    yaw = np.unwrap(a[:, 2])
    dy = (yaw[2 * k:] - yaw[k:-k])
    turning = ok[k:] & ok[:-k] & (np.abs(dm) > np.radians(5))
    agree = float(np.mean(np.sign(dm[turning]) == np.sign(dy[turning]))) if turning.any() else float("nan")
    spd = np.linalg.norm(d, axis=1) / fmt.DT_S
    opp = float(np.mean(np.asarray(opposing_y) > 0)) if opposing_y else float("nan")
    print(f"forward component of motion along (cos yaw, sin yaw): mean {fwd.mean():.3f} (1 = consistent)")
    print(f"1 s windows turning > 5 deg: {int(turning.sum())}, yaw turns the same way in {agree:.3f}")
    print(f"opposing carriageway on the left (y > 0 in ego frame) in {opp:.3f} of {len(opposing_y)} frames")
    print(f"speed from positions vs stored speed: mean abs diff {np.abs(spd[mov] - a[1:, 3][mov]).mean():.3f} m/s")
    good = fwd.mean() > 0.95 and (not turning.any() or agree > 0.95) and (not opposing_y or opp > 0.95)
    print("frame check", "PASSED" if good else "FAILED")
    return 0 if good else 1


def _drive_for_render_check(seed: int, steps: int, stock_rendering: bool) -> tuple[np.ndarray, float]:
    """Drive the expert on `seed`; return the camera images and the median milliseconds per step."""
    ep = episode_config(seed)
    env = make_env(seed, ep, IMAGE_W, IMAGE_H)
    images, seconds = [], []
    try:
        start_episode(env, ep, stock_rendering)
        for _ in range(steps):
            t0 = time.perf_counter()
            obs, _reward, done, _info = env.step([0.0, 0.0])
            seconds.append(time.perf_counter() - t0)
            images.append(obs["image"][..., -1].copy())
            if done:
                break
    finally:
        env.close()
    return np.stack(images), 1000.0 * float(np.median(seconds))


def check_render(seeds: list[int], steps: int = 150) -> int:
    """Verify that `_render_only_what_is_read` leaves every camera image as MetaDrive makes it; time both ways.

    Each drive runs in a fresh process (state carried between episodes of one process would
    otherwise make two drives differ for reasons of their own).
    """
    good = True
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for seed in seeds:
            (stock, ms_stock), (ours, ms_ours) = pool.starmap(
                _drive_for_render_check, [(seed, steps, True), (seed, steps, False)])
            same = stock.shape == ours.shape and np.array_equal(stock, ours)
            good &= same
            print(f"seed {seed}: {len(stock)} steps, images {'identical' if same else 'DIFFER'}; "
                  f"ms/step as MetaDrive draws and reads {ms_stock:.1f}, the camera alone {ms_ours:.1f} "
                  f"({ms_stock / ms_ours:.2f}x)")
    print("render check", "PASSED" if good else "FAILED")
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/metadrive", help="output root (default: %(default)s)")
    p.add_argument("--train-seeds", default="0:110", help="'a:b' (b exclusive) or comma list")
    p.add_argument("--val-seeds", default="1000:1010")
    p.add_argument("--test-seeds", default="2000:2014")
    p.add_argument("--test-dense-seeds", default="", help="held-out maps driven in denser traffic (split test_dense)")
    p.add_argument("--dense-traffic-density", type=float, default=DENSE_TRAFFIC_DENSITY,
                   help="traffic density of the test_dense split (the closed loop's dense split: %(default)s)")
    p.add_argument("--workers", type=worker_count, default=2)
    p.add_argument("--traffic-density", type=float, default=TRAFFIC_DENSITY,
                   help="trigger-mode traffic density (the closed loop's protocol: %(default)s)")
    p.add_argument("--max-steps", type=int, default=MAX_STEPS, help="episode cap in 0.1 s steps")
    p.add_argument("--lane-change-share", type=float, default=LANE_CHANGE_SHARE,
                   help="share of the maps whose expert is commanded to change lanes (default: %(default)s)")
    p.add_argument("--episodes-per-worker", type=int, default=20,
                   help="a worker process is replaced after this many episodes")
    p.add_argument("--width", type=int, default=IMAGE_W)
    p.add_argument("--height", type=int, default=IMAGE_H)
    p.add_argument("--check-frame", type=int, metavar="SEED", default=None,
                   help="only verify the coordinate convention on this seed and exit")
    p.add_argument("--check-render", default=None, metavar="SEEDS",
                   help="only verify that drawing and reading the ego camera alone leaves its images unchanged "
                        "on these seeds ('a:b' or comma list), timing both, and exit")
    args = p.parse_args(argv)
    if args.check_render is not None:
        return check_render(_parse_seeds(args.check_render))
    if args.check_frame is not None:        # in a worker process: Panda3D's teardown aborts the one that made it
        with mp.get_context("spawn").Pool(1) as pool:
            return pool.apply(check_frame, (args.check_frame,))
    return collect(args)


if __name__ == "__main__":
    raise SystemExit(main())
