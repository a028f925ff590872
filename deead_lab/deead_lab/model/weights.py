"""Save and load a model of a registered architecture: fp16 safetensors + config.json (architecture, model
config, input encoding, version).

A weights directory holds `vla.safetensors` and `config.json` side by side. Loading maps every key
explicitly and checks every shape, so a file from another config fails with the key that differs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deead_ros.errors import ModelFileError
from deead_ros.files import replacing, write_atomic
from deead_lab.model.architectures import ARCHITECTURES, DEFAULT_ARCH, VLAModel, arch_of
from deead_ros.model.encoding import InputSpec

WEIGHTS_FILE = "vla.safetensors"
CONFIG_FILE = "config.json"
CONFIG_FORMAT = 1
DEFAULT_MODEL_VERSION = "deead-vla-1 (untrained)"


@dataclass(frozen=True)
class Pretrained:
    """A loaded model with what it needs to be fed and named."""

    model: VLAModel               # fp32, eval mode, CPU
    arch: str                     # its name in model.architectures.ARCHITECTURES
    inputs: InputSpec
    model_version: str
    weights_path: Path


def check_compatible(cfg: Any, spec: InputSpec) -> str | None:
    """Return how the model config and the input encoding disagree on shapes, or None."""
    pairs = {"image_hw": (cfg.image_hw, spec.image_hw), "route_points": (cfg.route_points, spec.route_points),
             "max_command_tokens": (cfg.max_command_tokens, spec.max_command_tokens),
             "vocab_size": (cfg.vocab_size, len(spec.vocabulary))}
    bad = [f"{k}: model {a}, inputs {b}" for k, (a, b) in pairs.items() if a != b]
    return "; ".join(bad) or None


def save_pretrained(model: VLAModel, inputs: InputSpec, out_dir: str | os.PathLike,
                    model_version: str = DEFAULT_MODEL_VERSION) -> Path:
    """Write `<out_dir>/vla.safetensors` (fp16) and `<out_dir>/config.json`; return the weights path."""
    problem = check_compatible(model.cfg, inputs)
    assert problem is None, f"model and input encoding disagree: {problem}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {key: t.detach().to(torch.float16).contiguous().cpu() for key, t in model.state_dict().items()}
    config = {"format": CONFIG_FORMAT, "model_version": model_version, "arch": arch_of(model),
              "model": model.cfg.to_dict(),
              "inputs": inputs.to_dict(), "weights_dtype": "float16"}
    weights = out / WEIGHTS_FILE
    with replacing(weights) as tmp:
        save_file(tensors, tmp, metadata={"model_version": model_version})
    write_atomic(out / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return weights


def read_config(config_path: Path) -> tuple[str, Any, InputSpec, str]:
    """Parse config.json -> (architecture, model config, input encoding, model version)."""
    fix = "write it with deead_lab.model.weights.save_pretrained (deead_train does)"
    if not config_path.is_file():
        raise ModelFileError(f"model config {config_path} is missing; it must sit beside the weights; {fix}")
    try:
        data = json.loads(config_path.read_text())
        if data.get("format") != CONFIG_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this code reads format {CONFIG_FORMAT}")
        arch = data.get("arch", DEFAULT_ARCH)
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch '{arch}' is unknown; known: {sorted(ARCHITECTURES)}")
        cfg, spec = ARCHITECTURES[arch].config.from_dict(data["model"]), InputSpec.from_dict(data["inputs"])
        version = str(data["model_version"])
    except (ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"model config {config_path} is invalid ({err}); {fix}") from err
    problem = check_compatible(cfg, spec)
    if problem:
        raise ModelFileError(f"model config {config_path}: model and inputs disagree ({problem}); {fix}")
    return arch, cfg, spec, version


def load_pretrained(path: str | os.PathLike) -> Pretrained:
    """Load a weights directory, or the `.safetensors` file inside one (config.json beside it)."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    arch, cfg, spec, version = read_config(weights.parent / CONFIG_FILE)
    if not weights.is_file():
        raise ModelFileError(f"model weights {weights} are missing; train them with deead_train or point "
                             "--weights at an existing vla.safetensors")
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise ModelFileError(f"model weights {weights} cannot be read ({err}); the file is damaged: "
                             "restore it or re-run deead_train") from err
    model = ARCHITECTURES[arch].model(cfg)
    expected = model.state_dict()     # file keys are the module's own names (nanoGPT style, no prefixes)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"model weights {weights} do not match config.json: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}; use the config.json written with these weights")
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ModelFileError(f"model weights {weights}: {key} has shape {tuple(tensor.shape)}, config.json "
                                 f"implies {tuple(expected[key].shape)}; use the config.json written with these "
                                 "weights")
    model.load_state_dict({key: t.to(torch.float32) for key, t in tensors.items()}, strict=True)
    return Pretrained(model.eval(), arch, spec, version, weights)

