"""The collector's commanded lane changes (LaneChangeCommander), on straight parallel lanes without MetaDrive."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from deead_ros.tools import collect_metadrive as cm

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
    monkeypatch.setattr(cm, "_block_of", lambda lane: lane.block)     # MetaDrive's Road is not importable here


def road(n: int = 3, **kw) -> list[StraightLane]:
    return [StraightLane(i * LANE_W, **kw) for i in range(n)]          # index 0 leftmost, as MetaDrive numbers them


def commander(prefer: str = "left", first_s: float = 3.0) -> cm.LaneChangeCommander:
    return cm.LaneChangeCommander({"first_s": first_s, "prefer": prefer, "seed": 7})


def on(lanes: list[StraightLane], i: int, x: float) -> Vehicle:
    return Vehicle(Navigation(lanes[i], lanes), np.array([x, lanes[i].y0]))


def test_command_comes_after_first_s_and_the_route_jumps_ahead_at_speed():
    lanes, lc = road(), commander()
    car = on(lanes, 1, 10.0)
    assert lc.update(car, 2.9, []) is None and lc.route_hint() is None
    assert lc.update(car, 3.0, []) is None                 # commanded now, steering later
    target, s_jump = lc.route_hint()
    assert target is lanes[0]                              # preferred side: left
    assert s_jump == pytest.approx(10.0 + max(cm.LANE_CHANGE_LEAD_M, cm.LANE_CHANGE_LEAD_S * 10.0))


def test_expert_steers_over_from_the_jump_once_the_target_lane_is_clear():
    lanes, lc = road(), commander()
    car = on(lanes, 1, 10.0)
    lc.update(car, 3.0, [])
    _, s_jump = lc.route_hint()
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
    assert 6.0 + cm.LANE_CHANGE_GAP_S[0] <= lc.next_s <= 6.0 + cm.LANE_CHANGE_GAP_S[1]


def test_other_side_when_the_preferred_lane_does_not_exist():
    lanes, lc = road(), commander(prefer="left")
    lc.update(on(lanes, 0, 10.0), 3.0, [])
    assert lc.route_hint()[0] is lanes[1]


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
    assert all("lane_changes" not in cm.episode_config(s) for s in range(50))      # the closed loop's maps
    share = np.mean(["lane_changes" in cm.episode_config(s, lane_change_share=0.5) for s in range(400)])
    assert 0.4 < share < 0.6
    with_lc, without = cm.episode_config(3, lane_change_share=1.0), cm.episode_config(3)
    assert {k: v for k, v in with_lc.items() if k != "lane_changes"} == without   # the map draws stay
