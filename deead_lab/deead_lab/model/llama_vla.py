"""An ORION-shaped VLA: ViT encoder + projector, a Llama (Vicuna) decoder, a planning query, a planning head.

ORION (the VLA DeeAD prunes) feeds a ViT's image tokens through a 2-layer MLP projector into a 32-layer
Vicuna and reads a planning query token with a planning head. This model has the same shape, narrow
enough for one CPU core. Token sequence (default config, S = 82, width D = 128):
    60 image patches | 12 route points | 1 ego state | 8 command words | 1 planning query (last)
then `num_hidden_layers` transformers `LlamaDecoderLayer`s (causal attention, rotary positions) and one
shared planning head that reads the planning token after *any* layer: the decoder's final RMSNorm +
MLP -> raw (T, 2) per-step offsets in units of `waypoint_scale_m`; waypoints in metres are their
cumulative sum times that scale (the manifest's head contract, `head_contract()`), ego frame, x forward,
y left.
The planning query is last, so under the causal mask it is the one token that sees every other token.
Layer boundaries (`stem`, `layers[i]`, `head`) are where export and engines cut it: each `layers[i]`
carries the rotary cos/sin and the causal mask for S tokens, so it maps hidden (B, S, D) -> (B, S, D).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from deead_ros.engines.manifest import HeadContract
from deead_lab.model.adapters import DrivingFrameAdapter, LlamaLayer
from deead_ros.model.encoding import EGO_FEATURES, InputSpec, config_from_dict, config_to_dict

_INPUTS = InputSpec()            # shape fields below default to the default input encoding


@dataclass(frozen=True)
class LlamaVLAConfig:
    image_hw: tuple[int, int] = _INPUTS.image_hw   # (H, W) of the normalised image the stem receives
    patch: int = 16                                # ViT patch conv, kernel = stride = this
    vit_width: int = 128                           # ViT token width
    vit_layers: int = 2                            # pre-norm ViT blocks
    vit_heads: int = 4
    vit_mlp_ratio: int = 4                         # ViT MLP hidden width = vit_mlp_ratio * vit_width
    route_points: int = _INPUTS.route_points       # K route tokens
    max_command_tokens: int = _INPUTS.max_command_tokens   # C command tokens
    vocab_size: int = len(_INPUTS.vocabulary)      # command word ids = the decoder's token vocabulary, <pad>=0
    hidden_size: int = 128                         # decoder width D
    intermediate_size: int = 384                   # decoder SwiGLU MLP width
    num_hidden_layers: int = 32                    # decoder layers (ORION's Vicuna-7B has 32); any can feed the head
    num_attention_heads: int = 4
    num_key_value_heads: int = 4                   # < num_attention_heads: grouped-query attention
    rope_theta: float = 10000.0                    # rotary base (Llama / Vicuna default)
    rms_norm_eps: float = 1e-5                     # Vicuna v1.5's value
    head_hidden: int = 256                         # planning head MLP hidden width
    horizon: int = 6                               # T waypoints
    dt_s: float = 0.5                              # time between waypoints, s
    waypoint_scale_m: float = 5.0                  # one raw head unit = this many metres of per-step offset

    @property
    def image_grid(self) -> tuple[int, int]:
        """(rows, cols) of image patch tokens."""
        h, w = self.image_hw
        assert h % self.patch == 0 and w % self.patch == 0, f"image {self.image_hw} not divisible by patch {self.patch}"
        return h // self.patch, w // self.patch

    @property
    def n_tokens(self) -> int:
        """S: image patches + route points + ego + command words + planning query."""
        rows, cols = self.image_grid
        return rows * cols + self.route_points + 1 + self.max_command_tokens + 1

    def llama_config(self) -> LlamaConfig:
        """The decoder's transformers config: eager attention, so the causal mask is an explicit, exportable Add."""
        return LlamaConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                           intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
                           num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
                           max_position_embeddings=self.n_tokens, rms_norm_eps=self.rms_norm_eps,
                           rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
                           pad_token_id=0, attn_implementation="eager")   # type: ignore[call-arg]  # via **kwargs

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LlamaVLAConfig:
        return config_from_dict(cls, data, "Llama VLA config")


class ViTBlock(nn.Module):
    """Pre-norm ViT block with bidirectional attention: (B, N, W) -> (B, N, W).

    Written out rather than nn.TransformerEncoderLayer: in eval mode under no_grad that takes a fused
    fast path (aten::_transformer_encoder_layer_fwd) which the ONNX exporter cannot translate.
    """

    def __init__(self, cfg: LlamaVLAConfig) -> None:
        super().__init__()
        w = cfg.vit_width
        assert w % cfg.vit_heads == 0, f"vit_width {w} not divisible by vit_heads {cfg.vit_heads}"
        self.width, self.n_head, self.head_dim = w, cfg.vit_heads, w // cfg.vit_heads
        self.ln_1 = nn.LayerNorm(w)
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)
        self.ln_2 = nn.LayerNorm(w)
        self.mlp = nn.Sequential(nn.Linear(w, cfg.vit_mlp_ratio * w), nn.GELU(), nn.Linear(cfg.vit_mlp_ratio * w, w))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape                                               # (B, N, W)
        q, k, v = (t.view(b, n, self.n_head, self.head_dim).transpose(1, 2)
                   for t in self.qkv(x).split(self.width, dim=2))       # 3 x (B, H, N, W/H)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)     # (B, H, N, N)
        y = att.softmax(dim=-1) @ v                                     # (B, H, N, W/H)
        return self.proj(y.transpose(1, 2).reshape(b, n, self.width))   # (B, N, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ViTEncoder(nn.Module):
    """Front camera -> projected patch tokens: patch conv, learned positions, pre-norm blocks, MLP projector."""

    def __init__(self, cfg: LlamaVLAConfig) -> None:
        super().__init__()
        rows, cols = cfg.image_grid
        w = cfg.vit_width
        self.patch = nn.Conv2d(3, w, cfg.patch, stride=cfg.patch)
        self.pos_emb = nn.Parameter(torch.zeros(1, rows * cols, w))
        self.blocks = nn.ModuleList(ViTBlock(cfg) for _ in range(cfg.vit_layers))
        self.ln = nn.LayerNorm(w)
        # LLaVA-1.5 / ORION projector: vision width -> decoder width
        self.projector = nn.Sequential(nn.Linear(w, cfg.hidden_size), nn.GELU(),
                                       nn.Linear(cfg.hidden_size, cfg.hidden_size))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch(image)                        # (B, W, rows, cols)
        x = x.flatten(2).transpose(1, 2) + self.pos_emb   # (B, N, W), N = rows*cols
        for block in self.blocks:
            x = block(x)                             # (B, N, W)
        return self.projector(self.ln(x))            # (B, N, D)


def _causal_mask(n: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive causal mask (1, 1, S, S): 0 where a token may look, dtype min above the diagonal (as Llama)."""
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    return torch.zeros(1, 1, n, n, dtype=dtype).masked_fill(future, torch.finfo(dtype).min)


class LlamaVLA(nn.Module):
    """The ORION-shaped VLA; `layers[i]` are Llama decoder layers with rotary positions and causal mask baked in."""

    def __init__(self, cfg: LlamaVLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        llama = cfg.llama_config()
        d, s = cfg.hidden_size, cfg.n_tokens
        self.vision = ViTEncoder(cfg)
        self.route_proj = nn.Linear(2, d)
        self.ego_proj = nn.Linear(EGO_FEATURES, d)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d, padding_idx=0)   # the decoder's own token embedding
        self.plan_query = nn.Parameter(torch.zeros(1, 1, d))
        positions = torch.arange(s)[None]                                     # (1, S)
        cos, sin = LlamaRotaryEmbedding(llama)(torch.zeros(1, s, d), positions)   # (1, S, head_dim) each
        mask = _causal_mask(s, torch.float32)                                 # (1, 1, S, S)
        self.layers = nn.ModuleList(LlamaLayer(LlamaDecoderLayer(llama, layer_idx=i), cos, sin, mask)
                                    for i in range(cfg.num_hidden_layers))
        self.norm = LlamaRMSNorm(d, eps=cfg.rms_norm_eps)
        self.action_head = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.SiLU(),
                                         nn.Linear(cfg.head_hidden, cfg.horizon * 2))
        self.apply(self._init_weights)
        for name, p in self.named_parameters():      # GPT-2: scale residual projections by depth
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.num_hidden_layers))
        nn.init.normal_(self.plan_query, std=0.02)
        nn.init.normal_(self.vision.pos_emb, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Llama's init (normal 0.02, zero bias, zero pad row); norms keep their unit weights."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            module.weight.data[module.padding_idx].zero_()

    def stem(self, image: torch.Tensor, route: torch.Tensor, ego: torch.Tensor,
             command_ids: torch.Tensor) -> torch.Tensor:
        """Encoded inputs (see deead_ros.model.encoding) -> hidden states (B, S, D)."""
        b = image.shape[0]
        return torch.cat([
            self.vision(image),                      # (B, rows*cols, D)
            self.route_proj(route),                  # (B, K, D)
            self.ego_proj(ego)[:, None],             # (B, 1, D)
            self.embed_tokens(command_ids),          # (B, C, D)
            self.plan_query.expand(b, -1, -1),       # (B, 1, D): the planning query, last
        ], dim=1)                                    # (B, S, D); positions come from rotary embeddings

    def _plan_to_raw(self, plan: torch.Tensor) -> torch.Tensor:
        """Planning-token states (..., D) -> raw per-step offsets (..., T, 2)."""
        return self.action_head(self.norm(plan)).view(*plan.shape[:-1], self.cfg.horizon, 2)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Shared planning head on hidden states (B, S, D) -> raw offsets (B, T, 2), units of waypoint_scale_m."""
        return self._plan_to_raw(hidden[:, -1])

    def forward(self, image: torch.Tensor, route: torch.Tensor, ego: torch.Tensor,
                command_ids: torch.Tensor) -> torch.Tensor:
        """Full depth: raw offsets (B, T, 2)."""
        h = self.stem(image, route, ego, command_ids)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)

    def raw_at_all_layers(self, image: torch.Tensor, route: torch.Tensor, ego: torch.Tensor,
                          command_ids: torch.Tensor) -> torch.Tensor:
        """The head after every layer: (B, L, T, 2); [:, i] is what an exit after layer i+1 sees."""
        h = self.stem(image, route, ego, command_ids)
        plans = []
        for layer in self.layers:
            h = layer(h)
            plans.append(h[:, -1])                   # (B, D)
        return self._plan_to_raw(torch.stack(plans, dim=1))   # (B, L, T, 2)

    def forward_all_layers(self, image: torch.Tensor, route: torch.Tensor, ego: torch.Tensor,
                           command_ids: torch.Tensor) -> torch.Tensor:
        """Waypoints in metres after every layer (B, L, T, 2), through the head contract: what training scores."""
        return self.head_contract().to_metres(self.raw_at_all_layers(image, route, ego, command_ids))

    def head_contract(self) -> HeadContract:
        """The head emits per-step offsets in units of waypoint_scale_m (ORION's planner emits offsets)."""
        return HeadContract(self.cfg.horizon, self.cfg.dt_s, "offsets", self.cfg.waypoint_scale_m)


class LlamaVLAAdapter(DrivingFrameAdapter):
    """LlamaVLA: stem = LlamaVLA.stem, layer i = layers[i], head = LlamaVLA.head -> raw offsets (1, T, 2)."""

    def __init__(self, model: LlamaVLA) -> None:
        super().__init__(model, model.layers, "head")
