"""Commanded lane changes: when the expert is told to change lanes, and the route that jumps lanes ahead of it
(the collector's data only; the closed loop's expert keeps its lane)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from deead_lab.sim.labels import LANE_CHANGE_LENGTH_M, block_of
from deead_lab.sim.scenario import JUNCTION_BLOCKS, VEHICLE_LENGTH_M

# Commanded lane changes (the collector's data only; the closed loop's expert keeps its lane):
LANE_CHANGE_GAP_S = (4.0, 10.0)   # ... and the next this long after a change ends
LANE_CHANGE_LEAD_S = 3.0          # the route jumps lanes this long ahead of the command (at the speed then) ...
LANE_CHANGE_LEAD_M = 20.0         # ... but at least this far
LANE_CHANGE_CLEAR_M = (15.0, 8.0)  # the target lane must be free this far behind / ahead of the ego

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
        if t_s < self.next_s or lane not in ref or len(ref) < 2 or block_of(lane) in JUNCTION_BLOCKS:
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
