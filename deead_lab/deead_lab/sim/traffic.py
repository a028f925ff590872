"""The traffic model: MetaDrive's IDM made to yield (YieldingIDM), for the expert and, with reactive traffic,
for every background vehicle; conflict points between predicted paths, curve speed limits."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deead_lab.sim.labels import next_lane
from deead_lab.sim.scenario import VEHICLE_LENGTH_M
from deead_ros.geometry import arc_lengths

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
        lane, _jump = next_lane(lane, list(net.graph[ckpts[k + 1]][ckpts[k + 2]]))
        s0, k = 0.0, k + 1
    return np.concatenate(pts, axis=0)


def step_cache(engine) -> dict[str, Any]:
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
            cache = step_cache(self.engine)
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
