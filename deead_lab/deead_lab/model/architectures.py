"""The model architectures this package can build, save, load and export, by the name config.json stores.

A user's own VLA does not need an entry here: it exports through `export_onnx.export_model` with its
own adapter and encoder (README: Bring your own VLA).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from deead_lab.model.adapters import LayeredAdapter, VLAAdapter
from deead_lab.model.llama_vla import LlamaVLA, LlamaVLAAdapter, LlamaVLAConfig
from deead_lab.model.vla import DeeadVLA, VLAConfig

VLAModel = DeeadVLA | LlamaVLA                    # a model of a registered architecture


@dataclass(frozen=True)
class Architecture:
    """How to build a model from its config and cut it into exportable parts."""

    config: Any                                   # frozen config dataclass with from_dict / to_dict
    model: Callable[[Any], VLAModel]              # config -> model (random weights)
    adapter: Callable[[Any], LayeredAdapter]      # model -> stem / layer / head parts


ARCHITECTURES: dict[str, Architecture] = {
    "deead_vla": Architecture(VLAConfig, DeeadVLA, VLAAdapter),           # the demo model
    "llama_vla": Architecture(LlamaVLAConfig, LlamaVLA, LlamaVLAAdapter),  # ORION-shaped: ViT + Llama decoder
}
DEFAULT_ARCH = "deead_vla"                        # config.json files written before "arch" existed


def arch_of(model: nn.Module) -> str:
    """The registered name of a model's architecture."""
    for name, arch in ARCHITECTURES.items():
        if type(model) is arch.model:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered architecture ({sorted(ARCHITECTURES)})")
