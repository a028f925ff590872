"""manifest.json: what deead_export wrote, and the check that it is still what is on disk.

Every engine file is listed with its sha256 and size, so a missing, truncated or edited file is
caught at start-up with the file's name and the command that rewrites it, not as a wrong trajectory.
numpy/json only.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deead_ros.engines.inputs import InputSpec
from deead_ros.errors import ModelFileError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
HIDDEN_IN, HIDDEN_OUT, TRAJECTORY = "hidden_in", "hidden_out", "trajectory"   # tensor names of layer/head graphs


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str                   # numpy name: float32, int32, ...


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of the export: an ONNX graph, or the torch reference's weights/config."""

    role: str                    # stem | layer_00 .. | head | fused | weights | config
    path: Path                   # absolute
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path                   # manifest.json itself
    model_version: str
    num_layers: int
    horizon: int                 # T waypoints
    dt_s: float
    opset: int
    inputs: InputSpec            # how frames are encoded for the stem
    stem: ModelFile
    layers: tuple[ModelFile, ...]
    head: ModelFile
    fused: ModelFile | None      # all layers in one graph (benchmark baseline)
    weights: ModelFile           # fp16 safetensors for the torch reference backend
    config: ModelFile            # its config.json
    export_command: str          # re-creates this directory

    @property
    def engine_files(self) -> tuple[ModelFile, ...]:
        """The files a layer chain runs, in order: stem, layers, head."""
        return (self.stem, *self.layers, self.head)


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest.")
    with os.fdopen(fd, "w") as f:
        json.dump({"format": MANIFEST_FORMAT, **data}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def load_manifest(path: str | os.PathLike, *, verify: bool = True) -> Manifest:
    """Read manifest.json (or the directory holding it) and, by default, check every file it lists.

    Raises:
        ModelFileError: the manifest or a listed file is missing, unreadable, truncated or modified;
            the message names the file and the command that re-creates it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise ModelFileError(f"engine manifest {path} is missing; export the model first: "
                             "`deead_export --weights models/demo/vla.safetensors --out build/models/demo`")
    try:
        data = json.loads(path.read_text())
        manifest = _parse(data, path)
    except (ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"engine manifest {path} is unreadable or from another version ({err}); "
                             "re-run deead_export to rewrite it") from err
    exported = {t.name: tuple(t.shape) for t in manifest.stem.inputs}
    encoded = manifest.inputs.stem_shapes()
    if exported != encoded:
        raise ModelFileError(f"engine manifest {path}: the model takes {exported} but this version of deead_ros "
                             f"encodes frames as {encoded}; the model was exported for another input encoding: "
                             "use weights trained for this version (models/demo) and re-run deead_export")
    if verify:
        for record in (*manifest.engine_files, manifest.weights, manifest.config,
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


def _parse(data: dict[str, Any], path: Path) -> Manifest:
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"format {data.get('format')!r}, this code reads format {MANIFEST_FORMAT}")
    files = data["files"]

    def record(role: str, entry: dict[str, Any]) -> ModelFile:
        specs = [tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in entry[k])
                 for k in ("inputs", "outputs")]
        return ModelFile(role, (path.parent / entry["path"]).resolve(), entry["sha256"], int(entry["bytes"]), *specs)

    layers = tuple(record(f"layer_{i:02d}", e) for i, e in enumerate(files["layers"]))
    if len(layers) != data["num_layers"]:
        raise ValueError(f"{len(layers)} layer files for num_layers={data['num_layers']}")
    return Manifest(
        path=path, model_version=data["model_version"], num_layers=int(data["num_layers"]),
        horizon=int(data["horizon"]), dt_s=float(data["dt_s"]), opset=int(data["opset"]),
        inputs=InputSpec.from_dict(data["inputs"]), stem=record("stem", files["stem"]), layers=layers,
        head=record("head", files["head"]), fused=record("fused", files["fused"]) if files.get("fused") else None,
        weights=record("weights", files["weights"]), config=record("config", files["config"]),
        export_command=data["export_command"])
