"""Invariants of the exit controller over arbitrary deviation traces (Hypothesis)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from deead_ros.exit import ExitReason, ExitSettings, FrameContext, run_with_exit
from deead_ros.exit.controller import checked_layers
from test.strategies import DT_S, TraceChain, converging_traces, deviation_traces

deltas = st.floats(0.0, 20.0, allow_nan=False)


def run(dev: np.ndarray, delta_m: float, first: int = 13, min_exit: int = 1, max_checks: int = 0) -> tuple:
    first = min(first, len(dev))
    chain = TraceChain(dev)
    settings = ExitSettings(delta_m=delta_m, first_checkpoint=first, min_exit_layer=min(min_exit, len(dev)),
                            horizon_s=3.0, max_checks=max_checks)
    return run_with_exit(chain, 0, settings.build_policy(), FrameContext(len(dev), chain.prior_m, DT_S)), chain


@given(deviation_traces(), deltas, st.integers(1, 40))
def test_checks_stay_between_first_checkpoint_and_last_layer(dev, delta, first):
    trace, chain = run(dev, delta, first)
    layers = checked_layers(trace)
    assert layers[0] == min(first, len(dev)), f"first check at {layers[0]}, configured {first}"
    assert all(a < b for a, b in zip(layers, layers[1:])), f"checks not increasing: {layers}"
    assert layers[-1] == trace.exit_layer <= len(dev)
    assert chain.computed == list(range(trace.exit_layer)), "each layer up to the exit runs exactly once"


@given(deviation_traces(), deltas)
def test_exits_iff_deviation_under_delta(dev, delta):
    trace, _ = run(dev, delta)
    for c in trace.checkpoints[:-1]:
        assert not c.deviation_m < delta, f"kept going at layer {c.layer} with {c.deviation_m} < {delta}"
    last = trace.checkpoints[-1]
    assert (last.deviation_m < delta) == (trace.reason == ExitReason.PRIOR_MATCHED)
    if trace.exit_layer < len(dev):
        assert last.deviation_m < delta


@given(deviation_traces())
def test_delta_zero_means_full_depth(dev):
    trace, chain = run(dev, 0.0)
    assert trace.exit_layer == len(dev) and len(chain.computed) == len(dev)


@given(deviation_traces(), deltas, st.integers(1, 40))
def test_min_exit_layer_is_respected(dev, delta, min_exit):
    trace, _ = run(dev, delta, first=1, min_exit=min_exit)
    assert trace.exit_layer >= min(min_exit, len(dev))


@given(converging_traces(), deltas, deltas)
def test_bigger_delta_never_exits_later_on_converging_traces(dev, a, b):
    """Without the bounded tail. With it, a bigger delta takes smaller strides and may spend its looks before the
    layer where a smaller delta's longer stride lands on an exit (deviation 9 then 0 at layer 17: delta 2 looks at
    13 and 17 and exits, delta 3 looks at 13 and 15 and runs to the end); the next property is what holds then."""
    lo, hi = sorted((a, b))
    late, early = (run(dev, d)[0].exit_layer for d in (lo, hi))
    assert early <= late, f"delta {hi} exited at {early}, delta {lo} at {late}"


@given(deviation_traces(), deltas, deltas)
def test_bigger_delta_never_exits_later_with_unit_strides(dev, a, b):
    """Without skipping (a full scan), the property holds on any trace."""
    lo, hi = sorted((a, b))
    exits = []
    for delta in (lo, hi):
        chain = TraceChain(dev)
        settings = ExitSettings(delta_m=delta, first_checkpoint=1, stride_table=(8.0, 1.0, 4.0, 1.0, 2.0, 1.0, 1.0),
                                horizon_s=3.0)
        exits.append(run_with_exit(chain, 0, settings.build_policy(),
                                   FrameContext(len(dev), chain.prior_m, DT_S)).exit_layer)
    assert exits[1] <= exits[0]


@given(deviation_traces(), deltas, st.integers(1, 40), st.integers(1, 8))
def test_the_bounded_tail_is_the_unbounded_walk_cut_after_its_looks(dev, delta, first, max_checks):
    """The bounded tail looks where the unbounded controller looks, up to max_checks looks; it exits where that
    one exits when that is within its looks, and otherwise runs to the last layer with one more look."""
    free, _ = run(dev, delta, first)
    bounded, chain = run(dev, delta, first, max_checks=max_checks)
    looks = checked_layers(free)
    if len(looks) <= max_checks:
        assert checked_layers(bounded) == looks and bounded.exit_layer == free.exit_layer
    else:
        assert checked_layers(bounded) == [*looks[:max_checks], len(dev)]
        assert bounded.exit_layer == len(dev)
    assert chain.computed == list(range(bounded.exit_layer))
