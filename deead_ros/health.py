"""Frame accounting and health levels for /diagnostics, without ROS types.

Every camera frame received is either planned or dropped with a reason; these counters prove it.
The levels mirror diagnostic_msgs/DiagnosticStatus (OK, WARN, ERROR) and each status carries the
measured value and its threshold, so a reader sees why a level was chosen.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

DROP_REASONS = ("superseded", "stale_frame", "stamp_backwards", "stamp_future", "bad_input", "engine_error")
REJECT_REASONS = ("stamp_backwards", "stamp_future", "bad_input", "engine_error")   # worth a WARN


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


@dataclass
class FrameStats:
    """Counters and a sliding window of planned frames; thread-safe (callbacks, worker and timer use it)."""

    window_s: float = 10.0
    clock: object = time.monotonic
    received: int = 0
    planned: int = 0
    drops: Counter = field(default_factory=Counter)
    rejected_inputs: Counter = field(default_factory=Counter)
    _window: deque = field(default_factory=deque)
    _arrivals: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note_input(self, topic: str) -> None:
        """Record the arrival of a message on an input topic (for rates and ages)."""
        now = self.clock()
        with self._lock:
            arrivals = self._arrivals.setdefault(topic, deque())
            arrivals.append(now)
            self._trim(arrivals, now)
            if topic == "image":
                self.received += 1

    def note_planned(self, exit_layer: int, num_layers: int, total_ms: float, prior_source: str) -> None:
        now = self.clock()
        with self._lock:
            self.planned += 1
            self._window.append(_Planned(now, exit_layer, num_layers, total_ms, prior_source))
            self._trim(self._window, now, key=lambda p: p.t)

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
            ages = {topic: now - a[-1] for topic, a in self._arrivals.items() if a}
            return StatsSnapshot(self.received, self.planned, dict(self.drops), dict(self.rejected_inputs), planned,
                                 rates, ages, self.window_s)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    received: int
    planned: int
    drops: dict
    rejected_inputs: dict
    window: list
    input_rates_hz: dict
    input_ages_s: dict
    window_s: float

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


def assess(snap: StatsSnapshot, deadline_ms: float, backend: str, model_version: str) -> list[Status]:
    """Turn a snapshot into one status per concern: input, planning, latency, drops, model."""
    statuses = []
    image_rate = snap.input_rates_hz.get("image", 0.0)
    if image_rate == 0.0:
        statuses.append(Status("input", Level.ERROR,
                               f"no camera frame in {snap.window_s:.0f} s; is ~/input/image publishing?", {}))
    else:
        missing = [t for t in ("odometry", "route") if snap.input_rates_hz.get(t, 0.0) == 0.0]
        level = Level.WARN if missing else Level.OK
        message = (f"no {' or '.join(missing)} in the window: no route prior, planning at full depth or with "
                   "the fallback prior" if missing else "inputs arriving")
        statuses.append(Status("input", level, message, {
            **{f"{t}_rate_hz": f"{r:.1f}" for t, r in snap.input_rates_hz.items()},
            **{f"{t}_age_s": f"{a:.2f}" for t, a in snap.input_ages_s.items()}}))
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
    p50, p95 = snap.latency_ms(50), snap.latency_ms(95)
    if planned_in_window and p95 > deadline_ms:
        latency = Status("latency", Level.WARN, f"p95 {p95:.1f} ms exceeds the deadline {deadline_ms:.1f} ms", {})
    else:
        latency = Status("latency", Level.OK, "within deadline" if planned_in_window else "no frames", {})
    latency.values.update({"p50_ms": f"{p50:.2f}", "p95_ms": f"{p95:.2f}", "deadline_ms": f"{deadline_ms:.1f}"})
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
