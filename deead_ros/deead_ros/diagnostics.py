"""What deead_ros_msgs/ExitDiagnostics says about one plan, as plain values.

One mapping from a PlanResult to the message's fields, shared by the node (rclpy messages) and the
evaluation's MCAP recorder (rosbags messages), so the two never describe a plan differently.
"""
from __future__ import annotations

from typing import Any

from deead_ros.runner import PlanResult


def exit_diagnostics_fields(result: PlanResult, delta_m: float, prior_age_s: float, backend: str,
                            model_version: str) -> dict[str, Any]:
    """The message's fields except header and the node's own timings; `checkpoints` as a list of dicts."""
    trace = result.trace
    return {
        "exit_layer": trace.exit_layer, "layers_run": trace.layers_run, "num_layers": trace.num_layers,
        "exited_early": trace.exited_early, "reason": int(trace.reason), "reason_text": trace.reason_text,
        "checkpoints": [{"layer": c.layer, "deviation_m": float(c.deviation_m), "next_stride": c.next_stride,
                         "refused": c.refused} for c in trace.checkpoints],
        "delta_m": float(delta_m), "policy": trace.policy, "over_budget": trace.over_budget,
        "valid": result.is_valid, "fallback": result.fallback, "refused_exits": trace.refused_exits,
        "validation": "" if result.validation.ok else f"{result.validation.code}: {result.validation.reason}",
        "prior_source": result.prior.source, "prior_detail": result.prior.detail,
        "prior_age_s": float(prior_age_s) if result.prior.is_valid else -1.0,
        "stem_ms": float(result.stem_ms), "layers_ms": float(trace.layers_ms), "checks_ms": float(trace.checks_ms),
        "total_ms": float(result.total_ms), "backend": backend, "model_version": model_version,
    }
