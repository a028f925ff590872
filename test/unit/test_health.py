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
    assert levels == {"input": Level.OK, "planning": Level.OK, "validation": Level.OK, "latency": Level.OK,
                      "drops": Level.OK, "model": Level.OK}
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


def feed(stats, clock, seconds, topics=("image", "odometry", "route"), step=0.1):
    for _ in range(int(round(seconds / step))):
        for topic in topics:
            stats.note_input(topic)
        clock.t += step


def input_status(stats, **kwargs):
    return {s.name: s for s in assess(stats.snapshot(), 100.0, "onnxruntime", "v", **kwargs)}["input"]


def test_a_route_latched_once_with_stamp_zero_never_goes_stale():
    clock = FakeClock()
    stats = FrameStats(window_s=10.0, clock=clock)
    stats.note_input("route", static=True)                 # published once, transient local, stamp 0
    feed(stats, clock, 30.0, topics=("image", "odometry"))
    status = input_status(stats, max_input_age_s=1.0)
    assert status.level == Level.OK and status.message == "inputs arriving", status
    assert status.values["route_static"] == "true" and float(status.values["route_age_s"]) >= 30.0
    stats.note_input("route")                              # a stamped route replaces it: now it can go stale
    feed(stats, clock, 2.0, topics=("image", "odometry"))
    status = input_status(stats, max_input_age_s=1.0)
    assert status.level == Level.WARN and "route stale" in status.message and "odometry" not in status.message


def test_when_odometry_stops_the_status_names_odometry_not_the_route():
    clock = FakeClock()
    stats = FrameStats(window_s=10.0, clock=clock)
    feed(stats, clock, 5.0)
    assert input_status(stats).level == Level.OK
    feed(stats, clock, 3.0, topics=("image", "route"))       # odometry stopped 3 s ago, route still arrives
    status = input_status(stats, max_input_age_s=1.0)
    assert status.level == Level.WARN, status
    assert status.message.startswith("odometry stale: newest message 3.") and "io.max_input_age_s 1" in status.message
    assert "route" not in status.message and "full depth" in status.message
    feed(stats, clock, 0.5)                                  # odometry back
    assert input_status(stats, max_input_age_s=1.0).level == Level.OK


def test_an_input_never_received_is_named_and_only_required_inputs_count():
    clock = FakeClock()
    stats = FrameStats(window_s=10.0, clock=clock)
    feed(stats, clock, 1.0, topics=("image", "odometry"))
    status = input_status(stats)
    assert status.level == Level.WARN and status.message == "no route received (no route prior)"
    assert input_status(stats, required_inputs=("odometry",)).level == Level.OK, "constant velocity needs no route"


def test_fallbacks_are_an_error_while_they_are_in_the_window():
    clock = FakeClock()
    stats = FrameStats(window_s=10.0, clock=clock)
    stats.note_input("image")
    stats.note_planned(24, 24, 10.0, "route", refused_exits=2)
    validation = {s.name: s for s in assess(stats.snapshot(), 100.0, "onnxruntime", "v")}["validation"]
    assert validation.level == Level.OK and "2 early exits refused" in validation.message
    stats.note_planned(24, 24, 10.0, "route", fallback="stop", validation="waypoint 0 is NaN or inf (6 of 6)")
    stats.note_planned(24, 24, 10.0, "route", fallback="carry_forward", validation="speed 90 m/s")
    validation = {s.name: s for s in assess(stats.snapshot(), 100.0, "onnxruntime", "v")}["validation"]
    assert validation.level == Level.ERROR and "2 of 3 plans" in validation.message and "speed 90" in validation.message
    assert validation.values["fallbacks_stop_in_window"] == "1" and validation.values["fallbacks_total"] == "2"
    assert validation.values["refused_exits_total"] == "2"
    clock.t += 11.0                                          # the window has moved past them
    stats.note_planned(24, 24, 10.0, "route")
    validation = {s.name: s for s in assess(stats.snapshot(), 100.0, "onnxruntime", "v")}["validation"]
    assert validation.level == Level.OK and validation.values["fallbacks_total"] == "2"
