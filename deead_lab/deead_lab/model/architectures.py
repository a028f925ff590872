"""The model architectures this package can build, save, load and export, by the name config.json stores.

A user's own VLA does not need an entry here: it exports through `export_onnx.export_model` with its
own adapter and encoder (README: Bring your own VLA).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from deead_ros.model.encoding import DrivingFrameEncoder, FrameEncoder, InputSpec
from deead_lab.model.adapters import LayeredAdapter, VLAAdapter
from deead_lab.model.llama_vla import LlamaVLA, LlamaVLAAdapter, LlamaVLAConfig
from deead_lab.model.multi_view_vla import MultiViewAdapter, MultiViewLlamaVLA, MultiViewLlamaVLAConfig
from deead_lab.model.vla import DeeadVLA, VLAConfig

VLAModel = DeeadVLA | LlamaVLA | MultiViewLlamaVLA     # a model of a registered architecture


def driving_frame(cfg: Any, inputs: InputSpec) -> FrameEncoder:
    """The single-camera `driving_frame` encoder (the model's config adds nothing to the input spec)."""
    return DrivingFrameEncoder(inputs)


@dataclass(frozen=True)
class Architecture:
    """How to build a model from its config, cut it into exportable parts, and feed its stem."""

    config: Any                                   # frozen config dataclass with from_dict / to_dict
    model: Callable[[Any], VLAModel]              # config -> model (random weights)
    adapter: Callable[[Any], LayeredAdapter]      # model -> stem / layer / head parts
    encoder: Callable[[Any, InputSpec], FrameEncoder] = driving_frame   # (config, input spec) -> its encoder


ARCHITECTURES: dict[str, Architecture] = {
    "deead_vla": Architecture(VLAConfig, DeeadVLA, VLAAdapter),           # the demo model
    "llama_vla": Architecture(LlamaVLAConfig, LlamaVLA, LlamaVLAAdapter),  # ORION-shaped: ViT + Llama decoder
    # ORION's inputs: six cameras with projections, IMU, a memory of its plans (a test model, random weights)
    "llama_vla_multiview": Architecture(MultiViewLlamaVLAConfig, MultiViewLlamaVLA, MultiViewAdapter,
                                        lambda cfg, inputs: cfg.encoder(inputs)),
}
DEFAULT_ARCH = "deead_vla"                        # config.json files written before "arch" existed


def arch_of(model: nn.Module) -> str:
    """The registered name of a model's architecture."""
    for name, arch in ARCHITECTURES.items():
        if type(model) is arch.model:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered architecture ({sorted(ARCHITECTURES)})")
