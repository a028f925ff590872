"""The demo VLA: an ORION-shaped driving model small enough for one CPU core.

Token sequence (default config, S = 37, width C = 128):
    15 image patches | 12 route points | 1 ego state | 8 command words | 1 planning query (last)
then n_layer pre-norm transformer blocks (full attention) and one shared action head that reads the
planning token after *any* block: final LayerNorm + MLP -> (T, 2) waypoints in the ego frame, m.
The layer boundaries (`stem`, `blocks[i]`, `trajectory_at`) are where export and engines cut it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deead_ros.engines.manifest import HeadContract
from deead_ros.model.encoding import EGO_FEATURES, InputSpec, config_from_dict, config_to_dict

_INPUTS = InputSpec()            # shape fields below default to the default input encoding


@dataclass(frozen=True)
class VLAConfig:
    image_hw: tuple[int, int] = _INPUTS.image_hw   # (H, W) of the normalised image the stem receives
    stem_channels: tuple[int, ...] = (24, 48, 96)  # one stride-2 3x3 conv stage per entry (here /8)
    patch: int = 4                                 # then a patch conv, kernel = stride = this (here /32)
    route_points: int = _INPUTS.route_points       # K route tokens
    max_command_tokens: int = _INPUTS.max_command_tokens   # C command tokens
    vocab_size: int = len(_INPUTS.vocabulary)      # command word ids, <pad>=0
    n_layer: int = 24                              # transformer blocks; any of them can feed the shared head
    d_model: int = 128                             # token width C
    n_head: int = 4                                # attention heads (d_model / n_head per head)
    mlp_ratio: int = 4                             # MLP hidden width = mlp_ratio * d_model
    horizon: int = 6                               # T waypoints
    dt_s: float = 0.5                              # time between waypoints, s
    waypoint_scale_m: float = 10.0                 # the head's raw outputs are in units of this many metres
    route_scale_m: float = _INPUTS.route_scale_m   # route tokens are route points / this

    @property
    def image_grid(self) -> tuple[int, int]:
        """(rows, cols) of image patch tokens."""
        stride = 2 ** len(self.stem_channels) * self.patch
        h, w = self.image_hw
        assert h % stride == 0 and w % stride == 0, f"image {self.image_hw} not divisible by stem stride {stride}"
        return h // stride, w // stride

    @property
    def n_tokens(self) -> int:
        """S: image patches + route points + ego + command words + planning query."""
        rows, cols = self.image_grid
        return rows * cols + self.route_points + 1 + self.max_command_tokens + 1

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VLAConfig:
        return config_from_dict(cls, data, "model config")


class VisionStem(nn.Module):
    """Front camera -> patch tokens: stride-2 conv stages, then a non-overlapping patch conv."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        widths = (3, *cfg.stem_channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.patch = nn.Conv2d(widths[-1], cfg.d_model, cfg.patch, stride=cfg.patch)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image                                    # (B, 3, H, W)
        for conv in self.convs:
            x = F.gelu(conv(x))                      # (B, c, H/2^i, W/2^i)
        x = self.patch(x)                            # (B, C, rows, cols)
        return x.flatten(2).transpose(1, 2)          # (B, rows*cols, C)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens (bidirectional: the plan may look at everything)."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0, f"d_model {cfg.d_model} not divisible by n_head {cfg.n_head}"
        self.n_head, self.d_model, self.head_dim = cfg.n_head, cfg.d_model, cfg.d_model // cfg.n_head
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, c = x.shape                                               # (B, S, C)
        q, k, v = self.qkv(x).split(self.d_model, dim=2)                # 3 x (B, S, C)
        q, k, v = (t.view(b, s, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, S, c/H)
        att = (q @ k.transpose(-2, -1)) * self.scale                    # (B, H, S, S)
        y = att.softmax(dim=-1) @ v                                     # (B, H, S, c/H)
        return self.proj(y.transpose(1, 2).reshape(b, s, c))            # (B, S, C)


class MLP(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block: (B, S, C) -> (B, S, C). One block = one engine."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class DeeadVLA(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.d_model
        self.vision = VisionStem(cfg)
        self.route_proj = nn.Linear(2, c)
        self.ego_proj = nn.Linear(EGO_FEATURES, c)
        self.command_emb = nn.Embedding(cfg.vocab_size, c, padding_idx=0)
        self.plan_query = nn.Parameter(torch.zeros(1, 1, c))
        # One learned row per position. Every position holds one token type, so this is also the type embedding.
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.n_tokens, c))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(c)
        self.action_head = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, cfg.horizon * 2))
        # Route readout: the shared head also reads the first T route tokens (the route prior's points, see
        # model.encoding.route_tokens) back out of the residual stream, so the head predicts a correction
        # to the route rather than the whole trajectory. Initialised as the inverse of route_proj.
        self.route_readout = nn.Linear(c, 2)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():      # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight") and name.startswith("blocks."):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        nn.init.normal_(self.plan_query, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.route_proj.weight, std=1.0)   # the route dominates its tokens' residual stream at init
        with torch.no_grad():
            inverse = torch.linalg.pinv(self.route_proj.weight)          # (2, C)
            self.route_readout.weight.copy_(inverse)
            self.route_readout.bias.copy_(-inverse @ self.route_proj.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            module.weight.data[module.padding_idx].zero_()

    def stem(self, image: torch.Tensor, route: torch.Tensor, ego: torch.Tensor,
             command_ids: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (see deead_ros.model.encoding) -> hidden states (B, S, C)."""
        b = image.shape[0]
        tokens = torch.cat([
            self.vision(image),                      # (B, rows*cols, C)
            self.route_proj(route),                  # (B, K, C)
            self.ego_proj(ego)[:, None],             # (B, 1, C)
            self.command_emb(command_ids),           # (B, Lc, C)
            self.plan_query.expand(b, -1, -1),       # (B, 1, C): the planning query, last
        ], dim=1)
        return tokens + self.pos_emb                 # (B, S, C); S = cfg.n_tokens

    def _route_slice(self) -> slice:
        first = self.cfg.image_grid[0] * self.cfg.image_grid[1]
        return slice(first, first + self.cfg.horizon)                    # the timed route tokens

    def _to_trajectory(self, plan: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        """Planning-token states (..., C) and timed route-token states (..., T, C) -> waypoints (..., T, 2), m."""
        correction = self.action_head(self.ln_f(plan)) * self.cfg.waypoint_scale_m      # (..., T*2)
        along_route = self.route_readout(route) * self.cfg.route_scale_m                 # (..., T, 2)
        return correction.view(*plan.shape[:-1], self.cfg.horizon, 2) + along_route

    def head_contract(self) -> HeadContract:
        """The head already emits metres: absolute waypoints, scale 1 (the manifest states it)."""
        return HeadContract(self.cfg.horizon, self.cfg.dt_s, "absolute", 1.0)

    def trajectory_at(self, hidden: torch.Tensor) -> torch.Tensor:
        """Shared action head on hidden states (B, S, C) -> (B, T, 2), ego frame, m."""
        return self._to_trajectory(hidden[:, -1], hidden[:, self._route_slice()])

    def forward(self, image: torch.Tensor, route: torch.Tensor, ego: torch.Tensor,
                command_ids: torch.Tensor) -> torch.Tensor:
        """Full depth: (B, T, 2) waypoints."""
        h = self.stem(image, route, ego, command_ids)
        for block in self.blocks:
            h = block(h)
        return self.trajectory_at(h)

    def forward_all_layers(self, image: torch.Tensor, route: torch.Tensor, ego: torch.Tensor,
                           command_ids: torch.Tensor) -> torch.Tensor:
        """The head's trajectory after every block: (B, L, T, 2); [:, i] is what an exit after block i+1 sees."""
        h = self.stem(image, route, ego, command_ids)
        plans, routes = [], []
        for block in self.blocks:
            h = block(h)
            plans.append(h[:, -1])                    # (B, C)
            routes.append(h[:, self._route_slice()])  # (B, T, C)
        return self._to_trajectory(torch.stack(plans, dim=1), torch.stack(routes, dim=1))   # (B, L, T, 2)
