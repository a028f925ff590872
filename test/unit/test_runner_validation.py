"""The runner never returns an implausible trajectory as valid: it refuses, goes deeper, or falls back."""
import math

import numpy as np
import pytest

from deead_ros.engines import make_engine
from deead_ros.errors import ConfigError
from deead_ros.exit import ExitSettings, FullPolicy, PriorSettings
from deead_ros.exit.validation import ValidationLimits, stopping_trajectory, validate
from deead_ros.model.encoding import FrameInputs
from deead_ros.runner import EgoPose, Runner


class ScriptedHead:
    """A real engine chain whose head can be told what to read (a plan, NaN, a 1e9 m plan) at chosen layers."""

    def __init__(self, chain):
        self._chain = chain
        self.plans = {}                    # layer (1-based) -> (T, 2) plan read there instead of the model's
        self.default = None                # plan read at every other layer (None: the model's)

    def __getattr__(self, name):
        return getattr(self._chain, name)

    def run_layers(self, state, start, stop):
        self._layer = stop
        return self._chain.run_layers(state, start, stop)

    def head(self, state):
        plan = self.plans.get(self._layer, self.default)
        if plan is None:
            return self._chain.head(state)
        with np.errstate(over="ignore"):                  # 1e39 m: inf in float32, as from a real head
            return np.array(plan, np.float32)


@pytest.fixture(scope="module")
def runner_and_head(small_model):
    head = ScriptedHead(make_engine("onnxruntime", small_model))
    runner = Runner(head, ExitSettings(first_checkpoint=2, delta_m=20.0), PriorSettings())
    return runner, head


@pytest.fixture
def runner(runner_and_head):
    runner, head = runner_and_head
    head.plans, head.default = {}, None
    runner._last_valid = None
    runner.configure(ExitSettings(first_checkpoint=2, delta_m=20.0), PriorSettings(), ValidationLimits())
    return runner, head


def frame(speed=10.0):
    route = np.stack([np.arange(-10.0, 100.0, 2.0), np.zeros(55)], axis=1)
    image = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    return FrameInputs(image, route, speed, 0.0)


def straight(runner, speed=10.0, y=0.0):
    return np.stack([speed * runner.times_s, np.full(len(runner.times_s), y)], axis=1)


def test_a_valid_plan_is_published_as_is(runner):
    runner, head = runner
    head.default = straight(runner)
    result = runner.plan(frame())
    assert result.is_valid and result.fallback == "" and result.validation.ok
    np.testing.assert_array_equal(result.trajectory_m, result.trace.trajectory_m)


@pytest.mark.parametrize("bad, code", [(np.full((6, 2), np.nan), "non_finite"), (np.full((6, 2), 1e9), "first_point"),
                                       (np.full((6, 2), 1e39), "non_finite")])   # 1e39: inf in float32
def test_an_implausible_full_depth_plan_becomes_a_flagged_stop(runner, bad, code):
    runner, head = runner
    head.default = bad
    result = runner.plan(frame(speed=10.0))
    assert not result.is_valid and result.fallback == "stop" and result.validation.code == code
    assert result.trace.exit_layer == runner.num_layers and result.trace.refused_exits == 0, \
        "the prior does not match: no early exit to refuse"
    np.testing.assert_allclose(result.trajectory_m, stopping_trajectory(10.0, runner.times_s), atol=1e-6)
    assert validate(result.trajectory_m, runner.dt_s, 10.0).ok, "the stop itself is plausible"
    assert np.isfinite(result.trajectory_m).all()


def test_an_implausible_early_exit_goes_deeper(runner):
    runner, head = runner
    head.default = straight(runner)
    head.plans = {2: straight(runner) + [[0, 0], [0, 0], [0, 8], [0, 0], [0, 0], [0, 0]]}   # near the prior, kinked
    result = runner.plan(frame())
    assert result.is_valid and result.trace.exit_layer == 3 and result.trace.refused_exits == 1
    assert result.trace.checkpoints[0].refused.startswith("lateral_acceleration")


def test_without_a_pose_the_fallback_is_a_stop_and_with_one_the_last_plan_carried_forward(runner):
    runner, head = runner
    head.default = straight(runner, y=1.0)                 # 1 m left of the ego, parallel
    good = runner.plan(frame(), ego_pose=EgoPose(100.0, 50.0, 20.0, 0.0))
    assert good.is_valid
    head.default = np.full((6, 2), np.nan)
    assert runner.plan(frame()).fallback == "stop", "no pose: nothing to carry forward with"
    # 0.5 s later the ego has driven 5 m along x: the old plan, in the new ego frame, starts 0.5 s further on
    carried = runner.plan(frame(), ego_pose=EgoPose(100.5, 55.0, 20.0, 0.0))
    assert carried.fallback == "carry_forward" and not carried.is_valid and carried.validation.code == "non_finite"
    np.testing.assert_allclose(carried.trajectory_m, straight(runner, y=1.0), atol=1e-4)
    # turned 90 degrees left on the spot: the old plan (along +x) lies to the ego's right
    turned = runner.plan(frame(speed=0.0), ego_pose=EgoPose(100.2, 50.0, 20.0, math.pi / 2))
    assert turned.fallback in ("carry_forward", "stop")
    assert turned.fallback == "stop", "the ego at 0 m/s cannot follow a plan that moves at 10 m/s: not plausible"


def test_the_carried_plan_follows_the_ego_pose(runner):
    runner, head = runner
    head.default = straight(runner)
    runner.plan(frame(), ego_pose=EgoPose(10.0, 0.0, 0.0, 0.0))
    head.default = np.full((6, 2), np.nan)
    carried = runner.plan(frame(), ego_pose=EgoPose(10.2, 2.0, 0.5, 0.0))    # 2 m on, drifted 0.5 m left
    assert carried.fallback == "carry_forward"
    expected = straight(runner) + [0.0, -0.5]                                  # the old line, 0.5 m to the right
    np.testing.assert_allclose(carried.trajectory_m, expected, atol=1e-4)


def test_an_old_plan_is_not_carried_forward(runner):
    runner, head = runner
    head.default = straight(runner)
    runner.plan(frame(), ego_pose=EgoPose(10.0, 0.0, 0.0, 0.0))
    head.default = np.full((6, 2), np.nan)
    limit = runner.validation_limits.max_carry_forward_s
    late = runner.plan(frame(), ego_pose=EgoPose(10.0 + limit + 0.1, 10.0 * (limit + 0.1), 0.0, 0.0))
    assert late.fallback == "stop"
    back = runner.plan(frame(), ego_pose=EgoPose(9.0, 0.0, 0.0, 0.0))
    assert back.fallback == "stop", "a pose from before the last valid plan: nothing to carry"
    nan_pose = runner.plan(frame(), ego_pose=EgoPose(10.1, float("nan"), 0.0, 0.0))
    assert nan_pose.fallback == "stop"
    runner.configure(*runner.settings, ValidationLimits(max_carry_forward_s=0.0))
    assert runner.plan(frame(), ego_pose=EgoPose(10.1, 1.0, 0.0, 0.0)).fallback == "stop", "0: always stop"


def test_a_fallback_is_never_remembered_as_the_last_valid_plan(runner):
    runner, head = runner
    head.default = straight(runner)
    runner.plan(frame(), ego_pose=EgoPose(10.0, 0.0, 0.0, 0.0))
    head.default = np.full((6, 2), np.nan)
    for k in range(1, 4):                                  # 0.3 s of failures: carried from the same plan
        result = runner.plan(frame(), ego_pose=EgoPose(10.0 + 0.1 * k, k * 1.0, 0.0, 0.0))
        assert result.fallback == "carry_forward"
    assert runner._last_valid.pose.stamp_s == 10.0


def test_validation_limits_are_live_and_checked(runner):
    runner, head = runner
    head.default = straight(runner, speed=10.0)
    assert runner.plan(frame()).is_valid
    runner.configure(*runner.settings, ValidationLimits(max_speed_mps=5.0))
    slow = runner.plan(frame())
    assert slow.fallback == "stop" and slow.validation.code in ("speed", "first_point")
    np.testing.assert_allclose(slow.trajectory_m, stopping_trajectory(5.0, runner.times_s), atol=1e-6,
                               err_msg="the stop starts at no more than the speed limit")
    with pytest.raises(ConfigError, match="validation.max_speed_mps"):
        runner.configure(*runner.settings, ValidationLimits(max_speed_mps=float("nan")))
    assert runner.validation_limits.max_speed_mps == 5.0, "a refused configuration changes nothing"


def test_evaluation_policies_are_validated_too(runner):
    runner, head = runner
    head.default = np.full((6, 2), np.nan)
    result = runner.plan(frame(), policy=FullPolicy())
    assert result.fallback == "stop" and result.trace.policy == "full"
