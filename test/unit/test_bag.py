"""The project's bags: written from a simulator episode, read back, and assembled into node frames."""
import numpy as np
import pytest

from deead_ros.model.encoding import InputSpec, accelerations
from deead_ros.tools.dataset_format import load_episode
from deead_ros.tools.eval import bag_frames
from deead_ros.tools.make_bag import write_bag
from test.conftest import REPO_ROOT

EPISODE = REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz"


@pytest.mark.parametrize("storage, raw", [("mcap", False), ("sqlite3", True)])
def test_bag_round_trip_gives_consistent_frames(tmp_path, storage, raw):
    episode = load_episode(EPISODE)
    frames = write_bag([EPISODE], tmp_path / "bag", raw=raw, storage=storage)
    assert frames == len(episode["pose"])
    spec = InputSpec()
    assembled = list(bag_frames(tmp_path / "bag", spec.accel_window_s))
    assert len(assembled) == frames
    trained_on = accelerations(episode["timestamp"], episode["speed"], spec.accel_window_s)
    np.testing.assert_allclose([f.inputs.accel_mps2 for f in assembled], trained_on, atol=1e-3,
                               err_msg="the odometry stream gives the acceleration the trainer computes")
    for i, frame in enumerate(assembled):
        assert frame.ego_motion_known, "odometry shares the camera stamp"
        assert frame.inputs.image_rgb.shape == episode["images"][i].shape
        if raw:
            np.testing.assert_array_equal(frame.inputs.image_rgb, episode["images"][i])
        np.testing.assert_allclose(frame.truth_m, episode["future_ego"][i], atol=1e-4)
        assert frame.inputs.command == episode["command"][i]
        route = frame.inputs.route_ego_m
        nearest = np.min(np.linalg.norm(route, axis=1))
        assert nearest < 2.5, f"frame {i}: the route in the ego frame passes {nearest:.1f} m from the ego"
