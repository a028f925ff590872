"""Multi-hop exit controller: which layers to check, and when to stop (DeeAD, Sec. 3.3).

The controller drives any layer chain that has `run_layers(state, start, stop)` and
`head(state) -> (T, 2)`; it never knows which backend that is. A policy looks at each checkpoint
and says whether to exit there and, if not, how many layers to run before the next look.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Protocol, Sequence, SupportsFloat

import numpy as np

from deead_ros.exit.validation import Validation


class ExitReason(IntEnum):
    """Why a frame stopped where it did (mirrors deead_ros_msgs/ExitDiagnostics REASON_*)."""

    PRIOR_MATCHED = 0
    LAST_LAYER = 1
    NO_PRIOR = 2
    FIXED_LAYER = 3
    PATIENCE = 4
    FULL_POLICY = 5
    ORACLE = 6
    BUDGET = 7


@dataclass(frozen=True, slots=True)
class StrideTable:
    """Layers to skip as a function of how far the head's trajectory is from the prior.

    Run `strides[i]` layers when deviation > `multiples[i]` * delta (first match wins), else
    `strides[-1]`. The paper's table: 8 / 4 / 2 / 1 layers for deviation > 8 / 4 / 2 x delta.
    As one parameter (`exit.stride_table`, see `from_flat`): [8, 8, 4, 4, 2, 2, 1].
    """

    multiples: tuple[float, ...] = (8.0, 4.0, 2.0)
    strides: tuple[int, ...] = (8, 4, 2, 1)

    @classmethod
    def from_flat(cls, values: Sequence[SupportsFloat | str]) -> "StrideTable":
        """Build a table from (multiple, stride) pairs followed by the final stride.

        [8, 8, 4, 4, 2, 2, 1]: 8 layers when deviation > 8 x delta, 4 when > 4 x delta, 2 when
        > 2 x delta, else 1. Raises ValueError, naming `exit.stride_table`, when the values cannot
        form a table (an even count, non-numbers, strides that are not whole numbers); the rules
        between entries are `problem()`'s.
        """
        try:
            flat = tuple(float(v) for v in values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"exit.stride_table must hold numbers (got {values!r})") from err
        if len(flat) % 2 != 1:
            raise ValueError(f"exit.stride_table needs (multiple, stride) pairs and then the final stride, an odd "
                             f"number of entries (got {len(flat)}: {list(flat)}), e.g. {list(_PAPER_TABLE)}")
        strides = flat[1:-1:2] + flat[-1:]
        if not all(math.isfinite(s) and s == int(s) for s in strides):
            raise ValueError(f"exit.stride_table: strides (entries 2, 4, ... and the last) must be whole numbers "
                             f"of layers (got {[_number(s) for s in strides]}), e.g. {list(_PAPER_TABLE)}")
        return cls(flat[0:-1:2], tuple(int(s) for s in strides))

    def flat(self) -> tuple[float, ...]:
        """The table as the `exit.stride_table` parameter: pairs, then the final stride."""
        pairs = [float(v) for pair in zip(self.multiples, self.strides) for v in pair]
        return tuple(pairs + [float(self.strides[-1])]) if self.strides else tuple(pairs)

    def problem(self) -> str | None:
        """Return why this table is invalid, or None when it is usable."""
        if len(self.strides) != len(self.multiples) + 1:
            return (f"exit.stride_table: strides need one more entry than multiples "
                    f"(got {len(self.strides)} strides, {len(self.multiples)} multiples)")
        if any(s < 1 for s in self.strides):
            return f"exit.stride_table: strides must all be >= 1 layer (got {list(self.strides)})"
        if any(a < b for a, b in zip(self.strides, self.strides[1:])):
            return (f"exit.stride_table: strides must not increase (got {list(self.strides)}), "
                    f"e.g. {list(_PAPER_TABLE)}")
        if not all(math.isfinite(m) and m > 0 for m in self.multiples):
            return (f"exit.stride_table: multiples must be finite numbers > 0 "
                    f"(got {[_number(m) for m in self.multiples]})")
        if any(a <= b for a, b in zip(self.multiples, self.multiples[1:])):
            multiples = [_number(m) for m in self.multiples]
            return f"exit.stride_table: multiples must strictly decrease (got {multiples}), e.g. {list(_PAPER_TABLE)}"
        return None

    def stride(self, deviation_m: float, delta_m: float) -> int:
        """Return the layers to run before the next check for this deviation."""
        for multiple, stride in zip(self.multiples, self.strides):
            if deviation_m > multiple * delta_m:
                return stride
        return self.strides[-1]


_PAPER_TABLE = (8, 8, 4, 4, 2, 2, 1)


def _number(value: float) -> float | int:
    """A whole float as an int (for messages: [8, 4, 2] rather than [8.0, 4.0, 2.0])."""
    return int(value) if math.isfinite(value) and value == int(value) else value


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One look through the shared action head."""

    layer: int                   # layers run so far (1-based)
    trajectory_m: np.ndarray     # (T, 2) ego-frame waypoints read at this layer; owned by the trace
    deviation_m: float           # what the policy measured here (m); nan when it measured nothing
    next_stride: int             # layers run before the next check; 0 where the frame stopped
    elapsed_ms: float            # head read + policy decision (+ validation where it was checked)
    refused: str = ""            # the policy would exit here but the trajectory failed validation: why


@dataclass(frozen=True, slots=True)
class Verdict:
    """A policy's answer at one checkpoint."""

    should_exit: bool
    reason: ExitReason           # when not exiting: the reason to report if the frame ends here anyway
    deviation_m: float
    next_layer: int              # where to look next when not exiting (clamped to the last layer)
    text: str = ""


@dataclass(frozen=True, slots=True)
class FrameContext:
    """What a policy may look at for one frame besides the head's trajectory."""

    num_layers: int
    prior_m: np.ndarray | None   # (T, 2) planner prior in the ego frame, None when there is none
    dt_s: float                  # time between waypoints
    ground_truth_m: np.ndarray | None = None   # (T, 2), evaluation only (oracle policy)


class ExitPolicy(Protocol):
    """Decides where to look first, and what to do at each look. Stateless between frames."""

    @property
    def name(self) -> str:
        """The policy's name in diagnostics and reports (a read-only field of the frozen policies)."""
        ...

    @property
    def max_checks(self) -> int:
        """Looks through the head before the last layer; after that many misses the chain runs straight to the
        last layer (the bounded tail). 0: no bound."""
        ...

    def first_check(self, ctx: FrameContext) -> int:
        """Return the first layer (1-based) at which to read the head."""
        ...

    def judge(self, layer: int, trajectory_m: np.ndarray, previous: Checkpoint | None,
              ctx: FrameContext) -> Verdict:
        """Return whether to exit at `layer`, and if not, where to look next."""
        ...


class LayerChainLike(Protocol):
    """The part of an engine chain the controller drives (see deead_ros.engines.protocol)."""

    def run_layers(self, state: Any, start: int, stop: int) -> Any: ...

    def head(self, state: Any) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class ExitTrace:
    """What happened in one frame: the published trajectory and every checkpoint on the way."""

    trajectory_m: np.ndarray                  # (T, 2) from the exit layer
    exit_layer: int
    num_layers: int
    reason: ExitReason
    reason_text: str
    checkpoints: tuple[Checkpoint, ...]
    layers_ms: float                          # time in decoder layers
    checks_ms: float                          # time in head reads and decisions
    policy: str = ""
    validation: Validation | None = None      # the verdict on trajectory_m; None when no validator ran

    @property
    def over_budget(self) -> bool:
        """The frame ran out of its time budget: the trajectory is the deepest one reached, not the policy's."""
        return self.reason == ExitReason.BUDGET

    @property
    def exited_early(self) -> bool:
        return self.exit_layer < self.num_layers

    @property
    def refused_exits(self) -> int:
        """Checkpoints where the policy would have exited but the trajectory failed validation."""
        return sum(1 for c in self.checkpoints if c.refused)

    @property
    def layers_run(self) -> int:
        return self.exit_layer


def clamp_layer(layer: int, num_layers: int) -> int:
    """Clamp a 1-based layer index into [1, num_layers]."""
    return max(1, min(int(layer), num_layers))


def run_with_exit(chain: LayerChainLike, state: Any, policy: ExitPolicy, ctx: FrameContext,
                  validator: Callable[[np.ndarray], Validation] | None = None,
                  deadline_s: float | None = None) -> ExitTrace:
    """Run the chain from the stem's `state`, looking through the head where the policy says.

    Layers after the exit are never computed. The last layer always ends the frame. After the policy's
    `max_checks` looks that did not end the frame, the chain runs straight to the last layer: a frame that
    goes deep pays for a bounded number of looks, not one per layer.

    Args:
        validator: checks a trajectory before the frame may end with it (deead_ros.exit.validation).
            An early exit whose trajectory fails is refused: the checkpoint records why and the
            chain goes on, looking again at the next layer. The last layer's trajectory ends the frame
            whatever its verdict, which the trace carries (the caller replaces a failing one).
        deadline_s: `time.perf_counter()` by which the frame must end (the per-frame budget), or None. The
            layers then run one at a time; when the next one would end after the deadline (at the pace of the
            layers run so far, plus one look through the head), the frame ends with the head read at the deepest
            layer reached, with reason BUDGET and the validator's verdict, as at the last layer.
    """
    n = ctx.num_layers
    layer = 0
    target = clamp_layer(policy.first_check(ctx), n)
    checkpoints: list[Checkpoint] = []
    layers_ms = checks_ms = 0.0
    while True:
        t0 = time.perf_counter()
        if deadline_s is None:
            state = chain.run_layers(state, layer, target)
            layer = target
        else:
            state, layer = _run_within(chain, state, layer, target, deadline_s, layers_ms, checks_ms,
                                       len(checkpoints))
        t1 = time.perf_counter()
        layers_ms += (t1 - t0) * 1e3
        out_of_time = layer < target

        if out_of_time and checkpoints and checkpoints[-1].layer == layer:
            # no layer ran since the last look: its plan is the deepest reached; it ends the frame in its place
            trajectory = checkpoints.pop().trajectory_m
        else:
            trajectory = np.array(chain.head(state), dtype=np.float32, copy=True)
        previous = checkpoints[-1] if checkpoints else None
        verdict = policy.judge(layer, trajectory, previous, ctx)
        if out_of_time and not verdict.should_exit:
            verdict = Verdict(False, ExitReason.BUDGET, verdict.deviation_m, layer,
                              f"out of time: the budget ended the frame at layer {layer} of {n}")
        ends = layer >= n or out_of_time
        check = validator(trajectory) if validator is not None and (verdict.should_exit or ends) else None
        refused = f"{check.code}: {check.reason}" if check is not None and not check.ok and not ends else ""
        stop = (verdict.should_exit and not refused) or ends
        if stop:
            next_layer = layer
        elif refused:                      # the plan here is implausible: look again one layer deeper
            next_layer = layer + 1
        elif 0 < policy.max_checks <= len(checkpoints) + 1:
            next_layer = n                 # the bounded tail: no more looks before the last layer
        else:
            next_layer = clamp_layer(max(verdict.next_layer, layer + 1), n)
        elapsed_ms = (time.perf_counter() - t1) * 1e3
        checks_ms += elapsed_ms
        checkpoints.append(Checkpoint(layer, trajectory, verdict.deviation_m, next_layer - layer, elapsed_ms,
                                      refused))
        if stop:
            text = verdict.text
            refusals = sum(1 for c in checkpoints if c.refused)
            if refusals:
                text += (f"; {refusals} early exit{'s' if refusals > 1 else ''} refused by validation "
                         f"(first at layer {next(c.layer for c in checkpoints if c.refused)})")
            return ExitTrace(trajectory, layer, n, verdict.reason, text, tuple(checkpoints),
                             layers_ms, checks_ms, policy.name, check)
        target = next_layer


def _run_within(chain: LayerChainLike, state: Any, layer: int, target: int, deadline_s: float, layers_ms: float,
                checks_ms: float, checks: int) -> tuple[Any, int]:
    """Run layers `layer`..`target` one at a time while the next one, and a look after it, fits before the deadline.

    The pace is this frame's own: the mean time of its layers and of its looks so far (a look before the first one
    is taken to cost a layer). The frame's first layer always runs: there is no plan before it.
    Returns the state and the layers run so far.
    """
    for next_layer in range(layer + 1, target + 1):
        if layer:
            per_layer_ms = layers_ms / layer
            per_check_ms = checks_ms / checks if checks else per_layer_ms
            if time.perf_counter() + (per_layer_ms + per_check_ms) / 1e3 > deadline_s:
                break
        t0 = time.perf_counter()
        state = chain.run_layers(state, layer, next_layer)
        layers_ms += (time.perf_counter() - t0) * 1e3
        layer = next_layer
    return state, layer


@dataclass
class RecordedChain:
    """A layer chain over the head's trajectories already read after every layer (L, T, 2): replays the
    controller's choices without the model (evaluation, calibration). The state is the layers run so far."""

    per_layer_m: np.ndarray          # (L, T, 2)

    def run_layers(self, state: int, start: int, stop: int) -> int:
        if state != start:                          # run_with_exit always continues from its last state
            raise RuntimeError(f"replay asked to run layers {start}..{stop} from state {state}")
        return stop

    def head(self, state: int) -> np.ndarray:
        trajectory_m: np.ndarray = self.per_layer_m[state - 1]
        return trajectory_m


def checked_layers(trace: ExitTrace) -> Sequence[int]:
    """Layers at which the head was read, in order."""
    return [c.layer for c in trace.checkpoints]
