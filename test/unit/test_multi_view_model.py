"""The six-camera, stateful test model: exported with its sensors, planned by deead_eval's frames from a six-camera
bag, its memory carried from frame to frame and made from the exit layer's plan."""
import numpy as np
import pytest

from deead_ros.bags import IMU, camera_topics, bag_topics
from deead_ros.engines import make_engine
from deead_ros.engines.manifest import load_manifest
from deead_ros.exit import ExitSettings, FixedPolicy, FullPolicy, PriorSettings
from deead_ros.runner import Runner
from deead_lab.eval import bag_frames
from deead_lab.make_bag import ORION_CAMERAS
from test.conftest import MULTI_VIEW_LAYERS


def test_the_manifest_declares_six_cameras_the_imu_and_a_memory(multi_view_model):
    manifest = load_manifest(multi_view_model)
    sensors = manifest.sensors
    assert sensors.camera_names == ORION_CAMERAS and sensors.imu and sensors.memory
    assert {c.image_hw for c in sensors.cameras} == {(48, 80)} and manifest.encoder.name == "multi_view"
    assert sensors.cameras[3].mounting[5] == pytest.approx(3.14159)          # back: turned round
    assert (manifest.arch, manifest.num_layers) == ("llama_vla_multiview", MULTI_VIEW_LAYERS)


def test_the_bag_has_each_cameras_image_and_calibration_and_an_imu(six_camera_bag):
    recorded = bag_topics(six_camera_bag)
    for camera in ORION_CAMERAS:
        compressed, _, info = camera_topics(camera)
        assert recorded[compressed] == "sensor_msgs/msg/CompressedImage"
        assert recorded[info] == "sensor_msgs/msg/CameraInfo"
    assert recorded[IMU] == "sensor_msgs/msg/Imu"


@pytest.fixture(scope="module")
def frames(multi_view_model, six_camera_bag):
    sensors = load_manifest(multi_view_model).sensors
    return list(bag_frames(six_camera_bag, 0.5, sensors=sensors, decode_threads=3))


def test_every_instant_of_the_bag_becomes_a_frame_of_six_calibrated_views(frames):
    assert len(frames) == 40
    for frame in frames:
        views = frame.inputs.views
        assert [v.name for v in views] == list(ORION_CAMERAS) and all(v.intrinsics is not None for v in views)
        assert all(v.image_rgb.shape == (48, 80, 3) for v in views)          # 160x96 JPEG decoded at half size
        assert frame.inputs.imu is not None and frame.inputs.stamp_s == frame.camera_stamp_s
        assert frame.ego_motion_known and frame.truth_m is not None


def test_plans_depend_on_the_memory_and_the_memory_on_the_exit_layer_only(multi_view_model, frames):
    runner = Runner(make_engine("onnxruntime", multi_view_model), ExitSettings(first_checkpoint=2), PriorSettings())
    fresh = Runner(make_engine("onnxruntime", multi_view_model), ExitSettings(first_checkpoint=2), PriorSettings())
    early = [runner.plan(f.inputs, policy=FixedPolicy(exit_layer=2), stream="fixed").trace for f in frames[:3]]
    full = [runner.plan(f.inputs, policy=FullPolicy(), stream="full").trace for f in frames[:3]]
    assert runner.memory is not None
    memory, reason = runner.memory.take("fixed", frames[3].inputs.stamp_s)
    assert reason == "" and [stamp for stamp, _ in memory] == [f.inputs.stamp_s for f in frames[2::-1]]
    for (_, kept), trace in zip(memory, early[::-1]):                       # newest first: layer 2's plans
        np.testing.assert_array_equal(kept, trace.trajectory_m)
    # The same frame with another history plans differently: the memory reaches the model.
    alone = fresh.plan(frames[2].inputs, policy=FullPolicy()).trace
    assert not np.allclose(alone.trajectory_m, full[2].trajectory_m, atol=1e-4)
    runner.reset_memory("test")
    again = runner.plan(frames[2].inputs, policy=FullPolicy(), stream="full")
    assert again.memory_reset == "test"
    np.testing.assert_allclose(again.trace.trajectory_m, alone.trajectory_m, atol=1e-5)


def test_the_six_camera_params_file_names_the_models_cameras_and_mountings(multi_view_model):
    import yaml

    from deead_ros.parameter_files import check_params_files
    from deead_ros.ros.params import PARAMETERS, config_from_values, mountings_by_camera, sensor_problem
    from test.conftest import REPO_ROOT
    files = [REPO_ROOT / "deead_ros" / "config" / name for name in ("deead_node.param.yaml", "six_cameras.param.yaml")]
    check_params_files(files)
    override = yaml.safe_load(files[1].read_text())["/**"]["ros__parameters"]
    values = {spec.name: spec.default for spec in PARAMETERS}
    values |= {"cameras": override["cameras"], "camera_mountings": override["camera_mountings"]}
    config = config_from_values(values)
    sensors = load_manifest(multi_view_model).sensors
    assert config.problem(32) is None and sensor_problem(config, sensors) is None       # ORION's 32 layers
    assert mountings_by_camera(config) == {c.name: c.mounting for c in sensors.cameras}
