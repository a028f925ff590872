"""The exit core: controller, policies, planner prior and metrics. Pure numpy (no rclpy, no torch)."""
from deead_ros.exit.controller import (Checkpoint, ExitPolicy, ExitReason, ExitTrace, FrameContext, RecordedChain,
                                       StrideTable, Verdict, run_with_exit)
from deead_ros.exit.policies import (POLICY_NAMES, AnyOfPolicy, DeeadPolicy, FixedPolicy, FullPolicy, OraclePolicy,
                                     PatiencePolicy)
from deead_ros.exit.prior import PRIOR_SOURCES, Prior, PriorSettings, RouteAhead, select_prior
from deead_ros.exit.settings import (ExitSettings, matched_fixed_setting, named_settings, parse_setting_name,
                                     setting_name)

__all__ = [
    "Checkpoint", "ExitPolicy", "ExitReason", "ExitTrace", "FrameContext", "RecordedChain", "StrideTable", "Verdict",
    "run_with_exit", "POLICY_NAMES", "AnyOfPolicy", "DeeadPolicy", "FixedPolicy", "FullPolicy", "OraclePolicy",
    "PatiencePolicy", "PRIOR_SOURCES", "Prior", "PriorSettings", "RouteAhead", "select_prior", "ExitSettings",
    "matched_fixed_setting", "named_settings", "parse_setting_name", "setting_name",
]
