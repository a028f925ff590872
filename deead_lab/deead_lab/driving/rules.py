"""The closed loop's written rules for one episode (docs/closed_loop_protocol.md), pure and tested without the
simulator: the step cap from the route, route completion, the driving score, the at-fault rule for a collision
and the spawn-clear check."""
from __future__ import annotations

import math

import numpy as np

from deead_lab.sim.scenario import STOPPED_MPS, VEHICLE_LENGTH_M
from deead_lab import dataset_format as fmt



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
