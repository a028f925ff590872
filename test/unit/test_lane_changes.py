"""The collector's commanded lane changes (LaneChangeCommander), on straight parallel lanes without MetaDrive."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from deead_lab.sim import commander as sim_commander
from deead_lab.sim import labels as sim_labels
from deead_lab.sim import scenario as sim_scenario

LANE_W = 3.5


@dataclass(eq=False)
class StraightLane:
    """A lane along +x at lateral offset y0 (MetaDrive's lane API as the commander uses it)."""

    y0: float
    length: float = 200.0
    width: float = LANE_W
    block: str = "S"

    def local_coordinates(self, pos) -> tuple[float, float]:
        return float(pos[0]), float(pos[1] - self.y0)


@dataclass
class Navigation:
    current_lane: StraightLane
    current_ref_lanes: list[StraightLane]


@dataclass
class Vehicle:
    navigation: Navigation
    position: np.ndarray = field(default_factory=lambda: np.zeros(2))
    speed: float = 36.0                           # km/h, as MetaDrive 0.2.6 reports it: 10 m/s


@pytest.fixture(autouse=True)
def block_of_lane(monkeypatch):
    for module in (sim_labels, sim_commander):                  # MetaDrive's Road is not importable here
        monkeypatch.setattr(module, "block_of", lambda lane: lane.block)


def road(n: int = 3, **kw) -> list[StraightLane]:
    return [StraightLane(i * LANE_W, **kw) for i in range(n)]          # index 0 leftmost, as MetaDrive numbers them


def commander(prefer: str = "left", first_s: float = 3.0) -> sim_commander.LaneChangeCommander:
    return sim_commander.LaneChangeCommander({"first_s": first_s, "prefer": prefer, "seed": 7})


def on(lanes: list[StraightLane], i: int, x: float) -> Vehicle:
    return Vehicle(Navigation(lanes[i], lanes), np.array([x, lanes[i].y0]))


def commanded_change(lc: sim_commander.LaneChangeCommander) -> tuple[object, float]:
    """(target lane, jump arc length) of the lane change that must be commanded by now."""
    hint = lc.route_hint()
    assert hint is not None, "no lane change commanded"
    return hint


def test_command_comes_after_first_s_and_the_route_jumps_ahead_at_speed():
    lanes, lc = road(), commander()
    car = on(lanes, 1, 10.0)
    assert lc.update(car, 2.9, []) is None and lc.route_hint() is None
    assert lc.update(car, 3.0, []) is None                 # commanded now, steering later
    target, s_jump = commanded_change(lc)
    assert target is lanes[0]                              # preferred side: left
    lead_m = max(sim_commander.LANE_CHANGE_LEAD_M, sim_commander.LANE_CHANGE_LEAD_S * 10.0)
    assert s_jump == pytest.approx(10.0 + lead_m)


def test_expert_steers_over_from_the_jump_once_the_target_lane_is_clear():
    lanes, lc = road(), commander()
    car = on(lanes, 1, 10.0)
    lc.update(car, 3.0, [])
    _, s_jump = commanded_change(lc)
    car.position = np.array([s_jump - 1.0, lanes[1].y0])
    assert lc.update(car, 4.0, []) is None                 # before the jump: keep the lane
    car.position = np.array([s_jump + 0.5, lanes[1].y0])
    alongside = [np.array([s_jump + 2.0, lanes[0].y0])]
    assert lc.update(car, 5.0, alongside) is None          # someone in the target lane: wait
    far_behind = [np.array([s_jump - 40.0, lanes[0].y0])]
    assert lc.update(car, 5.1, far_behind) is lanes[0]
    assert lc.update(car, 5.2, alongside) is lanes[0]      # once moving over, it keeps going


def test_change_ends_when_the_ego_is_in_the_target_lane_and_the_next_waits_a_gap():
    lanes, lc = road(), commander()
    car = on(lanes, 1, 10.0)
    lc.update(car, 3.0, [])
    car.navigation.current_lane = lanes[0]
    assert lc.update(car, 6.0, []) is None
    assert lc.completed == 1 and lc.route_hint() is None
    assert 6.0 + sim_commander.LANE_CHANGE_GAP_S[0] <= lc.next_s <= 6.0 + sim_commander.LANE_CHANGE_GAP_S[1]


def test_other_side_when_the_preferred_lane_does_not_exist():
    lanes, lc = road(), commander(prefer="left")
    lc.update(on(lanes, 0, 10.0), 3.0, [])
    assert commanded_change(lc)[0] is lanes[1]


@pytest.mark.parametrize("lanes", [road(1), road(3, block="X"), road(3, length=40.0)],
                         ids=["one lane", "junction", "road too short"])
def test_no_command_where_a_lane_change_does_not_fit(lanes):
    lc = commander()
    assert lc.update(on(lanes, 0, 10.0), 3.0, []) is None
    assert lc.route_hint() is None


def test_gives_up_when_the_road_ends_first():
    lanes, lc = road(), commander()
    car = on(lanes, 1, 10.0)
    lc.update(car, 3.0, [])
    next_road = road()
    car.navigation = Navigation(next_road[1], next_road)
    assert lc.update(car, 8.0, []) is None
    assert lc.route_hint() is None and lc.completed == 0


def test_only_the_collectors_share_of_maps_gets_lane_changes():
    assert all("lane_changes" not in sim_scenario.episode_config(s) for s in range(50))      # the closed loop's maps
    share = np.mean(["lane_changes" in sim_scenario.episode_config(s, lane_change_share=0.5) for s in range(400)])
    assert 0.4 < share < 0.6
    with_lc, without = sim_scenario.episode_config(3, lane_change_share=1.0), sim_scenario.episode_config(3)
    assert {k: v for k, v in with_lc.items() if k != "lane_changes"} == without   # the map draws stay


def test_gives_up_when_its_lane_runs_out_before_the_target_lane_is_clear():
    lanes, lc = road(), commander()
    car = on(lanes, 1, 10.0)
    lc.update(car, 3.0, [])
    car.position = np.array([lanes[1].length - 4.0, lanes[1].y0])
    blocked = [np.array([lanes[1].length - 4.0, lanes[0].y0])]
    assert lc.update(car, 9.0, blocked) is None
    assert lc.route_hint() is None and lc.completed == 0


@dataclass(eq=False)
class MapLane(StraightLane):
    """With what route_ahead also reads: points and headings (MetaDrive's left-handed frame, heading 0 = +x)."""

    index: tuple = ("a", "b", 0)

    def position(self, s: float, lateral: float) -> np.ndarray:
        return np.array([s, self.y0 + lateral])

    def heading_theta_at(self, s: float) -> float:
        return 0.0


@dataclass
class RouteNavigation(Navigation):
    next_ref_lanes: list = field(default_factory=list)
    checkpoints: list = field(default_factory=list)            # the ego's road is not on it: one road only

    @property
    def map(self):
        return type("Map", (), {"road_network": None})()


@pytest.mark.parametrize("target, side", [(0, "left"), (2, "right")])
def test_route_jumps_to_the_target_lane_and_the_command_names_the_side(target, side):
    # MetaDrive's frame is left-handed: its lane 0 (leftmost) lies at the smallest y before the y flip
    lanes: list[StraightLane] = [MapLane(i * LANE_W, index=("a", "b", i)) for i in range(3)]
    car = Vehicle(RouteNavigation(lanes[1], lanes), np.array([10.0, lanes[1].y0]))
    route = sim_labels.route_ahead(car, 80.0, (lanes[target], 30.0))
    first, jump = route["pieces"]
    assert not first["jump"] and first["s_b"] == pytest.approx(20.0, abs=0.6)      # the ego's lane up to the jump
    assert jump["jump"] and jump["s_a"] == pytest.approx(first["s_b"])
    change_m = sim_labels.LANE_CHANGE_LENGTH_M
    diagonal = np.hypot(change_m, LANE_W)                                          # counted in the arc length
    assert jump["s_b"] - jump["s_a"] == pytest.approx(diagonal + lanes[0].length - 30.0 - change_m,
                                                      abs=0.6)
    labels = sim_labels.route_labels(route, 0.0)
    assert labels["command"] == f"change lane to the {side}"
    assert labels["lane_change"][0] == pytest.approx(20.0, abs=0.6)
    end = route["points"][-1]
    assert end[1] == pytest.approx(-lanes[target].y0)                              # the right-handed world: y flipped
