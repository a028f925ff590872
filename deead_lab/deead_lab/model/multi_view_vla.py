"""A multi-view, stateful Llama VLA: ORION's inputs (six cameras with their projections, the IMU, a memory of
its own plans, route, ego, command) on the Llama VLA's decoder. The test model of issue 39; the shipped
single-camera model stays the demo.

Token sequence (default config, S = 117, width D = 128):
    N x P view tokens | K route | ego | imu | M memory | C command words | planning query (last)
Each view goes through the shared ViT (P = (H/patch) x (W/patch) patches); a camera token made from the view's
projection matrix (deead_ros.model.multi_view.projection: intrinsics and mounting) is added to its patches,
so the decoder knows where each view looks. The memory rows are the plans this model published for the
last M frames (the `multi_view` encoder keeps them, made from the exit layer's plan), so the plan of a frame
depends on the frames before it. The decoder, the causal mask and the shared planning head are the Llama
VLA's (deead_lab.model.llama_vla); any layer can feed the head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deead_ros.engines.manifest import CameraSpec, HeadContract
from deead_ros.model.encoding import InputSpec, config_from_dict
from deead_ros.model.multi_view import IMU_FEATURES, MultiViewEncoder, MultiViewSpec
from deead_lab.model.adapters import MethodModule
from deead_lab.model.llama_vla import LlamaVLA, LlamaVLAConfig

ORION_CAMERAS = ("front", "front_left", "front_right", "back", "back_left", "back_right")
# Nominal mountings (x, y, z m; roll, pitch, yaw rad) of a six-camera ring like nuScenes' and Bench2Drive's:
# front and back on the axis, the side cameras turned by 55 and 110 degrees.
ORION_MOUNTINGS = {
    "front": (1.5, 0.0, 1.6, 0.0, 0.0, 0.0), "front_left": (1.3, 0.5, 1.6, 0.0, 0.0, 0.96),
    "front_right": (1.3, -0.5, 1.6, 0.0, 0.0, -0.96), "back": (-1.0, 0.0, 1.6, 0.0, 0.0, 3.14159),
    "back_left": (-0.8, 0.5, 1.6, 0.0, 0.0, 1.92), "back_right": (-0.8, -0.5, 1.6, 0.0, 0.0, -1.92),
}
PROJECTION_FEATURES = 12                 # a (3, 4) projection matrix


@dataclass(frozen=True)
class MultiViewLlamaVLAConfig(LlamaVLAConfig):
    image_hw: tuple[int, int] = (48, 80)           # (H, W) of each view fed to the stem (small: a test model)
    cameras: tuple[str, ...] = ORION_CAMERAS
    imu: bool = True
    memory_frames: int = 4                         # M plans remembered

    @property
    def n_tokens(self) -> int:
        """S: view patches + route + ego + imu + memory + command words + planning query."""
        rows, cols = self.image_grid
        return (len(self.cameras) * rows * cols + self.route_points + 1 + int(self.imu) + self.memory_frames
                + self.max_command_tokens + 1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiViewLlamaVLAConfig:
        config: MultiViewLlamaVLAConfig = config_from_dict(cls, data, "multi-view Llama VLA config")
        return config

    def encoder(self, inputs: InputSpec) -> MultiViewEncoder:
        """The `multi_view` encoder that feeds this model's stem."""
        cameras = tuple(CameraSpec(name, self.image_hw, ORION_MOUNTINGS.get(name, (0.0,) * 6)) for name in self.cameras)
        return MultiViewEncoder(MultiViewSpec(inputs, cameras, self.imu, self.memory_frames, self.horizon))


class MultiViewLlamaVLA(nn.Module):
    """The Llama VLA's ViT, decoder and head, fed by several views, the IMU and a memory (module docstring)."""

    def __init__(self, cfg: MultiViewLlamaVLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.core = LlamaVLA(cfg)                 # ViT, route/ego/command embeddings, decoder layers, head
        self.camera_proj = nn.Linear(PROJECTION_FEATURES, d)
        self.imu_proj = nn.Linear(IMU_FEATURES, d)
        self.memory_proj = nn.Linear(2 * cfg.horizon + 2, d)
        for module in (self.camera_proj, self.imu_proj, self.memory_proj):
            LlamaVLA._init_weights(module)

    @property
    def layers(self) -> nn.ModuleList:
        return self.core.layers

    def stem(self, images: torch.Tensor, projections: torch.Tensor, route: torch.Tensor, ego: torch.Tensor,
             command_ids: torch.Tensor, *sensors: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (deead_ros.model.multi_view; `sensors`: imu, then memory, as the config has them) ->
        hidden states (B, S, D)."""
        core, cfg = self.core, self.cfg
        b, n = images.shape[:2]
        patches = core.vision(images.flatten(0, 1))                          # (B*N, P, D)
        views = patches.view(b, n, patches.shape[1], -1) + self.camera_proj(projections.flatten(2))[:, :, None]
        tokens = [views.flatten(1, 2), core.route_proj(route), core.ego_proj(ego)[:, None]]
        rest = list(sensors)
        if cfg.imu:
            tokens.append(self.imu_proj(rest.pop(0))[:, None])               # (B, 1, D)
        if cfg.memory_frames:
            tokens.append(self.memory_proj(rest.pop(0)))                      # (B, M, D)
        tokens += [core.embed_tokens(command_ids), core.plan_query.expand(b, -1, -1)]
        return torch.cat(tokens, dim=1)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.core.head(hidden)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Full depth: raw offsets (B, T, 2)."""
        hidden = self.stem(*inputs)
        for layer in self.core.layers:
            hidden = layer(hidden)
        return self.core.head(hidden)

    def forward_all_layers(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Waypoints in metres after every layer (B, L, T, 2)."""
        hidden, plans = self.stem(*inputs), []
        for layer in self.core.layers:
            hidden = layer(hidden)
            plans.append(hidden[:, -1])
        return self.head_contract().to_metres(self.core._plan_to_raw(torch.stack(plans, dim=1)))

    def head_contract(self) -> HeadContract:
        return self.core.head_contract()


class MultiViewAdapter:
    """MultiViewLlamaVLA cut for export: its stem's example inputs are what its encoder declares."""

    def __init__(self, model: MultiViewLlamaVLA) -> None:
        self.model = model.eval()
        self.num_layers = len(model.layers)
        self._outputs = model.cfg.encoder(InputSpec(image_hw=model.cfg.image_hw)).outputs()

    def stem_inputs(self) -> dict[str, torch.Tensor]:
        return {t.name: torch.zeros(t.shape, dtype=getattr(torch, t.dtype)) for t in self._outputs}

    def stem(self) -> nn.Module:
        return MethodModule(self.model, "stem")

    def layer(self, index: int) -> nn.Module:
        return self.model.layers[index]

    def head(self) -> nn.Module:
        return MethodModule(self.model, "head")
