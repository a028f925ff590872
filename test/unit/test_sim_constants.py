"""Constants said once: the node's debug camera defaults are the simulator's camera mount (the demo bag's camera),
and the closed loop takes the ego's size and "stopped" from the simulator's set-up."""
import pytest

from deead_lab.driving import rules
from deead_lab.sim import scenario
from deead_ros.parameters import default


def test_the_nodes_debug_camera_defaults_are_the_simulators_mount():
    # the parameter table is literal (the runtime never imports the lab); the values must still be the mount's
    assert default("debug.camera_height_m") == pytest.approx(scenario.CAMERA_HEIGHT_M)
    assert default("debug.camera_forward_m") == pytest.approx(scenario.CAMERA_FORWARD_M)
    assert default("debug.camera_pitch_rad") == pytest.approx(scenario.CAMERA_PITCH_RAD, abs=1e-4)


def test_the_closed_loop_uses_the_simulators_vehicle_constants():
    assert rules.VEHICLE_LENGTH_M is scenario.VEHICLE_LENGTH_M
    assert rules.STOPPED_MPS is scenario.STOPPED_MPS
