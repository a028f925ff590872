"""The MetaDrive data set format, checked on a small episode recorded by the real collector.

`test/fixtures/metadrive_episode.npz` is 40 frames (80x48 images) cropped from one episode that
`deead_lab.collect_metadrive` recorded in MetaDrive 0.2.6 (IDM expert, a right turn at a
junction behind traffic). These tests use numpy and `dataset_format` only: no simulator.
"""
from pathlib import Path

import numpy as np
import pytest

from deead_lab import dataset_format as fmt
from deead_ros.geometry import ego_to_world, project_to_polyline, world_to_ego

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "metadrive_episode.npz"


@pytest.fixture(scope="module")
def ep():
    return fmt.load_episode(FIXTURE)


def test_fixture_is_small_enough_to_commit():
    assert FIXTURE.stat().st_size < 300_000


def test_keys_shapes_and_dtypes(ep):
    assert fmt.validate_episode(ep) == []
    n = len(ep["pose"])
    assert n == 40
    assert ep["images"].dtype == np.uint8 and ep["images"].shape[0] == n and ep["images"].shape[-1] == 3
    assert ep["pose"].shape == (n, 3) and ep["pose"].dtype == np.float64
    assert ep["route_world"].shape == (n, fmt.ROUTE_POINTS, 2) and ep["route_world"].dtype == np.float32
    assert ep["route_valid"].dtype == np.int16
    assert np.all((ep["route_valid"] >= 1) & (ep["route_valid"] <= fmt.ROUTE_POINTS))
    assert ep["future_ego"].shape == (n, len(fmt.FUTURE_TIMES_S), 2) and ep["future_ego"].dtype == np.float32
    assert ep["command"].dtype.kind == "U" and ep["scenario"].dtype.kind == "U"
    assert set(ep["command"]) <= set(fmt.COMMANDS)
    assert set(ep["scenario"]) <= set(fmt.SCENARIOS)
    for k in ("has_full_future", "future_clean", "crash_vehicle", "crash_object", "out_of_road"):
        assert ep[k].dtype == np.bool_ and ep[k].shape == (n,)
    assert ep["has_full_future"].all()
    assert isinstance(ep["map_seed"], int)
    assert ep["meta"]["simulator"].startswith("metadrive")
    np.testing.assert_allclose(np.diff(ep["timestamp"]), fmt.DT_S, atol=1e-9)


def test_images_are_not_blank(ep):
    assert ep["images"].std() > 10.0


def test_route_passes_through_the_ego(ep):
    dist = np.array([
        project_to_polyline(ep["pose"][t, :2], ep["route_world"][t, : ep["route_valid"][t]])[0]
        for t in range(len(ep["pose"]))
    ])
    assert np.mean(dist < 1.0) >= 0.9, dist


def test_route_points_are_two_metres_apart(ep):
    for t in range(len(ep["pose"])):
        valid = ep["route_world"][t, : ep["route_valid"][t]]
        gaps = np.linalg.norm(np.diff(valid, axis=0), axis=1)
        assert np.all(gaps <= fmt.ROUTE_SPACING_M + 1e-3)
        assert np.median(gaps) == pytest.approx(fmt.ROUTE_SPACING_M, abs=0.05)


def test_route_starts_ahead_along_the_heading(ep):
    # the route's first segment points the way the ego faces (right-handed yaw)
    for t in range(len(ep["pose"])):
        if ep["route_valid"][t] < 3:
            continue
        ego = world_to_ego(ep["route_world"][t, :3], ep["pose"][t])
        assert ego[2, 0] - ego[0, 0] > 2.0


def test_future_half_second_is_ahead_when_moving(ep):
    moving = ep["speed"] > 1.0
    assert moving.sum() >= 10
    assert np.all(ep["future_ego"][moving, 0, 0] > 0.0)
    # roughly speed * 0.5 s ahead (the expert accelerates or brakes a little within 0.5 s)
    np.testing.assert_allclose(ep["future_ego"][moving, 0, 0], 0.5 * ep["speed"][moving], rtol=0.5, atol=0.5)


def test_future_matches_the_recorded_poses(ep):
    # within the fixture, frame t + 5 is recorded: its position in t's ego frame is future_ego[t, 0]
    n = len(ep["pose"])
    for t in range(n - 5):
        expected = world_to_ego(ep["pose"][t + 5, :2], ep["pose"][t])
        np.testing.assert_allclose(ep["future_ego"][t, 0], expected, atol=1e-3)


def test_yaw_rate_agrees_with_pose(ep):
    yaw = np.unwrap(ep["pose"][:, 2])
    rate = np.diff(yaw) / fmt.DT_S
    mid = 0.5 * (ep["yaw_rate"][1:] + ep["yaw_rate"][:-1])
    np.testing.assert_allclose(rate, mid, atol=0.1)


def test_world_ego_round_trip():
    rng = np.random.default_rng(0)
    pose = np.array([12.0, -3.0, 2.4])
    pts = rng.normal(scale=50.0, size=(17, 2))
    np.testing.assert_allclose(ego_to_world(world_to_ego(pts, pose), pose), pts, atol=1e-9)
    # one pose per frame, several points per frame
    poses = np.column_stack([rng.normal(size=(5, 2)) * 100, rng.uniform(-np.pi, np.pi, 5)])
    pts = rng.normal(scale=30.0, size=(5, 7, 2))
    np.testing.assert_allclose(ego_to_world(world_to_ego(pts, poses), poses), pts, atol=1e-9)


def test_world_to_ego_axes():
    pose = np.array([1.0, 2.0, np.pi / 2])       # facing +y (north)
    ahead_left = np.array([[1.0 - 3.0, 2.0 + 5.0]])    # 5 m north, 3 m west = ahead and to the left
    np.testing.assert_allclose(world_to_ego(ahead_left, pose), [[5.0, 3.0]], atol=1e-12)


def test_future_in_ego_on_a_straight_line():
    t = np.arange(50) * fmt.DT_S
    yaw = np.deg2rad(30.0)
    pose = np.column_stack([4.0 * t * np.cos(yaw), 4.0 * t * np.sin(yaw), np.full_like(t, yaw)])
    fut = fmt.future_in_ego(pose)
    assert fut.shape == (50 - 30, 6, 2)
    np.testing.assert_allclose(fut[:, :, 0], np.broadcast_to(4.0 * np.array(fmt.FUTURE_TIMES_S), (20, 6)), atol=1e-9)
    np.testing.assert_allclose(fut[:, :, 1], 0.0, atol=1e-9)


def test_save_load_round_trip(tmp_path, ep):
    path = fmt.episode_path(tmp_path, "val", 1234)
    fmt.save_episode(path, ep)
    assert fmt.is_complete(path)
    back = fmt.load_episode(path, images=False)
    assert "images" not in back
    np.testing.assert_array_equal(back["pose"], ep["pose"])
    np.testing.assert_array_equal(back["command"], ep["command"])
    assert back["meta"] == ep["meta"]
    assert not list(path.parent.glob("*.tmp"))


def test_save_refuses_a_malformed_episode(tmp_path, ep):
    bad = dict(ep)
    bad["speed"] = ep["speed"][:-1]
    with pytest.raises(ValueError):
        fmt.save_episode(tmp_path / "bad.npz", bad)
    assert not (tmp_path / "bad.npz").exists()
