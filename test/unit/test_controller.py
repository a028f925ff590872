"""Unit tests of the multi-hop exit controller and its policies on real (synthetic) layer chains."""
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest

from deead_ros.exit import (ExitReason, ExitSettings, FixedPolicy, FrameContext, FullPolicy, OraclePolicy,
                            PatiencePolicy, StrideTable, run_with_exit)
from deead_ros.exit.settings import named_settings, parse_setting_name, setting_name
from deead_ros.exit.controller import checked_layers
from deead_ros.exit.validation import Validation, validate
from test.expect import reported
from test.strategies import DT_S, HORIZON, TraceChain


PAPER = ExitSettings(first_checkpoint=13, delta_m=2.0, max_checks=0)   # DeeAD: delta 2 m, layer 13 of 32, no bound


def run(deviations, settings=PAPER, prior=True, policy=None):
    chain = TraceChain(np.asarray(deviations, np.float32))
    ctx = FrameContext(chain.num_layers, chain.prior_m if prior else None, DT_S)
    trace = run_with_exit(chain, 0, policy or settings.build_policy(), ctx)
    return trace, chain


def test_paper_strides_from_layer_13_of_32():
    # deviation 20 m at delta 2 m: > 8x delta -> jump 8; then 9 m (> 4x) -> 4; 5 m (> 2x) -> 2; 3 m -> 1; 1 m exits
    dev = np.full(32, 50.0)
    dev[12], dev[20], dev[24], dev[26], dev[27] = 20.0, 9.0, 5.0, 3.0, 1.0
    trace, chain = run(dev)
    assert checked_layers(trace) == [13, 21, 25, 27, 28]
    assert trace.exit_layer == 28 and trace.reason == ExitReason.PRIOR_MATCHED
    assert chain.computed == list(range(28)), "layers after the exit must never run"
    assert [c.next_stride for c in trace.checkpoints] == [8, 4, 2, 1, 0]


def test_runs_to_last_layer_when_never_close():
    trace, chain = run(np.full(32, 3.0))
    assert trace.exit_layer == 32 and not trace.exited_early
    assert trace.reason == ExitReason.LAST_LAYER
    assert checked_layers(trace)[-1] == 32 and len(chain.computed) == 32


def test_stride_never_overshoots_last_layer():
    trace, _ = run(np.full(16, 100.0), ExitSettings(first_checkpoint=13))
    assert checked_layers(trace) == [13, 16]


def test_no_prior_means_full_depth_with_one_check():
    trace, chain = run(np.zeros(32), prior=False)
    assert trace.exit_layer == 32 and trace.reason == ExitReason.NO_PRIOR
    assert checked_layers(trace) == [32] and len(chain.computed) == 32


def test_min_exit_layer_defers_the_exit():
    trace, _ = run(np.zeros(32), ExitSettings(first_checkpoint=5, min_exit_layer=20))
    assert trace.exit_layer == 20


def test_full_fixed_patience_oracle():
    dev = np.linspace(10, 0, 32)
    assert run(dev, policy=FullPolicy())[0].exit_layer == 32
    fixed, chain = run(dev, policy=FixedPolicy(exit_layer=18))
    assert fixed.exit_layer == 18 and fixed.reason == ExitReason.FIXED_LAYER and len(chain.computed) == 18
    # successive checkpoints one layer apart differ by 10/31 m < 0.5 m: patience exits at its second look
    patience, _ = run(dev, policy=PatiencePolicy(tolerance_m=0.5, first_checkpoint=13))
    assert patience.exit_layer == 14 and patience.reason == ExitReason.PATIENCE
    chain = TraceChain(dev.astype(np.float32))
    truth = chain.prior_m + np.array([0.0, 3.0], np.float32)      # ground truth 3 m to the left
    oracle = run_with_exit(chain, 0, OraclePolicy(delta_m=2.0), FrameContext(32, chain.prior_m, DT_S, truth))
    assert oracle.reason == ExitReason.ORACLE
    assert abs(dev[oracle.exit_layer - 1] - 3.0) < 2.0 and abs(dev[oracle.exit_layer - 2] - 3.0) >= 2.0


def test_deead_or_patience_exits_on_either():
    converged_far = np.r_[np.full(13, 30.0), np.full(19, 10.0)]   # converges, but 10 m from the prior
    settings = replace(PAPER, policy="deead_or_patience", patience_tolerance_m=0.5, delta_m=2.0)
    trace, _ = run(converged_far, settings)
    assert trace.reason == ExitReason.PATIENCE and trace.exit_layer == 15
    deead_only, _ = run(converged_far, replace(PAPER, delta_m=2.0))
    assert deead_only.exit_layer == 32, "deead alone never exits where the plan differs from the prior"


def test_trace_reports_time_and_text():
    trace, _ = run(np.r_[np.full(12, 9.0), np.full(20, 0.5)])
    assert trace.exit_layer == 13 and "prior matched" in trace.reason_text
    assert trace.layers_ms >= 0 and trace.checks_ms >= 0 and len(trace.trajectory_m) == HORIZON


@pytest.mark.parametrize("table, message", [
    (StrideTable((8.0, 4.0), (8, 4, 2, 1)), "one more entry"),
    (StrideTable((8.0, 4.0, 2.0), (2, 4, 8, 1)), "must not increase"),
    (StrideTable((2.0, 4.0, 8.0), (8, 4, 2, 1)), "strictly decrease"),
    (StrideTable((8.0, 4.0, 2.0), (8, 4, 2, 0)), ">= 1"),
])
def test_bad_stride_tables_say_why(table, message):
    assert message in table.problem()


def test_stride_table_parameter_is_pairs_then_the_final_stride():
    table = StrideTable.from_flat([8, 8, 4, 4, 2, 2, 1])
    assert table == StrideTable((8.0, 4.0, 2.0), (8, 4, 2, 1)) == StrideTable()
    assert table.flat() == (8.0, 8.0, 4.0, 4.0, 2.0, 2.0, 1.0) == ExitSettings().stride_table
    assert StrideTable.from_flat([3]).stride(100.0, 1.0) == 3, "one entry: a constant stride"
    assert StrideTable.from_flat([4.0, 2.0, 1.0]).problem() is None
    with pytest.raises(ValueError, match="exit.stride_table"):
        StrideTable.from_flat(["a"])


@pytest.mark.parametrize("updates, message", [
    ({"policy": "fastest"}, "unknown"),
    ({"delta_m": -1.0}, ">= 0"),
    ({"delta_m": float("nan")}, "finite"),
    ({"first_checkpoint": 33}, "outside the model's layers [1, 32]"),
    ({"first_checkpoint": 0}, "outside"),
    ({"min_exit_layer": 40}, "outside"),
    ({"fixed_exit_layer": 0, "policy": "fixed"}, "outside"),
    ({"fixed_exit_layer": 40, "policy": "fixed"}, "outside"),
    ({"horizon_s": 0.0}, "> 0"),
    ({"stride_table": [8, 1, 4, 2, 2, 4, 8]}, "must not increase"),
    ({"stride_table": [8, 8, 4, 4, 2, 2]}, "odd number of entries"),
    ({"stride_table": [float("nan")] * 7}, "whole numbers"),
    ({"stride_table": [float("nan"), 8, float("nan"), 4, float("nan"), 2, 1]}, "finite"),
    ({"stride_table": [float("inf"), 8, 4, 4, 2, 2, 1]}, "finite"),
    ({"stride_table": [8, 8.5, 4, 4, 2, 2, 1]}, "whole numbers"),
    ({"stride_table": [2, 8, 4, 4, 8, 2, 1]}, "strictly decrease"),
    ({"stride_table": []}, "odd number"),
    ({"patience_stride": 0}, ">= 1"),
])
def test_settings_problems(updates, message):
    assert message in reported(ExitSettings().with_updates(updates).problem(num_layers=32))


def test_default_settings_are_valid():
    assert ExitSettings().problem(32) is None


def test_a_setting_name_round_trips_to_the_policy_it_names():
    base = ExitSettings(delta_m=0.7, fixed_exit_layer=5)
    for policy, value in (("deead", 0.25), ("deead_or_patience", 2.0), ("fixed", 13.0), ("full", None),
                          ("patience", None), ("oracle", 2.0)):
        assert parse_setting_name(setting_name(policy, value)) == (policy, value)
    assert setting_name("deead", 2.0) == "deead_2" and setting_name("fixed", 13) == "fixed_13"
    assert named_settings("deead_0.25", base) == replace(base, policy="deead", delta_m=0.25)
    assert named_settings("fixed_13", base) == replace(base, policy="fixed", fixed_exit_layer=13)
    assert named_settings("full", base).build_policy().name == "full"
    assert named_settings("deead_or_patience_2", base).build_policy().name == "deead_or_patience"
    for bad in ("oracle_2", "fixed_2.5", "deead", "patience_3", "scan_from_layer_1_2"):
        with pytest.raises(ValueError, match="unknown exit setting"):
            named_settings(bad, base)


def test_fixed_exit_layer_only_matters_to_the_fixed_policy():
    assert ExitSettings(fixed_exit_layer=24).problem(num_layers=16) is None
    assert "fixed_exit_layer=24" in reported(ExitSettings(policy="fixed", fixed_exit_layer=24).problem(num_layers=16))


# -- validation: an implausible early exit is refused, the chain goes deeper -------------------------------------

@dataclass
class PoisonedChain(TraceChain):
    """A TraceChain whose head, after the layers in `poisoned` (1-based), reads a plan close to the prior
    (mean 2 m over the first 2 s) but with a lateral jump no vehicle can follow; or NaN with `nan`."""

    poisoned: frozenset = frozenset()
    nan: bool = False

    def head(self, state: int) -> np.ndarray:
        out = super().head(state)
        if state in self.poisoned:
            out = np.full_like(out, np.nan) if self.nan else out + np.array([[0, 0], [0, 0], [0, 8]] + [[0, 0]] * (
                HORIZON - 3), np.float32)
        return out


def straight_prior():
    return np.stack([10.0 * (np.arange(HORIZON) + 1) * DT_S, np.zeros(HORIZON)], axis=1).astype(np.float32)


WIDE = ExitSettings(first_checkpoint=13, delta_m=5.0)


def validated_run(deviations, poisoned, settings=WIDE, policy=None, validator=True, nan=False):
    chain = PoisonedChain(np.asarray(deviations, np.float32), prior_m=straight_prior(), poisoned=frozenset(poisoned),
                          nan=nan)
    ctx = FrameContext(chain.num_layers, chain.prior_m, DT_S)
    check = (lambda trajectory: validate(trajectory, DT_S, 10.0)) if validator else None
    return run_with_exit(chain, 0, policy or settings.build_policy(), ctx, check), chain


def test_an_implausible_early_exit_is_refused_and_the_chain_goes_deeper():
    trace, chain = validated_run(np.zeros(32), poisoned={13, 14})
    assert trace.exit_layer == 15 and trace.reason == ExitReason.PRIOR_MATCHED and trace.validation.ok
    assert checked_layers(trace) == [13, 14, 15] and chain.computed == list(range(15))
    assert [c.refused.split(":")[0] for c in trace.checkpoints] == ["lateral_acceleration"] * 2 + [""]
    assert "at waypoint 2" in trace.checkpoints[0].refused
    assert trace.refused_exits == 2 and "2 early exits refused by validation (first at layer 13)" in trace.reason_text
    assert [c.next_stride for c in trace.checkpoints] == [1, 1, 0]


def test_without_a_validator_the_controller_exits_where_the_policy_says():
    trace, _ = validated_run(np.zeros(32), poisoned={13}, validator=False)
    assert trace.exit_layer == 13 and trace.validation is None and trace.refused_exits == 0


def test_a_failing_last_layer_still_ends_the_frame_with_its_verdict():
    trace, chain = validated_run(np.zeros(32), poisoned=set(range(13, 33)))
    assert trace.exit_layer == 32 and len(chain.computed) == 32
    assert not trace.validation.ok and trace.validation.code == "lateral_acceleration"
    assert trace.refused_exits == 32 - 13, "every look before the last refused; the last is the runner's to replace"
    assert trace.checkpoints[-1].refused == "", "the last layer is not refused: it ends the frame whatever its verdict"


def test_a_non_finite_exit_is_refused_even_where_the_policy_ignores_the_deviation():
    trace, _ = validated_run(np.zeros(32), poisoned={18}, policy=FixedPolicy(exit_layer=18), nan=True)
    assert trace.exit_layer == 19 and trace.validation.ok and trace.refused_exits == 1
    assert trace.checkpoints[0].refused.startswith("non_finite: waypoint 0 is NaN")


def test_a_valid_frame_is_validated_once_at_its_exit():
    validated: list[np.ndarray] = []

    def counting_validate(trajectory_m: np.ndarray) -> Validation:
        validated.append(trajectory_m)
        return validate(trajectory_m, DT_S, 10.0)

    chain = PoisonedChain(np.zeros(32, np.float32), prior_m=straight_prior())
    ctx = FrameContext(32, chain.prior_m, DT_S)
    trace = run_with_exit(chain, 0, PAPER.build_policy(), ctx, counting_validate)
    assert trace.validation is not None, "the exit's trajectory was never validated"
    assert trace.exit_layer == 13 and trace.validation.ok and len(validated) == 1


def test_bounded_tail_runs_straight_to_the_last_layer_after_max_checks():
    # 3 m at delta 2 m: stride 1 every time; unbounded that is a look at every layer from 13 to 32
    unbounded, _ = run(np.full(32, 3.0))
    assert len(unbounded.checkpoints) == 20
    trace, chain = run(np.full(32, 3.0), replace(PAPER, max_checks=2))
    assert checked_layers(trace) == [13, 14, 32]
    assert trace.reason == ExitReason.LAST_LAYER and len(chain.computed) == 32
    assert [c.next_stride for c in trace.checkpoints] == [1, 18, 0]


def test_bounded_tail_still_exits_within_its_looks():
    dev = np.full(32, 3.0)
    dev[13] = 1.0                                          # layer 14, the second look, meets delta
    trace, chain = run(dev, replace(PAPER, max_checks=2))
    assert trace.exit_layer == 14 and trace.reason == ExitReason.PRIOR_MATCHED
    assert chain.computed == list(range(14))
    dev[14] = 1.0
    dev[13] = 3.0                                          # only the third look would meet it: past the bound
    trace, _ = run(dev, replace(PAPER, max_checks=2))
    assert trace.exit_layer == 32


def test_default_settings_bound_the_tail():
    assert ExitSettings().build_policy().max_checks == ExitSettings().max_checks > 0
    assert ExitSettings(max_checks=-1).problem(32) is not None
    assert ExitSettings(budget_ms=float("nan")).problem(32) is not None


@dataclass
class SlowChain(TraceChain):
    """A TraceChain whose every layer takes `layer_s` of wall time (the budget's clock is real time)."""

    layer_s: float = 0.004

    def run_layers(self, state: int, start: int, stop: int) -> int:
        time.sleep(self.layer_s * (stop - start))
        return super().run_layers(state, start, stop)


def test_budget_publishes_the_deepest_plan_reached_and_flags_it():
    chain = SlowChain(np.full(32, 3.0, np.float32))
    start = time.perf_counter()
    trace = run_with_exit(chain, 0, PAPER.build_policy(), FrameContext(32, chain.prior_m, DT_S),
                          deadline_s=start + 0.040)       # 40 ms at 4 ms a layer: well short of 32 layers
    assert trace.reason == ExitReason.BUDGET and trace.over_budget and trace.exited_early
    assert 1 <= trace.exit_layer < 13, "the budget ends the frame before the first look"
    assert chain.computed == list(range(trace.exit_layer)), "no layer after the one the plan was read at"
    assert checked_layers(trace) == [trace.exit_layer]
    np.testing.assert_allclose(trace.trajectory_m, chain.head(trace.exit_layer))


def test_budget_that_is_not_reached_changes_nothing():
    chain = SlowChain(np.full(32, 3.0, np.float32), layer_s=0.0)
    trace = run_with_exit(chain, 0, PAPER.build_policy(), FrameContext(32, chain.prior_m, DT_S),
                          deadline_s=time.perf_counter() + 60.0)
    reference, _ = run(np.full(32, 3.0))
    assert not trace.over_budget and checked_layers(trace) == checked_layers(reference)


def test_a_budget_that_ends_right_after_a_look_ends_the_frame_on_that_look(monkeypatch):
    # a clock that only the chain moves: a layer takes 1 s, a look 0.6 s; after the look at layer 13 (13.6 s) the
    # next layer and a look (15.2 s) do not fit before 14.5 s
    clock = [0.0]
    monkeypatch.setattr("deead_ros.exit.controller.time.perf_counter", lambda: clock[0])

    @dataclass
    class TimedChain(TraceChain):
        def run_layers(self, state: int, start: int, stop: int) -> int:
            clock[0] += stop - start
            return super().run_layers(state, start, stop)

        def head(self, state: int) -> np.ndarray:
            clock[0] += 0.6
            return super().head(state)

    chain = TimedChain(np.full(32, 3.0, np.float32))
    trace = run_with_exit(chain, 0, PAPER.build_policy(), FrameContext(32, chain.prior_m, DT_S), deadline_s=14.5)
    assert checked_layers(trace) == [13], "one look at layer 13, not a second one at the same layer"
    assert trace.over_budget and trace.exit_layer == 13 and chain.computed == list(range(13))
    assert [c.next_stride for c in trace.checkpoints] == [0]
