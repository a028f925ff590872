"""Shared test set-up: Hypothesis profiles, the repository paths and the ROS 2 distro under test."""
import importlib.metadata
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ROOT = REPO_ROOT / "deead_ros"        # the runtime package: package.xml, setup.py, config/, launch/, ...
# The checkout's source, as pytest.ini's pythonpath gives this process, for the processes tests start too.
os.environ["PYTHONPATH"] = os.pathsep.join([str(RUNTIME_ROOT), str(REPO_ROOT / "deead_lab"),
                                            *filter(None, [os.environ.get("PYTHONPATH")])])

# The tested ROS 2 distros: Jazzy in .venv (`make test`), Kilted in build/kilted_venv (`make test-kilted`).
ROS_DISTROS = ("jazzy", "kilted")


def ros_distro() -> str:
    """The distro of this interpreter's rclpy (deead_ros.ros.dds, as the launch file tells it); Jazzy where there is
    no rclpy (the tests that need one are skipped there)."""
    from deead_ros.ros.dds import ros_distro as rclpy_distro
    try:
        distro = rclpy_distro()
    except importlib.metadata.PackageNotFoundError:
        return "jazzy"
    if distro not in ROS_DISTROS:
        raise RuntimeError(f"this interpreter's ROS 2 is {distro}; the tests know {', '.join(ROS_DISTROS)}: run them "
                           "with .venv (`make test`) or build/kilted_venv (`make test-kilted`)")
    return distro


def distro_suffix() -> str:
    """What this distro's files and build folders carry after their name, as scripts/setup.sh names them: nothing on
    Jazzy (requirements-runtime.txt, build/deead_ros_msgs), `-kilted` on Kilted (requirements-runtime-kilted.txt)."""
    distro = ros_distro()
    return "" if distro == "jazzy" else f"-{distro}"


SMALL_MODEL_LAYERS = 6


def episode(seed, setting, crash=False, arrived=None, completion=None, at_fault_=None, exit_layer=float("nan")):
    """One closed-loop episode record, as `closed_loop.drive` writes it."""
    from deead_lab.driving.rules import driving_score
    arrived = (not crash) if arrived is None else arrived
    completion = (1.0 if arrived else 0.5) if completion is None else completion
    return {"seed": seed, "setting": setting, "steps": 300, "max_steps": 900,
            "end_reason": "crash_vehicle" if crash else "arrive_dest" if arrived else "max_steps",
            "arrived": arrived, "crash_vehicle": crash, "crash_object": False, "out_of_road": False,
            "left_lane": False, "at_fault": crash if at_fault_ is None else at_fault_, "fault_reason": "",
            "progress_m": 0.0, "route_length_m": 400.0, "completion": completion,
            "score": driving_score(completion, crash, False, False), "mean_exit_layer": exit_layer,
            "plan_ms_p50": 5.0}


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A 6-layer demo VLA with random weights, exported to per-layer ONNX; returns manifest.json."""
    import torch

    from deead_ros.model.encoding import InputSpec
    from deead_lab.model.export_onnx import export_pretrained
    from deead_lab.model.vla import DeeadVLA, VLAConfig
    from deead_lab.model.weights import save_pretrained
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("small_model")
    weights = save_pretrained(DeeadVLA(VLAConfig(n_layer=SMALL_MODEL_LAYERS)), InputSpec(), root / "weights")
    return export_pretrained(weights, root / "onnx", fused=False, log=lambda _: None)


@pytest.fixture(scope="session")
def fixture_bag(tmp_path_factory):
    """The fixture simulator episode written as an mcap bag (compressed camera)."""
    from deead_lab.make_bag import write_bag
    out = tmp_path_factory.mktemp("bag") / "episode"
    write_bag([REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz"], out)
    return out


MULTI_VIEW_LAYERS = 4


@pytest.fixture(scope="session")
def multi_view_model(tmp_path_factory):
    """The six-camera, stateful Llama VLA (IMU, a memory of 4 plans), 4 layers, random weights; manifest.json."""
    from deead_lab.model.export_onnx import export_random
    from deead_lab.model.multi_view_vla import MultiViewLlamaVLAConfig
    return export_random(tmp_path_factory.mktemp("multi_view_model"),
                         MultiViewLlamaVLAConfig(num_hidden_layers=MULTI_VIEW_LAYERS), fused=False, log=lambda _: None)


@pytest.fixture(scope="session")
def six_camera_bag(tmp_path_factory):
    """The fixture episode as a six-camera bag (6 x 160x96 JPEG with CameraInfo, IMU), mcap."""
    from deead_lab.make_bag import ORION_CAMERAS, write_bag
    out = tmp_path_factory.mktemp("bag6") / "episode"
    write_bag([REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz"], out, cameras=ORION_CAMERAS)
    return out
