"""The node's parameters: declared from one table, typed config values, validation, and guarded services.

Every row of the table (deead_ros.parameters) becomes a declared ROS parameter with a descriptor
(type, range, description, read-only). Live rows can change on a running node. ROS semantics:
`set_parameters` (what `ros2 param set` and `ros2 param load` use) sets each parameter on its own
and answers one result per parameter; `set_parameters_atomically` applies the whole batch or
nothing. Either way each candidate configuration is validated as a whole before it is accepted.

Start-up values come from parameter files and `-p name:=value`. An integer given for a double
parameter (`-p exit.delta_m:=1`, `stride_table: [8, 8, 4, 4, 2, 2, 1]`) is taken as that double, at
start-up and on a running node alike; any other wrong type or a value outside its range is a
ConfigError naming the parameter, the expected type or range and the value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_service import ParameterService

from deead_ros.engines.manifest import SensorContract
from deead_ros.errors import ConfigError
from deead_ros.exit import ExitSettings, PriorSettings
from deead_ros.exit.validation import ValidationLimits
from deead_ros.frame_assembly import InputSettings
from deead_ros.parameters import PARAMETERS, SPECS, Spec, choice_problem, default
from deead_ros.runner import RunnerSettings

T = ParameterType


# The table's type names -> ROS parameter types.
ROS_TYPES = {"bool": T.PARAMETER_BOOL, "integer": T.PARAMETER_INTEGER, "double": T.PARAMETER_DOUBLE,
             "string": T.PARAMETER_STRING, "integer_array": T.PARAMETER_INTEGER_ARRAY,
             "double_array": T.PARAMETER_DOUBLE_ARRAY, "string_array": T.PARAMETER_STRING_ARRAY}
_TYPE_WORDS = {"bool": "a bool (true/false)", "integer": "an integer", "double": "a double (e.g. 2.0)",
               "string": "a string", "integer_array": "an integer array", "double_array": "a double array",
               "string_array": "a string array"}
_MAX_LAYERS = int((SPECS["exit.first_checkpoint"].range or (1, 256))[1])   # the layer numbers' table bound


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
    camera_sync_tolerance_s: float = default("io.camera_sync_tolerance_s")

    def problem(self) -> str | None:
        """Return why these settings are invalid, or None."""
        if not self.frame_id or any(c.isspace() for c in self.frame_id):
            return (f"output.frame_id='{self.frame_id}' must be a frame name, not empty and without spaces, e.g. "
                    "base_link (the ego frame the trajectory is expressed in)")
        if self.frame_id.startswith("/"):
            return f"output.frame_id='{self.frame_id}' must not start with '/' (tf2 frame ids do not); use " \
                   f"'{self.frame_id.lstrip('/')}'"
        for name, spec_name in _IO_FIELDS_BY_ATTR.items():
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                return f"{spec_name}={value} must be a finite number"
        return None


@dataclass(frozen=True, slots=True)
class DebugSettings:
    """The debug image and markers (drawn only while someone subscribes) and the optional Foxglove server."""

    image_width: int = default("debug.image_width")
    jpeg_quality: int = default("debug.jpeg_quality")
    marker_lifetime_s: float = default("debug.marker_lifetime_s")
    camera_height_m: float = default("debug.camera_height_m")
    camera_pitch_rad: float = default("debug.camera_pitch_rad")
    camera_forward_m: float = default("debug.camera_forward_m")
    foxglove_port: int = default("foxglove.port")
    foxglove_host: str = default("foxglove.host")

    def problem(self) -> str | None:
        """Return why these settings are invalid, or None (the numbers' ranges are the descriptors')."""
        if not self.foxglove_host or any(c.isspace() for c in self.foxglove_host):
            return (f"foxglove.host='{self.foxglove_host}' must be an address without spaces, e.g. 127.0.0.1 "
                    "(this machine only) or 0.0.0.0 (every interface)")
        return None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything the node reads from its parameters, as plain frozen values (no rclpy types): the node's one
    settings snapshot. A parameter change builds a new one and swaps the node's reference; the planning thread
    reads that reference once per frame and passes this frame's settings down (`runner`, `inputs`)."""

    backend: str
    model_file_path: str
    engine_cache_dir: str
    precision: str
    force_engine_update: bool
    num_threads: int
    execution_provider: str
    camera_format: str
    executor: str
    autostart: bool
    exit: ExitSettings
    prior: PriorSettings
    io: IoSettings
    validation: ValidationLimits = field(default_factory=ValidationLimits)
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))   # every parameter, read-only
    debug: DebugSettings = field(default_factory=DebugSettings)
    cameras: tuple[str, ...] = ()                 # () : one camera on ~/input/image
    camera_mountings: tuple[float, ...] = ()      # 6 per camera; (): the manifest's
    decode_threads: int = default("decode_threads")
    memory_max_gap_s: float = default("memory.max_gap_s")
    camera_mismatch: str = default("camera_mismatch")    # warn | refuse (deead_ros.sensor_contract)
    inputs: InputSettings = InputSettings()                # frame assembly's (io.odometry_*, input_limits.*, ...)
    autoware_trajectory: bool = default("output.autoware_trajectory")   # also ~/output/autoware_trajectory

    @property
    def runner(self) -> RunnerSettings:
        """What Runner.plan reads for a frame."""
        return RunnerSettings(self.exit, self.prior, self.validation, self.memory_max_gap_s)

    def problem(self, num_layers: int | None) -> str | None:
        """Return why this configuration cannot run a model of num_layers layers, or None.

        num_layers None (no model loaded yet): the layer numbers are checked against the table's ranges only.
        """
        if len(set(self.cameras)) != len(self.cameras) or not all(c.isidentifier() for c in self.cameras):
            return (f"cameras={list(self.cameras)} must name each camera once, as a ROS name token (letters, digits, "
                    "_), e.g. [front, front_left, front_right, back, back_left, back_right]")
        if self.camera_mountings and len(self.camera_mountings) != 6 * len(self.cameras):
            return (f"camera_mountings has {len(self.camera_mountings)} numbers; it needs 6 per camera (x, y, z, roll, "
                    f"pitch, yaw) for cameras={list(self.cameras)}: {6 * len(self.cameras)}, or none (the manifest's)")
        if not all(math.isfinite(v) for v in self.camera_mountings):
            return f"camera_mountings={list(self.camera_mountings)} must be finite numbers"
        unknown = next(filter(None, (choice_problem(name, value) for name, value in self.values.items()
                                     if name in SPECS)), None)
        if unknown:
            return unknown
        return (self.io.problem() or self.exit.problem(_MAX_LAYERS if num_layers is None else num_layers)
                or self.prior.problem()
                or self.validation.problem() or self.debug.problem())


_SECTION_FIELDS = {
    "exit": {f.name for f in fields(ExitSettings)},
    "prior": {f.name for f in fields(PriorSettings)},
    "validation": {f.name for f in fields(ValidationLimits)},
}
_IO_FIELDS = {
    "output.frame_id": "frame_id", "io.max_input_age_s": "max_input_age_s", "io.max_frame_age_s": "max_frame_age_s",
    "io.max_future_s": "max_future_s",
    "diagnostics.period_s": "diagnostics_period_s", "diagnostics.window_s": "diagnostics_window_s",
    "diagnostics.latency_deadline_ms": "latency_deadline_ms", "io.camera_sync_tolerance_s": "camera_sync_tolerance_s",
}
_IO_FIELDS_BY_ATTR = {attr: name for name, attr in _IO_FIELDS.items()}
_DEBUG_FIELDS = {
    "debug.image_width": "image_width", "debug.jpeg_quality": "jpeg_quality",
    "debug.marker_lifetime_s": "marker_lifetime_s", "debug.camera_height_m": "camera_height_m",
    "debug.camera_pitch_rad": "camera_pitch_rad", "debug.camera_forward_m": "camera_forward_m",
    "foxglove.port": "foxglove_port", "foxglove.host": "foxglove_host",
}


def config_from_values(values: Mapping[str, Any]) -> NodeConfig:
    """Build a NodeConfig from {parameter name: value} (every name in PARAMETERS present)."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_FIELDS}
    for name, value in values.items():
        section, _, key = name.partition(".")
        if section in sections and key in _SECTION_FIELDS[section]:
            sections[section][key] = tuple(value) if isinstance(value, (list, tuple)) else value
    io = IoSettings(**{field: values[name] for name, field in _IO_FIELDS.items()})
    return NodeConfig(values["backend"], values["model_file_path"], values["engine_cache_dir"], values["precision"],
                      values["force_engine_update"], values["num_threads"], values["execution_provider"],
                      values["camera_format"],
                      values["executor"], values["autostart"],
                      ExitSettings(**sections["exit"]), PriorSettings(**sections["prior"]), io,
                      ValidationLimits(**sections["validation"]), MappingProxyType(dict(values)),
                      DebugSettings(**{field: values[name] for name, field in _DEBUG_FIELDS.items()}),
                      tuple(values["cameras"]), tuple(values["camera_mountings"]), values["decode_threads"],
                      values["memory.max_gap_s"], values["camera_mismatch"], InputSettings.from_values(values),
                      values["output.autoware_trajectory"])


def sensor_problem(config: NodeConfig, sensors: SensorContract) -> str | None:
    """Why the `cameras` parameter cannot feed a model of these sensors, or None.

    A model that declares several cameras needs exactly those names in `cameras` (any order); one that
    declares one camera or none (older manifests) also runs on the default single ~/input/image.
    """
    declared = sensors.camera_names
    if not config.cameras:
        if len(declared) > 1:
            return (f"the model reads cameras {list(declared)}; set the parameter cameras: {list(declared)} "
                    "(each then on ~/input/<camera>/image and ~/input/<camera>/camera_info)")
        return None
    if declared and set(config.cameras) != set(declared):
        return f"cameras={list(config.cameras)}, but the model reads cameras {list(declared)}; name those"
    if not declared and len(config.cameras) > 1:
        return (f"cameras={list(config.cameras)}, but the model reads one camera; leave cameras empty (~/input/image) "
                "or name one")
    return None


def mountings_by_camera(config: NodeConfig) -> dict[str, tuple[float, ...]]:
    """{camera: its 6 mounting numbers} from camera_mountings ({}: the manifest's mountings)."""
    values = config.camera_mountings
    return {name: tuple(values[6 * i:6 * i + 6]) for i, name in enumerate(config.cameras)} if values else {}


def descriptor_of(spec: Spec) -> ParameterDescriptor:
    """The ROS descriptor of one table row: type, description, range, read-only."""
    descriptor = ParameterDescriptor(name=spec.name, type=ROS_TYPES[spec.type], description=spec.doc,
                                     read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    elif spec.range is not None and spec.type == "double":
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                              to_value=float(spec.range[1]))]
    elif spec.range is not None and spec.type == "integer":
        descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    return descriptor


def as_declared_type(spec: Spec, value: Any) -> Any:
    """Return value as the row's type: an integer (array) for a double (array) becomes that double.

    Raises TypeError naming the expected type when the value has another type.
    """
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return isinstance(v, float) or is_int(v)

    checks: dict[str, Callable[[Any], bool]] = {
        "bool": lambda v: isinstance(v, bool), "integer": is_int, "double": is_number,
        "string": lambda v: isinstance(v, str),
        "integer_array": lambda v: isinstance(v, (list, tuple)) and all(is_int(x) for x in v),
        "double_array": lambda v: isinstance(v, (list, tuple)) and all(is_number(x) for x in v),
        "string_array": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
    }
    if not checks[spec.type](value):
        raise TypeError(f"expected {_TYPE_WORDS[spec.type]}, got {_describe(value)}")
    if spec.type == "double":
        return float(value)
    if spec.type == "double_array":
        return [float(x) for x in value]
    if spec.type in ("integer_array", "string_array"):
        return list(value)
    return value


def _describe(value: Any) -> str:
    """'the string 'abc'', 'the integer 1', ... for messages."""
    for kind, name in ((bool, "bool"), (int, "integer"), (float, "double"), (str, "string"), (list, "array"),
                       (tuple, "array")):
        if isinstance(value, kind):
            return f"the {name} {value!r}"
    return f"{type(value).__name__} {value!r}"


def _range_problem(spec: Spec, value: Any) -> str | None:
    if spec.range is None or spec.type not in ("integer", "double"):
        return None
    low, high = spec.range
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number in [{low:g}, {high:g}]"
    if not low <= value <= high:
        return f"is outside its range [{low:g}, {high:g}]"
    return None


def _declare(node: Node, spec: Spec) -> Any:
    """Declare one parameter; return its value after overrides. Raises ConfigError for a bad override.

    An empty array default is declared as rclpy types an empty list (a byte array), and a params file's
    `cameras: []` leaves it unset (rcl cannot type an empty list): both read as []. A start-up value
    (`cameras: [front, back]`) brings its own type.
    """
    value = _declare_value(node, spec)
    return [] if value is None and spec.type.endswith("_array") else value


def _declare_value(node: Node, spec: Spec) -> Any:
    try:
        return node.declare_parameter(spec.name, spec.default, descriptor_of(spec)).value
    except (InvalidParameterTypeException, InvalidParameterValueException):
        pass
    # The start-up value (a params file or -p) has another type than the table's, or lies outside the
    # range: read it as given, take an integer for a double, and otherwise say what is wrong.
    given = node.declare_parameter(spec.name, spec.default, ParameterDescriptor(dynamic_typing=True)).value
    node.undeclare_parameter(spec.name)
    try:
        value = as_declared_type(spec, given)
    except TypeError as err:
        raise ConfigError(f"parameter {spec.name}: {err} (from a params file or -p {spec.name}:=...); "
                          f"the default is {spec.default!r}") from None
    problem = _range_problem(spec, value)
    if problem:
        raise ConfigError(f"parameter {spec.name}={value!r} {problem} (from a params file or -p {spec.name}:=...)")
    try:
        return node.declare_parameter(spec.name, value, descriptor_of(spec), ignore_override=True).value
    except ParameterException as err:
        raise ConfigError(f"parameter {spec.name}={value!r} refused: {err}") from None


def declare_all(node: Node) -> dict[str, Any]:
    """Declare every parameter with its descriptor; return {name: value} after overrides.

    Raises ConfigError when a start-up value has the wrong type (an integer for a double is converted)
    or lies outside its range.
    """
    return {spec.name: _declare(node, spec) for spec in PARAMETERS}


_CONVERTIBLE = {("double", Parameter.Type.INTEGER), ("double_array", Parameter.Type.INTEGER_ARRAY)}


def with_declared_types(params: list[Parameter]) -> list[Parameter]:
    """Pre-set callback: an integer (array) sent for a double (array) parameter becomes that double.

    `ros2 param set /deead_node exit.delta_m 1` sends an integer; `ros2 param load` of
    `stride_table: [8, 8, 4, 4, 2, 2, 1]` an integer array. Everything else passes unchanged
    (rclpy then refuses a wrong type with its reason). Never raises.
    """
    converted = []
    for param in params:
        spec = SPECS.get(param.name)
        if spec is not None and (spec.type, param.type_) in _CONVERTIBLE:
            value = as_declared_type(spec, list(param.value) if spec.type == "double_array" else param.value)
            param = Parameter(param.name, Parameter.Type.DOUBLE if spec.type == "double"
                              else Parameter.Type.DOUBLE_ARRAY, value)
        converted.append(param)
    return converted


def candidate_values(current: Mapping[str, Any], changes: list[Parameter]) -> dict[str, Any]:
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


def _refused(reason: str) -> SetParametersResult:
    return SetParametersResult(successful=False, reason=reason)


def parameter_from_msg(msg: Any) -> tuple[Parameter | None, str]:
    """rcl_interfaces/Parameter -> (Parameter, "") or (None, why it is malformed). Never raises."""
    try:
        param = Parameter.from_parameter_msg(msg)
    except (ValueError, TypeError, AttributeError) as err:
        kind = getattr(getattr(msg, "value", None), "type", "?")
        return None, (f"parameter '{getattr(msg, 'name', '?')}' is malformed (value type {kind}: {err}); "
                      "use a rcl_interfaces/ParameterType constant with the matching *_value field")
    if param.type_ == Parameter.Type.NOT_SET:
        return None, f"parameter '{param.name}' has no value (type NOT_SET); deead_node's parameters cannot be unset"
    return param, ""


class GuardedParameterService(ParameterService):
    """rclpy's parameter services, except that no request can raise out of them (and end the node).

    rclpy's own service converts each request parameter with `Parameter.from_parameter_msg`, which
    raises on an unknown type (e.g. 99) inside the executor. Here a malformed parameter is refused
    with a reason: `set_parameters` answers it in its own result (the others are set as usual),
    `set_parameters_atomically` refuses the whole batch. Anything else a callback raises is refused
    (or answered empty) and logged, never propagated.
    """

    def __init__(self, node: Node) -> None:
        self._logger = node.get_logger()
        super().__init__(node)

    def _guarded(self, what: str, call: Callable[[], Any], on_error: Callable[[str], Any]) -> Any:
        try:
            return call()
        except ParameterException as err:
            return on_error(str(err))
        except Exception as err:   # the service boundary: a request must never end the node
            self._logger.error(f"{what} request failed ({type(err).__name__}: {err}); answered with a refusal",
                               throttle_duration_sec=5.0)
            return on_error(f"{type(err).__name__}: {err}")

    def _set(self, what: str, params: list[Parameter]) -> SetParametersResult:
        node = self._get_node()
        undeclared = [p.name for p in params if not node.has_parameter(p.name)]
        if undeclared:
            return _refused(f"parameter(s) {', '.join(repr(n) for n in undeclared)} not declared by "
                            f"{node.get_name()}; `ros2 param list` shows those that are")
        return self._guarded(what, lambda: node.set_parameters_atomically(params), _refused)

    def _set_parameters_callback(self, request: Any, response: Any) -> Any:
        for msg in request.parameters:
            param, reason = parameter_from_msg(msg)
            response.results.append(self._set("set_parameters", [param]) if param is not None else _refused(reason))
        return response

    def _set_parameters_atomically_callback(self, request: Any, response: Any) -> Any:
        params = []
        for msg in request.parameters:
            param, reason = parameter_from_msg(msg)
            if param is None:
                response.result = _refused(f"{reason}; nothing was set")
                return response
            params.append(param)
        response.result = self._set("set_parameters_atomically", params)
        return response

    def _read_only(self, what: str, callback: Callable[[Any, Any], Any], request: Any, response: Any) -> Any:
        return self._guarded(what, lambda: callback(request, response), lambda _reason: type(response)())

    def _describe_parameters_callback(self, request: Any, response: Any) -> Any:
        return self._read_only("describe_parameters", super()._describe_parameters_callback, request, response)

    def _get_parameters_callback(self, request: Any, response: Any) -> Any:
        return self._read_only("get_parameters", super()._get_parameters_callback, request, response)

    def _get_parameter_types_callback(self, request: Any, response: Any) -> Any:
        return self._read_only("get_parameter_types", super()._get_parameter_types_callback, request, response)

    def _list_parameters_callback(self, request: Any, response: Any) -> Any:
        return self._read_only("list_parameters", super()._list_parameters_callback, request, response)
