"""The parameter table: every setting's name, type, default, range and description, defined once.

The ROS node declares its parameters from it (deead_ros.ros.params), the exit and prior settings take
their defaults from it, and the offline evaluation, the benchmarks and the closed loop build their
settings from those, so a default changed here changes everywhere. Standard library only: every
layer may import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Spec:
    """One parameter: name, ROS type, default, description, numeric range, and whether it is live."""

    name: str
    type: str                    # bool | integer | double | string | integer_array | double_array
    default: Any
    doc: str
    range: tuple[float, float] | None = None
    read_only: bool = False


PARAMETERS: tuple[Spec, ...] = (
    # model and backend: restart to change (ecosystem names: Isaac ROS, Autoware)
    Spec("backend", "string", "onnxruntime", "engine backend: torch | onnxruntime | tensorrt",
         read_only=True),
    Spec("model_file_path", "string", "",
         "model manifest.json written by deead_export; empty: the demo model installed by `make setup`",
         read_only=True),
    Spec("engine_cache_dir", "string", "", "TensorRT engine cache; empty: trt_cache/ beside the model manifest",
         read_only=True),
    Spec("precision", "string", "fp32", "engine precision: fp32 | fp16 (fp16: tensorrt only)",
         read_only=True),
    Spec("force_engine_update", "bool", False, "rebuild TensorRT engines at start even if cached",
         read_only=True),
    Spec("num_threads", "integer", 1, "CPU threads per engine (onnxruntime, torch)", (1, 64),
         read_only=True),
    Spec("camera_format", "string", "compressed",
         "camera message type on ~/input/image: raw (sensor_msgs/Image) | compressed (CompressedImage)",
         read_only=True),
    # outputs
    Spec("output.frame_id", "string", "base_link", "frame of the published trajectory (the ego frame)"),
    # exit controller (live)
    Spec("exit.policy", "string", "deead", "deead | full | fixed | patience | deead_or_patience"),
    Spec("exit.delta_m", "double", 2.0, "exit when the head's trajectory is within this of the prior, m",
         (0.0, 20.0)),
    Spec("exit.first_checkpoint", "integer", 10, "first layer read through the head (1-based)",
         (1, 256)),
    Spec("exit.min_exit_layer", "integer", 1, "never exit before this layer", (1, 256)),
    Spec("exit.horizon_s", "double", 2.0, "deviation averaged over waypoints within this time, s",
         (0.1, 10.0)),
    Spec("exit.stride_multiples", "double_array", [8.0, 4.0, 2.0],
         "run exit.strides[i] layers when deviation > multiples[i] x delta (strictly decreasing)"),
    Spec("exit.strides", "integer_array", [8, 4, 2, 1],
         "layers to run before the next check; one more entry than stride_multiples, non-increasing"),
    Spec("exit.fixed_exit_layer", "integer", 18, "exit layer of the `fixed` policy", (1, 256)),
    Spec("exit.patience_tolerance_m", "double", 0.5,
         "`patience`: exit when successive checkpoints agree within this, m", (0.0, 20.0)),
    Spec("exit.patience_stride", "integer", 1, "`patience`: layers between checks", (1, 64)),
    # planner prior (live)
    Spec("prior.source", "string", "route", "route | constant_velocity | external"),
    Spec("prior.min_speed_mps", "double", 1.0, "route resampled at max(ego speed, this), m/s",
         (0.0, 30.0)),
    Spec("prior.max_route_offset_m", "double", 5.0, "a route farther than this from the ego is rejected, m",
         (0.1, 100.0)),
    Spec("prior.fallback_to_constant_velocity", "bool", True,
         "without a usable route, roll out the ego's speed and yaw rate"),
    # input freshness (live)
    Spec("io.max_input_age_s", "double", 1.0,
         "odometry, route and external path older than this (vs the camera stamp) are stale, s", (0.01, 60.0)),
    Spec("io.max_frame_age_s", "double", 0.0,
         "drop camera frames older than this (vs the node clock) before planning; 0 disables, s", (0.0, 60.0)),
    Spec("io.max_future_s", "double", 0.5,
         "drop camera frames stamped further ahead of the node clock than this; 0 disables, s", (0.0, 60.0)),
    # diagnostics (live)
    Spec("diagnostics.period_s", "double", 1.0, "period of /diagnostics, s", (0.1, 60.0), read_only=True),
    Spec("diagnostics.window_s", "double", 10.0, "window of the rates and percentiles, s", (1.0, 600.0),
         read_only=True),
    Spec("diagnostics.latency_deadline_ms", "double", 100.0, "WARN when p95 latency exceeds this, ms",
         (1.0, 10000.0)),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


def default(name: str) -> Any:
    """The table's default of one parameter (a tuple for arrays, so that frozen settings can hold it)."""
    value = SPECS[name].default
    return tuple(value) if isinstance(value, list) else value
