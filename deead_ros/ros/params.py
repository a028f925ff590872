"""The node's parameters: one declaration table, typed config values, and atomic validation.

Every row becomes a declared ROS parameter with a descriptor (type, range, description,
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

T = ParameterType


@dataclass(frozen=True, slots=True)
class Spec:
    """One parameter: name, ROS type, default, description, numeric range, and whether it is live."""

    name: str
    type: int
    default: Any
    doc: str
    range: tuple[float, float] | None = None
    read_only: bool = False


PARAMETERS: tuple[Spec, ...] = (
    # model and backend: restart to change (ecosystem names: Isaac ROS, Autoware)
    Spec("backend", T.PARAMETER_STRING, "onnxruntime", "engine backend: torch | onnxruntime | tensorrt",
         read_only=True),
    Spec("model_file_path", T.PARAMETER_STRING, "",
         "model manifest.json written by deead_export; empty: the demo model installed by `make setup`",
         read_only=True),
    Spec("engine_cache_dir", T.PARAMETER_STRING, "", "TensorRT engine cache; empty: trt_cache/ beside the model manifest",
         read_only=True),
    Spec("precision", T.PARAMETER_STRING, "fp32", "engine precision: fp32 | fp16 (fp16: tensorrt only)",
         read_only=True),
    Spec("force_engine_update", T.PARAMETER_BOOL, False, "rebuild TensorRT engines at start even if cached",
         read_only=True),
    Spec("num_threads", T.PARAMETER_INTEGER, 1, "CPU threads per engine (onnxruntime, torch)", (1, 64),
         read_only=True),
    Spec("camera_format", T.PARAMETER_STRING, "compressed",
         "camera message type on ~/input/image: raw (sensor_msgs/Image) | compressed (CompressedImage)",
         read_only=True),
    # outputs
    Spec("output.frame_id", T.PARAMETER_STRING, "base_link", "frame of the published trajectory (the ego frame)"),
    # exit controller (live)
    Spec("exit.policy", T.PARAMETER_STRING, "deead", "deead | full | fixed | patience | deead_or_patience"),
    Spec("exit.delta_m", T.PARAMETER_DOUBLE, 2.0, "exit when the head's trajectory is within this of the prior, m",
         (0.0, 20.0)),
    Spec("exit.first_checkpoint", T.PARAMETER_INTEGER, 10, "first layer read through the head (1-based)",
         (1, 256)),
    Spec("exit.min_exit_layer", T.PARAMETER_INTEGER, 1, "never exit before this layer", (1, 256)),
    Spec("exit.horizon_s", T.PARAMETER_DOUBLE, 2.0, "deviation averaged over waypoints within this time, s",
         (0.1, 10.0)),
    Spec("exit.stride_multiples", T.PARAMETER_DOUBLE_ARRAY, [8.0, 4.0, 2.0],
         "run exit.strides[i] layers when deviation > multiples[i] x delta (strictly decreasing)"),
    Spec("exit.strides", T.PARAMETER_INTEGER_ARRAY, [8, 4, 2, 1],
         "layers to run before the next check; one more entry than stride_multiples, non-increasing"),
    Spec("exit.fixed_exit_layer", T.PARAMETER_INTEGER, 18, "exit layer of the `fixed` policy", (1, 256)),
    Spec("exit.patience_tolerance_m", T.PARAMETER_DOUBLE, 0.5,
         "`patience`: exit when successive checkpoints agree within this, m", (0.0, 20.0)),
    Spec("exit.patience_stride", T.PARAMETER_INTEGER, 1, "`patience`: layers between checks", (1, 64)),
    # planner prior (live)
    Spec("prior.source", T.PARAMETER_STRING, "route", "route | constant_velocity | external"),
    Spec("prior.min_speed_mps", T.PARAMETER_DOUBLE, 1.0, "route resampled at max(ego speed, this), m/s",
         (0.0, 30.0)),
    Spec("prior.max_route_offset_m", T.PARAMETER_DOUBLE, 5.0, "a route farther than this from the ego is rejected, m",
         (0.1, 100.0)),
    Spec("prior.fallback_to_constant_velocity", T.PARAMETER_BOOL, True,
         "without a usable route, roll out the ego's speed and yaw rate"),
    # input freshness (live)
    Spec("io.max_input_age_s", T.PARAMETER_DOUBLE, 1.0,
         "odometry, route and external path older than this (vs the camera stamp) are stale, s", (0.01, 60.0)),
    Spec("io.max_frame_age_s", T.PARAMETER_DOUBLE, 0.0,
         "drop camera frames older than this (vs the node clock) before planning; 0 disables, s", (0.0, 60.0)),
    Spec("io.max_future_s", T.PARAMETER_DOUBLE, 0.5,
         "drop camera frames stamped further ahead of the node clock than this; 0 disables, s", (0.0, 60.0)),
    # diagnostics (live)
    Spec("diagnostics.period_s", T.PARAMETER_DOUBLE, 1.0, "period of /diagnostics, s", (0.1, 60.0), read_only=True),
    Spec("diagnostics.window_s", T.PARAMETER_DOUBLE, 10.0, "window of the rates and percentiles, s", (1.0, 600.0),
         read_only=True),
    Spec("diagnostics.latency_deadline_ms", T.PARAMETER_DOUBLE, 100.0, "WARN when p95 latency exceeds this, ms",
         (1.0, 10000.0)),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True, slots=True)
class IoSettings:
    """Input freshness, output frame, and diagnostics settings."""

    frame_id: str = "base_link"
    max_input_age_s: float = 1.0
    max_frame_age_s: float = 0.0
    max_future_s: float = 0.5
    diagnostics_period_s: float = 1.0
    diagnostics_window_s: float = 10.0
    latency_deadline_ms: float = 100.0


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
        descriptor = ParameterDescriptor(name=spec.name, type=spec.type, description=spec.doc,
                                         read_only=spec.read_only)
        if spec.range is not None and spec.type == T.PARAMETER_DOUBLE:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                                  to_value=float(spec.range[1]))]
        elif spec.range is not None and spec.type == T.PARAMETER_INTEGER:
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
        if spec.type in (T.PARAMETER_DOUBLE_ARRAY, T.PARAMETER_INTEGER_ARRAY):
            value = list(value)
        values[param.name] = value
    return values
