"""The project's bags: written from a simulator episode, read back, and assembled into node frames."""
import numpy as np
import pytest

from deead_ros.model.encoding import InputSpec, accelerations
from deead_lab.dataset_format import load_episode
from deead_lab.eval import bag_frames
from deead_lab.make_bag import write_bag
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
        assert frame.truth_m is not None, f"frame {i}: the bag's ground truth did not reach the frame"
        np.testing.assert_allclose(frame.truth_m, episode["future_ego"][i], atol=1e-4)
        assert frame.inputs.command == episode["command"][i]
        route = frame.inputs.route_ego_m
        assert route is not None, f"frame {i}: no route in the ego frame"
        nearest = np.min(np.linalg.norm(route, axis=1))
        assert nearest < 2.5, f"frame {i}: the route in the ego frame passes {nearest:.1f} m from the ego"


def write_variant_bag(out, episode, odometry_every=1, camera_first=False):
    """The episode as a bag like deead_make_bag's, with odometry on every n-th step only and the camera
    recorded before (camera_first) or after the step's other messages."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from deead_ros import bags as topics
    from deead_lab.make_bag import (BAG_EPOCH_S, T, TYPESTORE, camera_message, odometry_message,
                                          path_message)
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {name: writer.add_connection(topic, msgtype, typestore=TYPESTORE) for name, topic, msgtype in (
            ("camera", topics.CAMERA_COMPRESSED, "sensor_msgs/msg/CompressedImage"),
            ("route", topics.ROUTE, "nav_msgs/msg/Path"), ("odometry", topics.ODOMETRY, "nav_msgs/msg/Odometry"),
            ("command", topics.COMMAND, "std_msgs/msg/String"), ("truth", topics.GROUND_TRUTH, "nav_msgs/msg/Path"))}
        for i in range(len(episode["pose"])):
            t_s = BAG_EPOCH_S + float(episode["timestamp"][i])
            route = episode["route_world"][i, : max(int(episode["route_valid"][i]), 2)]
            messages = {"camera": camera_message(episode["images"][i], t_s, False, 90)} if camera_first else {}
            if i % odometry_every == 0:
                messages["odometry"] = odometry_message(episode["pose"][i], episode["speed"][i],
                                                        episode["yaw_rate"][i], t_s)
            messages.update({"route": path_message(route, t_s, "map"),
                             "command": T["std_msgs/msg/String"](data=str(episode["command"][i])),
                             "truth": path_message(episode["future_ego"][i], t_s, "base_link")})
            if not camera_first:
                messages["camera"] = camera_message(episode["images"][i], t_s, False, 90)
            for name, msg in messages.items():
                writer.write(conns[name], int(round(t_s * 1e9)), TYPESTORE.serialize_cdr(msg, conns[name].msgtype))


def test_camera_recorded_before_its_odometry_waits_for_it(tmp_path):
    """The node waits for odometry stamped at or after the frame; deead_eval holds the frame until it is fed."""
    episode = load_episode(EPISODE)
    write_bag([EPISODE], tmp_path / "normal")
    write_variant_bag(tmp_path / "camera_first", episode, camera_first=True)
    normal = list(bag_frames(tmp_path / "normal", 0.5))
    first = list(bag_frames(tmp_path / "camera_first", 0.5))
    assert len(first) == len(normal) == 40
    for a, b in zip(normal, first):
        assert b.ego_motion_known and a.camera_stamp_s == b.camera_stamp_s
        np.testing.assert_array_equal(a.inputs.route_ego_m, b.inputs.route_ego_m)
        assert (a.inputs.speed_mps, a.inputs.accel_mps2) == (b.inputs.speed_mps, b.inputs.accel_mps2)


def test_odometry_at_half_the_camera_rate_is_interpolated(tmp_path):
    episode = load_episode(EPISODE)
    write_variant_bag(tmp_path / "slow", episode, odometry_every=2)
    frames = list(bag_frames(tmp_path / "slow", 0.5))
    assert len(frames) == 40
    assert all(f.ego_motion_known for f in frames[:-1])
    assert not frames[-1].ego_motion_known, "no odometry after the last frame and 0.1 s > 0.05 s to roll it"
    for i in range(1, 39, 2):                                         # frames between two odometry samples
        expected = (episode["speed"][i - 1] + episode["speed"][i + 1]) / 2
        assert frames[i].inputs.speed_mps == pytest.approx(expected, abs=1e-5)
        route = frames[i].inputs.route_ego_m
        assert route is not None, f"frame {i}: no route in the ego frame"
        nearest = np.min(np.linalg.norm(route, axis=1))
        assert nearest < 2.5, f"frame {i}: the route passes {nearest:.1f} m from the interpolated ego"


def test_a_bag_with_a_pose_jump_plans_the_frame_after_it_with_the_new_pose(tmp_path):
    """Two drives back to back, the second 5 km away (a relocalisation): the first frame after the jump
    is planned with the pose after it, so its route prior starts at the ego, not kilometres away."""
    from deead_ros.exit import PriorSettings, select_prior
    from deead_lab.dataset_format import save_episode
    episode = load_episode(EPISODE)
    moved = dict(episode, pose=episode["pose"] + [5000.0, 0.0, 0.0],
                 route_world=episode["route_world"] + np.array([5000.0, 0.0], np.float32))
    save_episode(tmp_path / "moved.npz", moved)
    write_bag([EPISODE, tmp_path / "moved.npz"], tmp_path / "bag")
    frames = list(bag_frames(tmp_path / "bag", 0.5))
    assert len(frames) == 80
    settings, times = PriorSettings(), 0.5 * np.arange(1, 7)
    for i in (39, 40, 41):
        frame = frames[i]
        assert frame.ego_motion_known
        route = settings.route_ahead(frame.inputs.route_ego_m)
        assert not isinstance(route, str), f"frame {i}: {route}"
        prior = select_prior(settings, times, frame.inputs.speed_mps, frame.inputs.yaw_rate_rps, route)
        assert prior.source == "route" and prior.trajectory_m is not None, prior.detail
        assert np.abs(prior.trajectory_m).max() < 30.0, prior.trajectory_m
    assert frames[40].inputs.accel_mps2 == 0.0, "the acceleration starts over with the new drive"
    after_jump, first = frames[40].inputs.route_ego_m, frames[0].inputs.route_ego_m
    assert after_jump is not None and first is not None, "both drives' first frames have a route"
    np.testing.assert_allclose(after_jump, first, atol=1e-3)
