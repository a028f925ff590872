"""One frozen settings snapshot per frame: the runner plans a frame with the RunnerSettings passed with it."""
import dataclasses

import numpy as np
import pytest

from deead_ros.engines import make_engine
from deead_ros.errors import ConfigError
from deead_ros.exit import ExitSettings, PriorSettings
from deead_ros.model.encoding import FrameInputs
from deead_ros.parameters import PARAMETERS
from deead_ros.runner import Runner, RunnerSettings


def frame():
    route = np.stack([np.arange(-10.0, 100.0, 2.0), np.zeros(55)], axis=1)
    image = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    return FrameInputs(image, route, 10.0, 0.0)


def test_a_frame_is_planned_with_the_settings_passed_with_it_not_the_configured_ones(small_model):
    runner = Runner(make_engine("onnxruntime", small_model), ExitSettings(first_checkpoint=2, delta_m=20.0),
                    PriorSettings())
    assert runner.plan(frame()).trace.exit_layer == 2, "the configured delta (20 m) exits at the first checkpoint"
    strict = RunnerSettings(ExitSettings(first_checkpoint=2, delta_m=0.0), PriorSettings())
    assert runner.plan(frame(), settings=strict).trace.exit_layer == runner.num_layers, "delta 0: full depth"
    assert runner.plan(frame()).trace.exit_layer == 2, "passing settings for a frame configures nothing"
    with pytest.raises(ConfigError, match="first_checkpoint"):
        runner.plan(frame(), settings=RunnerSettings(ExitSettings(first_checkpoint=99), PriorSettings()))


def test_the_node_snapshot_is_frozen_and_carries_every_frame_setting():
    from deead_ros.ros.params import config_from_values
    config = config_from_values({spec.name: spec.default for spec in PARAMETERS})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.exit = ExitSettings()                     # type: ignore[misc]
    with pytest.raises(TypeError):
        config.values["exit.delta_m"] = 1.0              # type: ignore[index]
    assert config.runner == RunnerSettings(config.exit, config.prior, config.validation, config.memory_max_gap_s)
    assert config.inputs.frame_id == config.io.frame_id == "base_link"
    assert config.inputs.odometry_wait_s == config.values["io.odometry_wait_s"]
