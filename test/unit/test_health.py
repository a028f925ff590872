"""Frame accounting and the levels /diagnostics reports."""
import pytest

from deead_ros.health import FrameStats, Level, assess


class FakeClock:
    """A settable monotonic clock (time is an input here, not a mock of behaviour)."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_counts_and_window():
    clock = FakeClock()
    stats = FrameStats(window_s=10.0, clock=clock)
    for i in range(10):
        stats.note_input("image")
        stats.note_input("odometry")
        stats.note_input("route")
        if i % 2:
            stats.note_planned(exit_layer=12, num_layers=24, total_ms=10.0 + i, prior_source="route")
        else:
            stats.note_dropped("superseded")
        clock.t += 0.1
    snap = stats.snapshot()
    assert snap.received == 10 and snap.planned == 5 and snap.dropped == 5
    assert snap.received == snap.planned + snap.dropped
    assert snap.sparsity == pytest.approx(0.5) and snap.mean_exit_layer == 12
    levels = {s.name: s.level for s in assess(snap, deadline_ms=100.0, backend="onnxruntime", model_version="v")}
    assert levels == {"input": Level.OK, "planning": Level.OK, "latency": Level.OK, "drops": Level.OK,
                      "model": Level.OK}
    clock.t += 11.0
    later = assess(stats.snapshot(), 100.0, "onnxruntime", "v")
    assert {s.name: s.level for s in later}["input"] == Level.ERROR
    assert "is ~/input/image publishing" in later[0].message


def test_warns_on_slow_frames_missing_odometry_and_bad_input():
    stats = FrameStats(window_s=10.0, clock=FakeClock())
    stats.note_input("image")
    stats.note_planned(24, 24, 250.0, "none")
    stats.note_dropped("bad_input")
    statuses = {s.name: s for s in assess(stats.snapshot(), 100.0, "onnxruntime", "v")}
    assert statuses["latency"].level == Level.WARN and statuses["latency"].values["deadline_ms"] == "100.0"
    assert statuses["input"].level == Level.WARN and "odometry" in statuses["input"].message
    assert statuses["planning"].level == Level.WARN and "without a prior" in statuses["planning"].message
    assert statuses["drops"].level == Level.WARN and statuses["drops"].values["dropped_bad_input"] == "1"


def test_unknown_drop_reason_is_an_error():
    with pytest.raises(ValueError, match="unknown drop reason"):
        FrameStats().note_dropped("because")
