"""manifest.json: what deead_export wrote, and the check that it is still what is on disk.

A manifest makes an exported chain self-describing: the graphs (stem, one per layer, the shared
head; optionally the torch reference's exported programs and a fused graph), the encoder that turns a
frame into the stem's inputs (by name, with its configuration), and the head contract (how the head's
raw output becomes waypoints in metres). Every file is listed with its sha256 and size, so a
missing, truncated or edited file is caught at start-up with the file's name and the command that
rewrites it, not as a wrong trajectory. numpy/json only.
"""
from __future__ import annotations

import hashlib
import json
import os
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from deead_ros.errors import ModelFileError
from deead_ros.files import write_atomic

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 2
HIDDEN_IN, HIDDEN_OUT, TRAJECTORY = "hidden_in", "hidden_out", "trajectory"   # tensor names of layer/head graphs
HEAD_FORMS = ("absolute", "offsets")
EGO_FRAME = "ego: x forward, y left, metres (REP 103)"
if TYPE_CHECKING:
    import torch
ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")   # raw head outputs: the engines' numpy, training's torch


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str                   # numpy name: float32, int32, ...


@dataclass(frozen=True, slots=True)
class HeadContract:
    """How the shared head's raw output (1, T, 2) becomes T waypoints in metres in the ego frame.

    form "absolute": waypoint = raw * scale_m; form "offsets": per-step displacements (as ORION's
    planner emits them), waypoint t = scale_m * sum of raw steps up to t. The controller only sees metres.
    """

    horizon: int                 # T waypoints
    dt_s: float                  # time between waypoints; waypoint t lies at (t + 1) * dt_s
    form: str                    # absolute | offsets
    scale_m: float = 1.0         # metres per raw unit
    frame: str = EGO_FRAME

    def problem(self) -> str | None:
        """Why this contract cannot be used, or None."""
        if self.horizon < 1:
            return f"horizon={self.horizon} must be >= 1 waypoint"
        if not (math.isfinite(self.dt_s) and self.dt_s > 0):
            return f"dt_s={self.dt_s} must be a finite time step > 0 s"
        if self.form not in HEAD_FORMS:
            return f"form='{self.form}' is unknown; expected one of {', '.join(HEAD_FORMS)}"
        if not (math.isfinite(self.scale_m) and self.scale_m > 0):
            return f"scale_m={self.scale_m} must be finite and > 0"
        if self.frame != EGO_FRAME:
            return f"frame='{self.frame}'; deead_ros plans in '{EGO_FRAME}'"
        return None

    @property
    def times_s(self) -> np.ndarray:
        """(T,) times of the waypoints after the frame, s."""
        return self.dt_s * np.arange(1, self.horizon + 1)

    def waypoints(self, raw: np.ndarray) -> np.ndarray:
        """Raw head output (1, T, 2) or (T, 2) -> (T, 2) float32 waypoints in metres (a new array)."""
        return self.to_metres(np.asarray(raw, dtype=np.float32).reshape(self.horizon, 2))

    def to_metres(self, raw: ArrayT) -> ArrayT:
        """Raw head outputs (..., T, 2), numpy or torch (training reads every layer at once) -> metres, a new array."""
        steps = raw * self.scale_m
        return steps.cumsum(-2) if self.form == "offsets" else steps

    def to_dict(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "dt_s": self.dt_s, "form": self.form, "scale_m": self.scale_m,
                "frame": self.frame}


MOUNTING_FIELDS = ("x_m", "y_m", "z_m", "roll_rad", "pitch_rad", "yaw_rad")


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One camera a model reads: its name (the node's `cameras` entry), the size its encoder feeds the stem,
    and its nominal mounting (camera body x forward, y left, z up, in the ego frame; the node's
    `camera_mountings` overrides it for a vehicle)."""

    name: str
    image_hw: tuple[int, int]                                  # (H, W) fed to the stem
    mounting: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)   # MOUNTING_FIELDS

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "height": self.image_hw[0], "width": self.image_hw[1],
                "mounting": dict(zip(MOUNTING_FIELDS, self.mounting))}


@dataclass(frozen=True, slots=True)
class SensorContract:
    """What a model reads besides route, odometry and command: its cameras, the IMU, a memory across frames.

    No cameras: the single-camera contract of models exported before it existed (one image on
    ~/input/image at the encoder's size). `memory`: the encoder keeps a state from frame to frame
    (deead_ros.model.memory), so frames of one stream must be planned in order.
    """

    cameras: tuple[CameraSpec, ...] = ()
    imu: bool = False
    memory: bool = False

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def problem(self) -> str | None:
        """Why this contract cannot be used, or None."""
        names = self.camera_names
        if len(set(names)) != len(names):
            return f"cameras {list(names)} repeat a name"
        for camera in self.cameras:
            if not camera.name.isidentifier():
                return f"camera name '{camera.name}' must be a ROS name token (letters, digits, _), e.g. front_left"
            if min(camera.image_hw) < 1 or len(camera.mounting) != len(MOUNTING_FIELDS) or not all(
                    math.isfinite(v) for v in camera.mounting):
                return f"camera '{camera.name}' needs a size >= 1 px and six finite mounting numbers"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"cameras": [c.to_dict() for c in self.cameras], "imu": self.imu, "memory": self.memory}


def parse_sensors(data: Any) -> SensorContract:
    """The manifest's `sensors` field (absent: the single-camera contract); ValueError naming what is wrong."""
    if data is None:
        return SensorContract()
    where = "sensors.cameras[]."
    cameras = tuple(CameraSpec(_get(c, "name", str, where),
                               (_get(c, "height", int, where), _get(c, "width", int, where)),
                               tuple(float(_get(_get(c, "mounting", dict, where), k, (int, float), where + "mounting."))
                                     for k in MOUNTING_FIELDS))
                    for c in _get(data, "cameras", list, "sensors."))
    contract = SensorContract(cameras, bool(_get(data, "imu", bool, "sensors.")),
                              bool(_get(data, "memory", bool, "sensors.")))
    problem = contract.problem()
    if problem:
        raise _FieldError(f"sensors: {problem}")
    return contract


@dataclass(frozen=True, slots=True)
class EncoderRef:
    """The encoder a model's stem expects: a registered name or `package.module:Class`, and its configuration."""

    name: str
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of the export: an ONNX graph, or the torch reference's weights/config."""

    role: str                    # stem | layer_00 .. | head | fused | torch_stem .. | weights | config
    path: Path                   # absolute
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path                   # manifest.json itself
    model_version: str
    arch: str                    # what exported it (informational: engines never branch on it)
    num_layers: int
    opset: int
    encoder: EncoderRef          # how frames become the stem's inputs
    head_contract: HeadContract  # how the head's output becomes metres
    stem: ModelFile
    layers: tuple[ModelFile, ...]
    head: ModelFile
    fused: ModelFile | None      # all layers in one graph (benchmark baseline)
    torch: tuple[ModelFile, ...]  # torch.export programs (stem, layers, head) for the torch backend; () if absent
    extra: tuple[ModelFile, ...]  # other files the export copied (e.g. the trained weights and their config)
    export_command: str          # re-creates this directory
    sensors: SensorContract = SensorContract()   # cameras, IMU, memory (absent in older manifests: one camera)

    @property
    def engine_files(self) -> tuple[ModelFile, ...]:
        """The files a layer chain runs, in order: stem, layers, head."""
        return (self.stem, *self.layers, self.head)

    @property
    def horizon(self) -> int:
        return self.head_contract.horizon

    @property
    def dt_s(self) -> float:
        return self.head_contract.dt_s


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path, root: Path, inputs: tuple[TensorSpec, ...] = (),
                outputs: tuple[TensorSpec, ...] = ()) -> dict[str, Any]:
    """The manifest entry of a file that exists now (path stored relative to the manifest's directory)."""
    return {"path": os.path.relpath(path, root), "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "inputs": [_tensor_dict(t) for t in inputs], "outputs": [_tensor_dict(t) for t in outputs]}


def _tensor_dict(t: TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}


def write_manifest(data: dict[str, Any], path: Path) -> None:
    """Write manifest.json atomically (temp file + rename), so a reader never sees half of it."""
    write_atomic(path, (json.dumps({"format": MANIFEST_FORMAT, **data}, indent=1) + "\n").encode())


def load_manifest(path: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
    """Read manifest.json (or the directory holding it) and, by default, check every file it lists.

    Raises:
        ModelFileError: the manifest or a listed file is missing, unreadable, truncated or modified;
            the message names the file and the command that re-creates it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise ModelFileError(f"engine manifest {path} is missing; export the model first: `make setup` installs "
                             "the demo model; export yours with `deead_export --weights W --out DIR`")
    try:
        data = json.loads(path.read_text())
        manifest = _parse(data, path)
    except json.JSONDecodeError as err:
        raise ModelFileError(f"engine manifest {path} is not JSON ({err}); re-run deead_export to rewrite it") from err
    except _FieldError as err:
        raise ModelFileError(f"engine manifest {path}: {err}; re-run deead_export to rewrite it, or fix the "
                             "field by hand (README: Bring your own VLA)") from err
    if verify:
        for record in (*manifest.engine_files, *manifest.torch, *manifest.extra,
                       *([manifest.fused] if manifest.fused else [])):
            verify_file(record, manifest)
    return manifest


def verify_file(record: ModelFile, manifest: Manifest) -> None:
    """Raise ModelFileError unless the file has the size and sha256 the manifest lists."""
    fix = f"re-run `{manifest.export_command}`"
    if not record.path.is_file():
        raise ModelFileError(f"{record.role} file {record.path} listed in {manifest.path} is missing; {fix}")
    size = record.path.stat().st_size
    if size != record.size_bytes:
        raise ModelFileError(f"{record.role} file {record.path} is {size} bytes, {manifest.path} says "
                             f"{record.size_bytes} (truncated or replaced); {fix}")
    digest = sha256_file(record.path)
    if digest != record.sha256:
        raise ModelFileError(f"{record.role} file {record.path} was modified after export (sha256 {digest[:12]}, "
                             f"manifest {record.sha256[:12]}); {fix}")


class _FieldError(ValueError):
    """One field of a manifest is missing or wrong: the message names it, what was expected and found."""


def _get(data: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise _FieldError(f"field {where}{key} is missing")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _FieldError(f"field {where}{key} must be {names}, found {value!r}")
    return value


def _parse(data: dict[str, Any], path: Path) -> Manifest:
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise _FieldError(f"field format is {found!r}, this version of deead_ros reads format {MANIFEST_FORMAT}")
    files = _get(data, "files", dict, "")

    def record(role: str, entry: Any, where: str) -> ModelFile:
        specs: list[tuple[TensorSpec, ...]] = [(), ()]
        if isinstance(entry, dict):
            specs = [tuple(TensorSpec(_get(t, "name", str, f"{where}.{k}[]."),
                                      tuple(int(n) for n in _get(t, "shape", list, f"{where}.{k}[].")),
                                      _get(t, "dtype", str, f"{where}.{k}[]."))
                           for t in entry.get(k, ())) for k in ("inputs", "outputs")]
        return ModelFile(role, (path.parent / _get(entry, "path", str, where + ".")).resolve(),
                         _get(entry, "sha256", str, where + "."), int(_get(entry, "bytes", int, where + ".")), *specs)

    num_layers = _get(data, "num_layers", int, "")
    layer_entries = _get(files, "layers", list, "files.")
    if num_layers < 1 or len(layer_entries) != num_layers:
        raise _FieldError(f"field num_layers is {num_layers} but files.layers lists {len(layer_entries)} layer "
                          "graphs; they must agree (>= 1)")
    layers = tuple(record(f"layer_{i:02d}", e, f"files.layers[{i}]") for i, e in enumerate(layer_entries))
    contract_data = _get(data, "head_contract", dict, "")
    contract = HeadContract(
        horizon=_get(contract_data, "horizon", int, "head_contract."),
        dt_s=float(_get(contract_data, "dt_s", (int, float), "head_contract.")),
        form=_get(contract_data, "form", str, "head_contract."),
        scale_m=float(_get(contract_data, "scale_m", (int, float), "head_contract.")),
        frame=_get(contract_data, "frame", str, "head_contract."))
    problem = contract.problem()
    if problem:
        raise _FieldError(f"head_contract: {problem}")
    head = record("head", _get(files, "head", dict, "files."), "files.head")
    if head.outputs and head.outputs[0].shape != (1, contract.horizon, 2):
        raise _FieldError(f"files.head.outputs[0].shape is {list(head.outputs[0].shape)} but head_contract.horizon "
                          f"{contract.horizon} needs [1, {contract.horizon}, 2]")
    encoder = _get(data, "encoder", dict, "")
    torch_entries = files.get("torch") or {}
    torch_files: tuple[ModelFile, ...] = ()
    if torch_entries:
        torch_layers = _get(torch_entries, "layers", list, "files.torch.")
        if len(torch_layers) != num_layers:
            raise _FieldError(f"files.torch.layers lists {len(torch_layers)} programs for num_layers={num_layers}")
        torch_files = (record("torch_stem", _get(torch_entries, "stem", dict, "files.torch."), "files.torch.stem"),
                       *(record(f"torch_layer_{i:02d}", e, f"files.torch.layers[{i}]")
                         for i, e in enumerate(torch_layers)),
                       record("torch_head", _get(torch_entries, "head", dict, "files.torch."), "files.torch.head"))
    return Manifest(
        path=path, model_version=_get(data, "model_version", str, ""), arch=str(data.get("arch", "")),
        num_layers=num_layers, opset=_get(data, "opset", int, ""),
        encoder=EncoderRef(_get(encoder, "name", str, "encoder."), _get(encoder, "config", dict, "encoder.")),
        head_contract=contract, stem=record("stem", _get(files, "stem", dict, "files."), "files.stem"),
        layers=layers, head=head,
        fused=record("fused", files["fused"], "files.fused") if files.get("fused") else None,
        torch=torch_files,
        extra=tuple(record(role, entry, f"files.extra.{role}") for role, entry in (files.get("extra") or {}).items()),
        export_command=_get(data, "export_command", str, ""), sensors=parse_sensors(data.get("sensors")))
