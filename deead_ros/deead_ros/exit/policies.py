"""Exit policies behind one interface: deead, full, fixed, patience, oracle, and their union.

Each policy is a frozen config; per-frame inputs arrive in a FrameContext and the previous
checkpoint, so one policy object serves every frame and can be swapped atomically at run time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deead_ros.exit.controller import Checkpoint, ExitPolicy, ExitReason, FrameContext, StrideTable, Verdict
from deead_ros.exit.metrics import mean_deviation_m, steps_within
from deead_ros.parameters import choices

POLICY_NAMES = choices("exit.policy")


@dataclass(frozen=True, slots=True)
class DeeadPolicy:
    """Exit when the head's trajectory lies within delta of the planner prior (DeeAD).

    Deviation = mean L2 over the waypoints within `horizon_s`. Far from the prior, jump ahead by
    the stride table; without a prior, go straight to the last layer (no early exit without one).
    After `max_checks` looks that missed, the controller runs straight to the last layer (0: no bound).
    """

    delta_m: float = 2.0
    first_checkpoint: int = 13
    min_exit_layer: int = 1
    horizon_s: float = 2.0
    strides: StrideTable = field(default_factory=StrideTable)
    max_checks: int = 0
    name: str = "deead"

    def first_check(self, ctx: FrameContext) -> int:
        if ctx.prior_m is None:
            return ctx.num_layers
        return max(self.first_checkpoint, self.min_exit_layer)

    def judge(self, layer: int, trajectory_m: np.ndarray, previous: Checkpoint | None,
              ctx: FrameContext) -> Verdict:
        if ctx.prior_m is None:
            return Verdict(False, ExitReason.NO_PRIOR, float("nan"), ctx.num_layers,
                           "no valid prior: ran to full depth")
        dev = mean_deviation_m(trajectory_m, ctx.prior_m, steps_within(self.horizon_s, ctx.dt_s, len(trajectory_m)))
        if dev < self.delta_m and layer >= self.min_exit_layer:
            return Verdict(True, ExitReason.PRIOR_MATCHED, dev, layer,
                           f"prior matched: {dev:.2f} m < delta {self.delta_m:.2f} m at layer {layer}")
        return Verdict(False, ExitReason.LAST_LAYER, dev, layer + self.strides.stride(dev, self.delta_m),
                       f"reached the last layer: {dev:.2f} m from the prior (delta {self.delta_m:.2f} m)")


@dataclass(frozen=True, slots=True)
class FullPolicy:
    """Never exit early: the reference and the fallback."""

    max_checks: int = 0                 # no bound on its looks
    name: str = "full"

    def first_check(self, ctx: FrameContext) -> int:
        return ctx.num_layers

    def judge(self, layer: int, trajectory_m: np.ndarray, previous: Checkpoint | None,
              ctx: FrameContext) -> Verdict:
        return Verdict(False, ExitReason.FULL_POLICY, float("nan"), ctx.num_layers, "full policy: full depth")


@dataclass(frozen=True, slots=True)
class FixedPolicy:
    """Always exit at one static layer (the paper's Fixed-EE baseline)."""

    exit_layer: int = 24
    max_checks: int = 0                 # no bound on its looks
    name: str = "fixed"

    def first_check(self, ctx: FrameContext) -> int:
        return self.exit_layer

    def judge(self, layer: int, trajectory_m: np.ndarray, previous: Checkpoint | None,
              ctx: FrameContext) -> Verdict:
        return Verdict(layer < ctx.num_layers, ExitReason.FIXED_LAYER, float("nan"), ctx.num_layers,
                       f"fixed policy: exit at layer {layer}")


@dataclass(frozen=True, slots=True)
class PatiencePolicy:
    """Exit when two successive checkpoints agree within a tolerance (DEED/PABEE-style).

    Confidence-free and prior-free: it measures convergence of the head, not agreement with the
    route, so it can exit where the plan must differ from the route.
    """

    tolerance_m: float = 0.5
    first_checkpoint: int = 13
    stride: int = 1
    min_exit_layer: int = 1
    horizon_s: float = 2.0
    max_checks: int = 0                 # no bound on its looks
    name: str = "patience"

    def first_check(self, ctx: FrameContext) -> int:
        return self.first_checkpoint

    def judge(self, layer: int, trajectory_m: np.ndarray, previous: Checkpoint | None,
              ctx: FrameContext) -> Verdict:
        next_layer = layer + self.stride
        if previous is None:
            return Verdict(False, ExitReason.LAST_LAYER, float("nan"), next_layer, "reached the last layer")
        dev = mean_deviation_m(trajectory_m, previous.trajectory_m,
                               steps_within(self.horizon_s, ctx.dt_s, len(trajectory_m)))
        if dev < self.tolerance_m and layer >= self.min_exit_layer:
            return Verdict(True, ExitReason.PATIENCE, dev, layer,
                           f"patience: layers {previous.layer} and {layer} agree within {dev:.2f} m "
                           f"< {self.tolerance_m:.2f} m")
        return Verdict(False, ExitReason.LAST_LAYER, dev, next_layer,
                       f"reached the last layer: successive checkpoints {dev:.2f} m apart")


@dataclass(frozen=True, slots=True)
class OraclePolicy:
    """Evaluation only: exit at the first layer whose trajectory meets delta against ground truth."""

    delta_m: float = 2.0
    first_checkpoint: int = 1
    horizon_s: float = 2.0
    max_checks: int = 0                 # no bound on its looks
    name: str = "oracle"

    def first_check(self, ctx: FrameContext) -> int:
        return self.first_checkpoint

    def judge(self, layer: int, trajectory_m: np.ndarray, previous: Checkpoint | None,
              ctx: FrameContext) -> Verdict:
        if ctx.ground_truth_m is None:
            raise ValueError("the oracle policy needs ground truth; it exists for offline evaluation only")
        dev = mean_deviation_m(trajectory_m, ctx.ground_truth_m,
                               steps_within(self.horizon_s, ctx.dt_s, len(trajectory_m)))
        if dev < self.delta_m:
            return Verdict(True, ExitReason.ORACLE, dev, layer, f"oracle: {dev:.2f} m from ground truth")
        return Verdict(False, ExitReason.LAST_LAYER, dev, layer + 1, "oracle: never met delta")


@dataclass(frozen=True, slots=True)
class AnyOfPolicy:
    """Exit when any member would exit; look next where the most eager member wants to look."""

    members: tuple[ExitPolicy, ...]
    name: str = "any"

    @property
    def max_checks(self) -> int:
        """Bounded only when every member is: then by the most patient member's bound."""
        bounds = [m.max_checks for m in self.members]
        return 0 if 0 in bounds else max(bounds)

    def first_check(self, ctx: FrameContext) -> int:
        return min(m.first_check(ctx) for m in self.members)

    def judge(self, layer: int, trajectory_m: np.ndarray, previous: Checkpoint | None,
              ctx: FrameContext) -> Verdict:
        verdicts = [m.judge(layer, trajectory_m, previous, ctx) for m in self.members]
        for verdict in verdicts:
            if verdict.should_exit:
                return verdict
        return min(verdicts, key=lambda v: v.next_layer)
