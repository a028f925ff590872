"""A model's memory across frames: what an encoder may keep from one frame to the next, and when it starts over.

ORION's QT-Former carries a history from frame to frame; a model of that kind exports an encoder
that, besides `encode`, has `initial_memory()` and `next_memory(memory, frame, computed)`
(MemoryEncoder). The runner keeps one memory per input stream (MemoryStreams): the live node has
one stream, deead_eval one per bag and exit setting (each setting publishes other plans, so each has
its own history). A stream starts afresh on a jump in time (a frame more than `memory.max_gap_s`
after the previous one of the stream, or any time before it: a looping bag, a new drive), on an
odometry reset, when the node is deactivated, and when the caller says so (a new bag).

The early-exit rule: the memory after a frame is made from what that frame computed, never from
layers it skipped. `computed` holds the head's plan at the layer the frame exited at (the deepest
layer that ran, before any fallback replaced it); the runner never runs skipped layers to fill the
memory, so early exit saves the same layers with a memory as without one, and the next frame
remembers the plan the model actually produced.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from deead_ros.model.encoding import FrameInputs
from deead_ros.exit.prior import RouteAhead

LIVE_STREAM = "live"


@dataclass(frozen=True, slots=True)
class ComputedPlan:
    """What a frame computed that a memory may keep."""

    trajectory_m: np.ndarray     # (T, 2) the head's plan at the exit layer, ego frame at the frame's stamp, m
    exit_layer: int              # the deepest layer that ran (1-based)
    num_layers: int
    stamp_s: float               # the frame's camera stamp


@runtime_checkable
class MemoryEncoder(Protocol):
    """An encoder whose stem reads a state carried over from earlier frames (see the module docstring)."""

    def initial_memory(self) -> Any: ...

    def encode(self, frame: FrameInputs, route: RouteAhead | None, memory: Any = None) -> dict[str, np.ndarray]: ...

    def next_memory(self, memory: Any, frame: FrameInputs, computed: ComputedPlan) -> Any: ...


def keeps_memory(encoder: object) -> bool:
    """Whether an encoder carries a memory across frames."""
    return isinstance(encoder, MemoryEncoder)


@dataclass(slots=True)
class _Stream:
    memory: Any
    stamp_s: float


class MemoryStreams:
    """One memory per input stream; thread-safe (a reset may come from a subscription callback)."""

    def __init__(self, initial: Callable[[], Any], max_gap_s: float) -> None:
        self._initial = initial
        self.max_gap_s = max_gap_s
        self._streams: dict[str, _Stream] = {}
        self._pending_reset: str = ""             # why every stream starts over at its next frame
        self._lock = threading.Lock()

    def take(self, stream: str, stamp_s: float, max_gap_s: float | None = None) -> tuple[Any, str]:
        """The memory a frame of `stream` stamped `stamp_s` starts from, and why it was reset ("" when carried on;
        the first frame of a stream is no reset). max_gap_s: this frame's (the node's snapshot); None: max_gap_s."""
        max_gap_s = self.max_gap_s if max_gap_s is None else max_gap_s
        with self._lock:
            reset, self._pending_reset = self._pending_reset, ""
            if reset:
                self._streams.clear()
            last = self._streams.get(stream)
        if last is None:
            return self._initial(), reset
        gap = stamp_s - last.stamp_s
        if not math.isfinite(gap) or gap < 0 or gap > max_gap_s:
            return self._initial(), (f"memory started afresh: the frame at {stamp_s:.3f} s is {gap:+.3f} s from the "
                                     f"previous one of its stream (beyond 0 .. memory.max_gap_s={max_gap_s:g})")
        return last.memory, ""

    def store(self, stream: str, memory: Any, stamp_s: float) -> None:
        """Keep the memory a frame left, for the next frame of its stream."""
        with self._lock:
            self._streams[stream] = _Stream(memory, stamp_s)

    def reset(self, reason: str) -> None:
        """Start every stream afresh at its next frame (an odometry reset, deactivation, a new drive or bag)."""
        with self._lock:
            self._pending_reset = reason or "memory reset"
