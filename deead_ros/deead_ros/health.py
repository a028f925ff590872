"""Frame accounting and health levels for /diagnostics, without ROS types.

Every camera frame received is either planned or dropped with a reason; these counters prove it.
The levels mirror diagnostic_msgs/DiagnosticStatus (OK, WARN, ERROR) and each status carries the
measured value and its threshold, so a reader sees why a level was chosen. An input is judged by
the age of its newest message against io.max_input_age_s, and named when it goes stale; a path
published once with stamp 0 (latched, transient local) is static and never goes stale.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Sequence

import numpy as np

from deead_ros.parameters import default

# inactive: the node was configured but not active (a managed node's deactivate); incomplete_set: several
# cameras, and one of them sent no image of that instant (deead_ros.camera_sync); camera_mismatch: a camera
# of another aspect than the model's, with camera_mismatch: refuse (deead_ros.sensor_contract)
DROP_REASONS = ("superseded", "stale_frame", "stamp_backwards", "stamp_future", "bad_input", "engine_error",
                "inactive", "incomplete_set", "camera_mismatch")
REJECT_REASONS = ("stamp_backwards", "stamp_future", "bad_input", "engine_error", "incomplete_set",
                  "camera_mismatch")   # a WARN
REQUIRED_INPUTS = ("odometry", "route")      # besides the camera: what a route prior needs
_CONSEQUENCE = {"odometry": "no prior, planning at full depth", "route": "no route prior"}


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True, slots=True)
class Status:
    """One concern's health: what a DiagnosticStatus carries."""

    name: str
    level: Level
    message: str
    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Planned:
    t: float
    exit_layer: int
    num_layers: int
    total_ms: float
    prior_source: str
    fallback: str = ""           # "" | carry_forward | stop: the plan failed validation
    refused_exits: int = 0       # early exits refused by validation (the chain went deeper)
    over_budget: bool = False    # exit.budget_ms ended the frame: the deepest plan reached was published


@dataclass
class FrameStats:
    """Counters and a sliding window of planned frames; thread-safe (callbacks, worker and timer use it)."""

    window_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    received: int = 0
    planned: int = 0
    drops: Counter = field(default_factory=Counter)
    rejected_inputs: Counter = field(default_factory=Counter)
    fallbacks: Counter = field(default_factory=Counter)     # by kind, since start
    refused_exits: int = 0                                  # since start
    last_validation_failure: str = ""
    _window: deque = field(default_factory=deque)
    _arrivals: dict = field(default_factory=dict)
    _last_arrival: dict = field(default_factory=dict)
    _static: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note_input(self, topic: str, static: bool = False) -> None:
        """Record the arrival of a message on an input topic (for rates and ages).

        static: the message holds until replaced (a path with stamp 0, latched): it never goes stale.
        """
        now = self.clock()
        with self._lock:
            arrivals = self._arrivals.setdefault(topic, deque())
            arrivals.append(now)
            self._trim(arrivals, now)
            self._last_arrival[topic] = now
            if static:
                self._static.add(topic)
            else:
                self._static.discard(topic)
            if topic == "image":
                self.received += 1

    def note_planned(self, exit_layer: int, num_layers: int, total_ms: float, prior_source: str,
                     fallback: str = "", refused_exits: int = 0, validation: str = "",
                     over_budget: bool = False) -> None:
        """Record a planned frame; fallback and validation say when its plan failed validation, over_budget when
        the per-frame budget ended it."""
        now = self.clock()
        with self._lock:
            self.planned += 1
            self._window.append(_Planned(now, exit_layer, num_layers, total_ms, prior_source, fallback,
                                         refused_exits, over_budget))
            self._trim(self._window, now, key=lambda p: p.t)
            self.refused_exits += refused_exits
            if fallback:
                self.fallbacks[fallback] += 1
                self.last_validation_failure = validation

    def note_dropped(self, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason '{reason}'; one of {DROP_REASONS}")
        with self._lock:
            self.drops[reason] += 1

    def note_rejected_input(self, topic: str) -> None:
        """Record a route, odometry or path message that could not be used (the frame still plans)."""
        with self._lock:
            self.rejected_inputs[topic] += 1

    def _trim(self, items: deque, now: float, key=lambda t: t) -> None:
        while items and now - key(items[0]) > self.window_s:
            items.popleft()

    def snapshot(self) -> "StatsSnapshot":
        """Return a consistent copy of the counters and window statistics."""
        now = self.clock()
        with self._lock:
            self._trim(self._window, now, key=lambda p: p.t)
            for arrivals in self._arrivals.values():
                self._trim(arrivals, now)
            planned = list(self._window)
            rates = {topic: len(a) / self.window_s for topic, a in self._arrivals.items()}
            ages = {topic: now - t for topic, t in self._last_arrival.items()}
            return StatsSnapshot(self.received, self.planned, dict(self.drops), dict(self.rejected_inputs), planned,
                                 rates, ages, self.window_s, frozenset(self._static), dict(self.fallbacks),
                                 self.refused_exits, self.last_validation_failure)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    received: int
    planned: int
    drops: dict
    rejected_inputs: dict
    window: list
    input_rates_hz: dict
    input_ages_s: dict           # time since each input's newest message (not limited to the window)
    window_s: float
    static_inputs: frozenset = frozenset()    # inputs whose newest message is static (stamp 0, latched)
    fallbacks: dict = field(default_factory=dict)   # by kind, since start
    refused_exits: int = 0       # since start
    last_validation_failure: str = ""

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def latency_ms(self, q: float) -> float:
        return float(np.percentile([p.total_ms for p in self.window], q)) if self.window else float("nan")

    @property
    def mean_exit_layer(self) -> float:
        return float(np.mean([p.exit_layer for p in self.window])) if self.window else float("nan")

    @property
    def sparsity(self) -> float:
        """Share of decoder layers not computed in the window."""
        if not self.window:
            return float("nan")
        return 1.0 - sum(p.exit_layer for p in self.window) / sum(p.num_layers for p in self.window)


def stale_inputs(snap: StatsSnapshot, max_input_age_s: float,
                 required: Sequence[str] = REQUIRED_INPUTS) -> list[str]:
    """Name each required input that never arrived or whose newest message is older than max_input_age_s."""
    problems = []
    for topic in required:
        age = snap.input_ages_s.get(topic)
        consequence = _CONSEQUENCE.get(topic, f"no {topic}")
        if age is None:
            problems.append(f"no {topic} received ({consequence})")
        elif topic not in snap.static_inputs and age > max_input_age_s:
            problems.append(f"{topic} stale: newest message {age:.1f} s ago > io.max_input_age_s "
                            f"{max_input_age_s:g} s ({consequence})")
    return problems


def assess(snap: StatsSnapshot, deadline_ms: float, backend: str, model_version: str,
           max_input_age_s: float = default("io.max_input_age_s"),
           required_inputs: Sequence[str] = REQUIRED_INPUTS) -> list[Status]:
    """Turn a snapshot into one status per concern: input, planning, validation, latency, drops, model."""
    statuses = []
    image_rate = snap.input_rates_hz.get("image", 0.0)
    if image_rate == 0.0:
        statuses.append(Status("input", Level.ERROR,
                               f"no camera frame in {snap.window_s:.0f} s; is ~/input/image publishing?", {}))
    else:
        problems = stale_inputs(snap, max_input_age_s, required_inputs)
        statuses.append(Status("input", Level.WARN if problems else Level.OK,
                               "; ".join(problems) if problems else "inputs arriving", {
            **{f"{t}_rate_hz": f"{r:.1f}" for t, r in snap.input_rates_hz.items()},
            **{f"{t}_age_s": f"{a:.2f}" for t, a in snap.input_ages_s.items()},
            **{f"{t}_static": "true" for t in sorted(snap.static_inputs)},
            "max_input_age_s": f"{max_input_age_s:g}"}))
    planned_in_window = len(snap.window)
    if planned_in_window == 0:
        statuses.append(Status("planning", Level.ERROR, "no trajectory planned in the window", {
            "frames_received": str(snap.received), "frames_planned": str(snap.planned)}))
    else:
        no_prior = sum(p.prior_source == "none" for p in snap.window)
        level = Level.WARN if no_prior else Level.OK
        message = (f"{no_prior} of {planned_in_window} frames without a prior (full depth)" if no_prior
                   else f"mean exit layer {snap.mean_exit_layer:.1f}, sparsity {snap.sparsity:.0%}")
        statuses.append(Status("planning", level, message, {
            "mean_exit_layer": f"{snap.mean_exit_layer:.2f}", "layer_sparsity": f"{snap.sparsity:.3f}",
            "planning_rate_hz": f"{planned_in_window / snap.window_s:.1f}",
            "frames_received": str(snap.received), "frames_planned": str(snap.planned)}))
    statuses.append(validation_status(snap))
    p50, p95 = snap.latency_ms(50), snap.latency_ms(95)
    over_budget = sum(p.over_budget for p in snap.window)
    if planned_in_window and p95 > deadline_ms:
        latency = Status("latency", Level.WARN, f"p95 {p95:.1f} ms exceeds the deadline {deadline_ms:.1f} ms", {})
    elif over_budget:
        latency = Status("latency", Level.WARN, f"{over_budget} of {planned_in_window} frames in the window ran out of "
                         "exit.budget_ms and published the deepest plan reached", {})
    else:
        latency = Status("latency", Level.OK, "within deadline" if planned_in_window else "no frames", {})
    latency.values.update({"p50_ms": f"{p50:.2f}", "p95_ms": f"{p95:.2f}", "deadline_ms": f"{deadline_ms:.1f}",
                           "over_budget_in_window": str(over_budget)})
    statuses.append(latency)
    bad = sum(snap.drops.get(r, 0) for r in REJECT_REASONS)
    drops = Status("drops", Level.WARN if bad else Level.OK,
                   f"{bad} frames rejected (bad input, bad stamp or engine error)" if bad else
                   f"{snap.dropped} dropped (superseded or stale), none rejected",
                   {**{f"dropped_{r}": str(snap.drops.get(r, 0)) for r in DROP_REASONS},
                    **{f"rejected_{t}": str(n) for t, n in snap.rejected_inputs.items()}})
    statuses.append(drops)
    statuses.append(Status("model", Level.OK, f"{backend} backend", {"backend": backend,
                                                                     "model_version": model_version}))
    return statuses


def lifecycle_status(state: str, failure: str = "") -> Status:
    """The managed node's state: OK while active; WARN while configured or unconfigured (nothing is planned),
    ERROR with the reason while the last transition failed (a bad model at configure, say)."""
    if failure:
        return Status("lifecycle", Level.ERROR, f"{state}: {failure}", {"state": state, "last_failure": failure})
    if state == "active":
        return Status("lifecycle", Level.OK, "active: planning", {"state": state})
    waiting = {"unconfigured": "waiting for configure (loads the engines)",
               "inactive": "configured, waiting for activate (frames are counted, not planned)"}
    return Status("lifecycle", Level.WARN, f"{state}: {waiting.get(state, 'not planning')}", {"state": state})


def validation_status(snap: StatsSnapshot) -> Status:
    """ERROR while frames in the window published a fallback instead of an implausible plan."""
    failed = [p for p in snap.window if p.fallback]
    refused = sum(p.refused_exits for p in snap.window)
    values = {"fallbacks_in_window": str(len(failed)),
              "fallbacks_carry_forward_in_window": str(sum(p.fallback == "carry_forward" for p in failed)),
              "fallbacks_stop_in_window": str(sum(p.fallback == "stop" for p in failed)),
              "fallbacks_total": str(sum(snap.fallbacks.values())),
              "refused_exits_in_window": str(refused), "refused_exits_total": str(snap.refused_exits),
              "last_failure": snap.last_validation_failure}
    if failed:
        return Status("validation", Level.ERROR,
                      f"{len(failed)} of {len(snap.window)} plans in the window failed validation and were "
                      f"replaced by a fallback; last: {snap.last_validation_failure}", values)
    if refused:
        return Status("validation", Level.OK, f"all published plans valid; {refused} early exits refused as "
                      "implausible (planned deeper)", values)
    return Status("validation", Level.OK, "all published plans valid", values)
