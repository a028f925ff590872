"""The node's parameters: one declaration table, typed config values, and atomic validation.

Every row of the table (deead_ros.parameters) becomes a declared ROS parameter with a descriptor (type, range, description,
read-only). Live rows can change on a running node: the candidate configuration is validated as
a whole and either replaces the old one in one assignment, or is refused with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter

from deead_ros.exit import ExitSettings, PriorSettings
from deead_ros.parameters import PARAMETERS, SPECS, default

T = ParameterType


# The table's type names -> ROS parameter types.
ROS_TYPES = {"bool": T.PARAMETER_BOOL, "integer": T.PARAMETER_INTEGER, "double": T.PARAMETER_DOUBLE,
             "string": T.PARAMETER_STRING, "integer_array": T.PARAMETER_INTEGER_ARRAY,
             "double_array": T.PARAMETER_DOUBLE_ARRAY}


@dataclass(frozen=True, slots=True)
class IoSettings:
    """Input freshness, output frame, and diagnostics settings."""

    frame_id: str = default("output.frame_id")
    max_input_age_s: float = default("io.max_input_age_s")
    max_frame_age_s: float = default("io.max_frame_age_s")
    max_future_s: float = default("io.max_future_s")
    diagnostics_period_s: float = default("diagnostics.period_s")
    diagnostics_window_s: float = default("diagnostics.window_s")
    latency_deadline_ms: float = default("diagnostics.latency_deadline_ms")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything the node reads from its parameters, as plain values (no rclpy types)."""

    backend: str
    model_file_path: str
    engine_cache_dir: str
    precision: str
    force_engine_update: bool
    num_threads: int
    camera_format: str
    exit: ExitSettings
    prior: PriorSettings
    io: IoSettings

    def problem(self, num_layers: int) -> str | None:
        """Return why this configuration cannot run a model of num_layers layers, or None."""
        return self.exit.problem(num_layers) or self.prior.problem()


_SECTION_FIELDS = {
    "exit": {f.name for f in fields(ExitSettings)},
    "prior": {f.name for f in fields(PriorSettings)},
}
_IO_FIELDS = {
    "output.frame_id": "frame_id", "io.max_input_age_s": "max_input_age_s", "io.max_frame_age_s": "max_frame_age_s",
    "io.max_future_s": "max_future_s",
    "diagnostics.period_s": "diagnostics_period_s", "diagnostics.window_s": "diagnostics_window_s",
    "diagnostics.latency_deadline_ms": "latency_deadline_ms",
}


def config_from_values(values: dict[str, Any]) -> NodeConfig:
    """Build a NodeConfig from {parameter name: value} (every name in PARAMETERS present)."""
    sections: dict[str, dict[str, Any]] = {"exit": {}, "prior": {}}
    for name, value in values.items():
        section, _, key = name.partition(".")
        if section in sections and key in _SECTION_FIELDS[section]:
            sections[section][key] = tuple(value) if isinstance(value, (list, tuple)) else value
    io = IoSettings(**{field: values[name] for name, field in _IO_FIELDS.items()})
    return NodeConfig(values["backend"], values["model_file_path"], values["engine_cache_dir"], values["precision"],
                      values["force_engine_update"], values["num_threads"], values["camera_format"],
                      ExitSettings(**sections["exit"]), PriorSettings(**sections["prior"]), io)


def declare_all(node: Node) -> dict[str, Any]:
    """Declare every parameter with its descriptor; return {name: value} after overrides."""
    for spec in PARAMETERS:
        descriptor = ParameterDescriptor(name=spec.name, type=ROS_TYPES[spec.type], description=spec.doc,
                                         read_only=spec.read_only)
        if spec.range is not None and spec.type == "double":
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                                  to_value=float(spec.range[1]))]
        elif spec.range is not None and spec.type == "integer":
            descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]),
                                                     step=1)]
        node.declare_parameter(spec.name, spec.default, descriptor)
    return {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}


def candidate_values(current: dict[str, Any], changes: list[Parameter]) -> dict[str, Any]:
    """Return the current {name: value} with this batch of parameter changes applied."""
    values = dict(current)
    for param in changes:
        spec = SPECS.get(param.name)
        if spec is None:
            continue                                   # not ours: rclpy's own (e.g. use_sim_time)
        value = param.value
        if spec.type.endswith("_array"):
            value = list(value)
        values[param.name] = value
    return values
