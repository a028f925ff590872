"""Every exit parameter in one frozen value, its validation, and the policy it builds.

The ROS layer fills an ExitSettings from its parameters, asks `problem()` before accepting a
change, and swaps the policy built by `build_policy()` in one reference assignment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from deead_ros.exit.controller import ExitPolicy, StrideTable
from deead_ros.exit.policies import (POLICY_NAMES, AnyOfPolicy, DeeadPolicy, FixedPolicy, FullPolicy,
                                     PatiencePolicy)
from deead_ros.parameters import default


@dataclass(frozen=True, slots=True)
class ExitSettings:
    """Exit controller parameters (names match the ROS parameters under `exit.`)."""

    policy: str = default("exit.policy")                  # deead | full | fixed | patience | deead_or_patience
    delta_m: float = default("exit.delta_m")              # exit when the head is within this of the prior, m
    first_checkpoint: int = default("exit.first_checkpoint")   # first layer read through the head
    min_exit_layer: int = default("exit.min_exit_layer")  # never exit before this layer
    horizon_s: float = default("exit.horizon_s")          # deviation averaged over waypoints within this time, s
    stride_table: tuple[float, ...] = default("exit.stride_table")   # (multiple, stride) pairs + final stride
    max_checks: int = default("exit.max_checks")          # looks before the last layer; 0: no bound
    budget_ms: float = default("exit.budget_ms")          # per-frame planning budget, ms; 0: none
    fixed_exit_layer: int = default("exit.fixed_exit_layer")   # `fixed` policy: static exit layer
    patience_tolerance_m: float = default("exit.patience_tolerance_m")   # `patience`: checkpoints agree within, m
    patience_stride: int = default("exit.patience_stride")     # `patience`: layers between checks

    def with_updates(self, updates: dict[str, Any]) -> "ExitSettings":
        """Return a copy with `updates` applied (keys are field names); lists become tuples."""
        clean: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in updates.items()}
        return replace(self, **clean)

    def problem(self, num_layers: int) -> str | None:
        """Return why these settings cannot drive a model of `num_layers` layers, or None."""
        if self.policy not in POLICY_NAMES:
            return f"exit.policy='{self.policy}' is unknown; use one of {', '.join(POLICY_NAMES)}"
        if not math.isfinite(self.delta_m) or self.delta_m < 0:
            return f"exit.delta_m={self.delta_m} must be a finite number >= 0 (metres)"
        if not math.isfinite(self.horizon_s) or self.horizon_s <= 0:
            return f"exit.horizon_s={self.horizon_s} must be > 0 s"
        if not math.isfinite(self.patience_tolerance_m) or self.patience_tolerance_m < 0:
            return f"exit.patience_tolerance_m={self.patience_tolerance_m} must be >= 0 m"
        layer_settings: tuple[str, ...] = ("first_checkpoint", "min_exit_layer")
        if self.policy == "fixed":
            layer_settings += ("fixed_exit_layer",)
        for name in layer_settings:
            value = getattr(self, name)
            if not 1 <= value <= num_layers:
                return f"exit.{name}={value} is outside the model's layers [1, {num_layers}]"
        if not math.isfinite(self.budget_ms) or self.budget_ms < 0:
            return f"exit.budget_ms={self.budget_ms} must be a finite number >= 0 (ms; 0: no budget)"
        if self.max_checks < 0:
            return f"exit.max_checks={self.max_checks} must be >= 0 (0: no bound)"
        if self.patience_stride < 1:
            return f"exit.patience_stride={self.patience_stride} must be >= 1"
        try:
            return StrideTable.from_flat(self.stride_table).problem()
        except ValueError as err:
            return str(err)

    def build_policy(self) -> ExitPolicy:
        """Return the policy these settings describe (call `problem()` first)."""
        deead = DeeadPolicy(self.delta_m, self.first_checkpoint, self.min_exit_layer, self.horizon_s,
                            StrideTable.from_flat(self.stride_table), self.max_checks)
        patience = PatiencePolicy(self.patience_tolerance_m, self.first_checkpoint, self.patience_stride,
                                  self.min_exit_layer, self.horizon_s)
        policies: dict[str, ExitPolicy] = {
            "deead": deead,
            "full": FullPolicy(),
            "fixed": FixedPolicy(self.fixed_exit_layer),
            "patience": patience,
            "deead_or_patience": AnyOfPolicy((deead, patience), name="deead_or_patience"),
        }
        return policies[self.policy]


def matched_fixed_setting(mean_exit_layer: float) -> str:
    """The fixed exit at matched compute (the paper's Fixed-EE): the layer nearest an early exit's mean depth."""
    return setting_name("fixed", int(round(mean_exit_layer)))


def setting_name(policy: str, value: float | None = None) -> str:
    """How benchmarks, the closed loop and docs/ name a compared setting: the policy, then its delta or layer
    ("full", "patience", "deead_0.25", "fixed_13", "deead_or_patience_2", "oracle_2")."""
    return policy if value is None else f"{policy}_{value:g}"


def parse_setting_name(name: str) -> tuple[str, float | None]:
    """The (policy, delta or layer) of a name made by `setting_name`; (name, None) when it carries no number."""
    policy, _, value = name.rpartition("_")
    try:
        return policy, float(value)
    except ValueError:
        return name, None


def named_settings(name: str, base: ExitSettings) -> ExitSettings:
    """`base` with the policy and the delta or layer that a setting name says.

    Raises ValueError for a name that is not full, patience, deead_<m>, deead_or_patience_<m> or fixed_<layer>.
    """
    policy, value = parse_setting_name(name)
    if policy in ("deead", "deead_or_patience") and value is not None:
        return replace(base, policy=policy, delta_m=value)
    if policy == "fixed" and value is not None and value == int(value):
        return replace(base, policy=policy, fixed_exit_layer=int(value))
    if policy in ("full", "patience") and value is None:
        return replace(base, policy=policy)
    raise ValueError(f"unknown exit setting '{name}': use full, patience, deead_<delta m>, "
                     "deead_or_patience_<delta m> or fixed_<layer>")
