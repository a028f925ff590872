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
    """One parameter: name, ROS type, default, description, numeric range, the values a string may take, and
    whether it is live."""

    name: str
    type: str                    # bool | integer | double | string | integer_array | double_array | string_array
    default: Any
    doc: str
    range: tuple[float, float] | None = None
    read_only: bool = False
    choices: tuple[str, ...] = ()    # a string parameter's allowed values (); the code's names come from here


PARAMETERS: tuple[Spec, ...] = (
    # model and backend: restart to change (ecosystem names: Isaac ROS, Autoware)
    Spec("backend", "string", "onnxruntime", "engine backend", read_only=True,
         choices=("torch", "onnxruntime", "tensorrt")),
    Spec("model_file_path", "string", "",
         "model manifest.json written by deead_export; empty: the demo model installed by `make setup`",
         read_only=True),
    Spec("engine_cache_dir", "string", "", "TensorRT engine cache; empty: trt_cache/ beside the model manifest",
         read_only=True),
    Spec("precision", "string", "fp32",
         "engine precision (fp16: backend tensorrt, or execution_provider tensorrt)", read_only=True,
         choices=("fp32", "fp16")),
    Spec("force_engine_update", "bool", False, "rebuild TensorRT engines at start even if cached",
         read_only=True),
    Spec("num_threads", "integer", 1, "CPU threads per engine (onnxruntime, torch)", (1, 64),
         read_only=True),
    Spec("execution_provider", "string", "cpu",
         "where backend onnxruntime runs (cuda, tensorrt: ONNX Runtime's CUDA or TensorRT execution "
         "provider: needs onnxruntime-gpu and an NVIDIA GPU; the hidden state then stays on the GPU)",
         read_only=True, choices=("cpu", "cuda", "tensorrt")),
    Spec("camera_format", "string", "compressed",
         "camera message type on ~/input/image (and every ~/input/<camera>/image): raw (sensor_msgs/Image) or "
         "compressed (CompressedImage)", read_only=True, choices=("raw", "compressed")),
    # several cameras (ORION's six): one synchronised set per instant, each view with its CameraInfo
    Spec("cameras", "string_array", [],
         "camera names, as the model's manifest declares them (sensors.cameras); each is read from "
         "~/input/<camera>/image and ~/input/<camera>/camera_info; empty: one camera on ~/input/image and "
         "~/input/camera_info", read_only=True),
    Spec("camera_mountings", "double_array", [],
         "each camera's pose on the vehicle, 6 numbers per camera in `cameras` order: x, y, z (m), roll, pitch, "
         "yaw (rad) of the camera body (x forward, y left, z up) in the ego frame (this node does no TF lookup); "
         "empty: the mountings the model's manifest declares", read_only=True),
    Spec("camera_mismatch", "string", "warn",
         "a camera whose aspect ratio differs from the one the model was trained with (its manifest; a size that "
         "differs with the same aspect is scaled, as always): warn (plan it stretched, reported once in the log and "
         "in /diagnostics) or refuse (drop its frames, counted as camera_mismatch)", read_only=True,
         choices=("warn", "refuse")),
    Spec("decode_threads", "integer", 4,
         "threads that decode the views of one camera set in parallel (libjpeg releases the GIL); 1: one after "
         "the other", (1, 16), read_only=True),
    Spec("executor", "string", "events",
         "the ROS executor: events (rclpy.experimental.EventsExecutor, less CPU per callback) or single_threaded "
         "(rclpy's SingleThreadedExecutor)", read_only=True, choices=("events", "single_threaded")),
    Spec("autostart", "bool", True,
         "configure and activate the managed node at start (false: it waits, unconfigured, for lifecycle "
         "transitions: `ros2 lifecycle set /deead_node configure`, then `activate`)", read_only=True),
    # outputs
    Spec("output.frame_id", "string", "base_link", "frame of the published trajectory (the ego frame)"),
    Spec("output.autoware_trajectory", "bool", False,
         "also publish each plan as autoware_planning_msgs/Trajectory on ~/output/autoware_trajectory (Autoware's "
         "planning -> control interface; needs Autoware's autoware_planning_msgs: source its workspace first)",
         read_only=True),
    # exit controller (live)
    Spec("exit.policy", "string", "deead", "the exit rule",
         choices=("deead", "full", "fixed", "patience", "deead_or_patience")),
    Spec("exit.delta_m", "double", 0.25, "exit when the head's trajectory is within this of the prior, m",
         (0.0, 20.0)),
    Spec("exit.first_checkpoint", "integer", 13, "first layer read through the head (1-based)",
         (1, 256)),
    Spec("exit.min_exit_layer", "integer", 1, "never exit before this layer", (1, 256)),
    Spec("exit.horizon_s", "double", 2.0, "deviation averaged over waypoints within this time, s",
         (0.1, 10.0)),
    Spec("exit.stride_table", "double_array", [8.0, 8.0, 4.0, 4.0, 2.0, 2.0, 1.0],
         "multi-hop table: (multiple, stride) pairs, then the final stride: run `stride` layers before the "
         "next check when deviation > multiple x delta (first match), else the final stride; multiples "
         "finite, > 0 and strictly decreasing, strides whole numbers >= 1 and non-increasing"),
    Spec("exit.max_checks", "integer", 2,
         "bounded tail: looks through the head before the last layer; after this many that did not exit, the "
         "chain runs straight to the last layer (late looks rarely exit, and exit worse: docs/results.md); "
         "0: no bound", (0, 256)),
    Spec("exit.budget_ms", "double", 0.0,
         "per-frame planning budget (encoding, stem, layers, looks): when the next layer would end after it, the "
         "frame publishes the deepest plan reached, flagged over_budget in ExitDiagnostics; 0: none, ms",
         (0.0, 10000.0)),
    Spec("exit.fixed_exit_layer", "integer", 18, "exit layer of the `fixed` policy", (1, 256)),
    Spec("exit.patience_tolerance_m", "double", 0.5,
         "`patience`: exit when successive checkpoints agree within this, m", (0.0, 20.0)),
    Spec("exit.patience_stride", "integer", 1, "`patience`: layers between checks", (1, 64)),
    # planner prior (live)
    Spec("prior.source", "string", "route", "what the head's trajectory is compared with",
         choices=("route", "constant_velocity", "external")),
    Spec("prior.min_speed_mps", "double", 1.0, "route resampled at max(ego speed, this), m/s",
         (0.0, 30.0)),
    Spec("prior.max_route_offset_m", "double", 5.0, "a route farther than this from the ego is rejected, m",
         (0.1, 100.0)),
    Spec("prior.fallback_to_constant_velocity", "bool", True,
         "without a usable route, roll out the ego's speed and yaw rate"),
    # input freshness (live)
    Spec("io.max_input_age_s", "double", 1.0,
         "route and external path stamped further than this from the camera stamp are stale (stamp 0: static), s",
         (0.01, 60.0)),
    Spec("io.max_frame_age_s", "double", 0.0,
         "drop camera frames older than this (vs the node clock) before planning; 0 disables, s", (0.0, 60.0)),
    Spec("io.max_future_s", "double", 0.5,
         "drop camera frames stamped further ahead of the node clock than this; 0 disables, s", (0.0, 60.0)),
    Spec("io.camera_sync_tolerance_s", "double", 0.02,
         "several cameras: a set is complete when every camera's image of one instant arrived, stamped within this "
         "of the set's first; an incomplete set is dropped (incomplete_set), never waited for; keep it under half "
         "the camera period, s", (0.0, 1.0)),
    Spec("io.imu_max_gap_s", "double", 0.05,
         "IMU (~/input/imu, optional) is interpolated at the camera stamp between samples at most this far on "
         "each side (or held from one at most this far); further is stale, s", (0.001, 1.0)),
    # the ego state at the camera stamp (live)
    Spec("io.odometry_max_gap_s", "double", 0.25,
         "interpolate the ego state at the camera stamp between odometry samples at most this far on each side, s",
         (0.01, 1.0)),
    Spec("io.odometry_max_extrapolation_s", "double", 0.05,
         "without a sample on one side, roll the nearest one (constant speed and yaw rate) at most this far; "
         "further is stale, s", (0.0, 0.5)),
    Spec("io.odometry_wait_s", "double", 0.1,
         "before planning a frame, wait at most this long for odometry stamped at or after it, and for the "
         "route of its instant when one is due (live and offline plans then use the same messages); "
         "0: never wait, s", (0.0, 1.0)),
    # input plausibility (live): a message outside these is refused with a reason and counted
    Spec("input_limits.max_speed_mps", "double", 100.0,
         "odometry faster than this is refused; also the fastest pose change between two odometry messages "
         "before the history resets (a jump), m/s", (1.0, 1000.0)),
    Spec("input_limits.max_yaw_rate_rps", "double", 4.0, "odometry turning faster than this is refused, rad/s",
         (0.1, 100.0)),
    Spec("input_limits.max_route_points", "integer", 5000,
         "a route or external path with more points is refused (checked before converting it)", (2, 1000000)),
    Spec("input_limits.max_route_distance_m", "double", 100000.0,
         "a route or external path with a point farther than this from the ego is refused, m", (10.0, 10000000.0)),
    Spec("input_limits.max_command_chars", "integer", 200,
         "a longer command is cut to this many characters (counted; the model reads the first words)",
         (1, 1000000)),
    Spec("input_limits.max_image_pixels", "integer", 16777216,
         "a camera frame with more pixels (width x height, read from its header before decoding) is bad input",
         (1024, 67108864)),
    # model memory (live): models that keep a state across frames (manifest sensors.memory)
    Spec("memory.max_gap_s", "double", 0.5,
         "a frame stamped more than this after (or any time before) the previous planned frame starts the model's "
         "memory afresh (a new drive, a jump in time); also reset by an odometry reset, s", (0.01, 60.0)),
    # output validation (live): a plan outside these limits is never published as valid
    Spec("validation.max_speed_mps", "double", 60.0, "fastest segment speed between waypoints, m/s",
         (0.1, 200.0)),
    # Bounds of the physically impossible, above the waypoint noise of a trained model: the demo model's
    # full-depth plans on bags/demo reach 13.8 m/s2 speed-up, 5.5 braking, 9.2 lateral, 0.61 1/m
    # (1.01 1/m once, starting from standstill).
    Spec("validation.max_accel_mps2", "double", 20.0, "largest longitudinal speed-up, m/s2", (0.1, 100.0)),
    Spec("validation.max_decel_mps2", "double", 20.0, "largest longitudinal braking (positive), m/s2",
         (0.1, 100.0)),
    Spec("validation.max_lateral_accel_mps2", "double", 15.0, "largest lateral acceleration v^2 x curvature, m/s2",
         (0.1, 100.0)),
    Spec("validation.max_curvature_1pm", "double", 2.0, "largest curvature (1 / turning radius), 1/m",
         (0.001, 100.0)),
    Spec("validation.min_segment_m", "double", 0.5,
         "curvature is checked only where both segments are longer than this (a standing plan's noise), m",
         (0.01, 10.0)),
    Spec("validation.max_first_point_error_m", "double", 5.0,
         "first waypoint at most this far from the ego's speed x dt straight ahead, m", (0.1, 100.0)),
    Spec("validation.stop_decel_mps2", "double", 3.0,
         "braking of the stopping fallback, m/s2 (at most validation.max_decel_mps2)", (0.1, 20.0)),
    Spec("validation.max_carry_forward_s", "double", 1.0,
         "the last valid plan is carried forward by the ego's motion for at most this long after its "
         "camera stamp, then the fallback is a stop; 0: always stop, s", (0.0, 10.0)),
    # debug output (live): ~/debug/image and ~/debug/markers, drawn only while someone subscribes
    Spec("debug.image_width", "integer", 640,
         "width of ~/debug/image, px (the camera frame as the model saw it, scaled up; the caption needs ~480)",
         (160, 3840)),
    Spec("debug.jpeg_quality", "integer", 80, "JPEG quality of ~/debug/image", (1, 100)),
    Spec("debug.marker_lifetime_s", "double", 0.5,
         "lifetime of ~/debug/markers, so that a stopped node's markers vanish; 0: until replaced, s", (0.0, 60.0)),
    # The camera's mounting: with a CameraInfo on ~/input/camera_info the plan is also projected onto
    # ~/debug/image. Defaults: the demo bag's MetaDrive camera (deead_lab.eval.metadrive_camera).
    Spec("debug.camera_height_m", "double", 1.5,
         "camera's optical centre above the ground (used with a CameraInfo on ~/input/camera_info to project the plan "
         "onto ~/debug/image), m", (0.05, 20.0)),
    Spec("debug.camera_pitch_rad", "double", 0.1244, "camera's downward tilt (0: level, positive: down), rad",
         (-1.5, 1.5)),
    Spec("debug.camera_forward_m", "double", 0.8, "camera's optical centre ahead of the ego origin, m",
         (-20.0, 20.0)),
    # Foxglove WebSocket server (restart to change): the same channels, live in a browser without ROS
    Spec("foxglove.port", "integer", 0,
         "serve the debug image, trajectory, markers (SceneUpdate) and exit diagnostics (JSON) to Foxglove on "
         "ws://foxglove.host:PORT (needs foxglove-sdk); 0: off", (0, 65535), read_only=True),
    Spec("foxglove.host", "string", "127.0.0.1",
         "address the Foxglove server binds to (0.0.0.0: every interface)", read_only=True),
    # diagnostics (live)
    Spec("diagnostics.period_s", "double", 1.0, "period of /diagnostics, s", (0.1, 60.0), read_only=True),
    Spec("diagnostics.window_s", "double", 10.0, "window of the rates and percentiles, s", (1.0, 600.0),
         read_only=True),
    Spec("diagnostics.latency_deadline_ms", "double", 100.0, "WARN when p95 latency exceeds this, ms",
         (1.0, 10000.0)),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


def choices(name: str) -> tuple[str, ...]:
    """The values a string parameter may take (the table's, so the code and the schema name the same ones)."""
    return SPECS[name].choices


def choice_problem(name: str, value: Any) -> str | None:
    """Why value is not one of the parameter's allowed values, or None (also for a parameter without a set)."""
    allowed = SPECS[name].choices
    if not allowed or value in allowed:
        return None
    return f"{name}={value!r} is unknown; one of: {', '.join(allowed)}"


def default(name: str) -> Any:
    """The table's default of one parameter (a tuple for arrays, so that frozen settings can hold it)."""
    value = SPECS[name].default
    return tuple(value) if isinstance(value, list) else value
