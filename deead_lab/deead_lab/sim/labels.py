"""The route ahead and what is read from it: the route's points (the ego's own lane continued through its
navigation checkpoints), its sampling for the data set, the command, the scenario label, the lead vehicle's gap."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from deead_lab import dataset_format as fmt
from deead_ros.geometry import arc_lengths, project_to_polyline, sample_at_arc_lengths, world_to_ego, wrap_angle
from deead_lab.sim.scenario import JUNCTION_BLOCKS, STOPPED_MPS, VEHICLE_LENGTH_M

LOOKAHEAD_COMMAND_M = 40.0        # junction / lane change within this distance sets the command
LOOKAHEAD_SCENARIO_M = 20.0       # junction within this distance sets the scenario label
TURN_DEG = 30.0                   # net heading change through a junction that counts as a turn
CURVE_DEG = 10.0                  # heading change over the next 30 m of route that counts as a curve
LEAD_GAP_M = 20.0                 # lead vehicle within this bumper gap in the ego lane
LANE_CHANGE_LENGTH_M = 15.0       # the route's diagonal from one lane's centre to the other's

# --------------------------------------------------------------------------- route and labels
def _lane_points(lane, s0: float, s1: float, step: float = 0.5) -> np.ndarray:
    """Sample centre-line points of a MetaDrive lane between arc lengths s0 and s1 (MetaDrive frame)."""
    n = max(2, int(math.ceil((s1 - s0) / step)) + 1)
    return np.array([lane.position(s, 0.0) for s in np.linspace(s0, s1, n)], dtype=np.float64)


def to_right_handed(xy: np.ndarray) -> np.ndarray:
    """Convert MetaDrive (left-handed) points to the right-handed world: negate y."""
    out = np.array(xy, dtype=np.float64, copy=True)
    out[..., 1] *= -1.0
    return out


def block_of(lane) -> str:
    """Return the id of the block a lane belongs to (X, T, O, S, C, ... or ? if unknown)."""
    from metadrive.component.road_network import Road
    try:
        return Road(lane.index[0], lane.index[1]).block_ID()
    except (AttributeError, TypeError, IndexError):      # a node name without a block id
        return "?"


def next_lane(cur, candidates):
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
    first_block = block_of(lane)
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
            seg = to_right_handed(_lane_points(lane, s0, s1))
        else:
            seg = to_right_handed(np.asarray([lane.position(s1, 0.0)], dtype=np.float64))
        seg_len = poly_len(seg)
        gap = float(np.linalg.norm(seg[0] - pts[-1][-1])) if jump else 0.0   # the line drawn from lane to lane
        pieces.append({"s_a": total, "s_b": total + gap + seg_len, "block": block_of(lane), "jump": jump,
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
        lane, jump = next_lane(lane, list(net.graph[ckpts[k + 1]][ckpts[k + 2]]))
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
