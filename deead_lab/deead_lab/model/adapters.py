"""Cut a layered VLA into stem / layer i / head modules that export and run one at a time.

An adapter is all deead_export needs to turn a model into per-layer engines: each part is an
`nn.Module` with static shapes at batch 1, and the parts compose back into the original model:
`head(layer[L-1](... layer[0](stem(*inputs))))` equals the model's own forward pass.

Two adapters ship: `VLAAdapter` for the demo model and `LlamaAdapter` for Hugging Face Llama-style
decoders (the LLM inside ORION is a Vicuna, i.e. a Llama): rotary embeddings and the causal mask
are computed once for the static sequence length and baked into every layer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

import torch
from torch import nn

from deead_ros.model.encoding import EGO_FEATURES
from deead_lab.model.vla import DeeadVLA

if TYPE_CHECKING:                     # transformers takes seconds to import; only the Llama models need it
    from transformers import LlamaForCausalLM


class LayeredAdapter(Protocol):
    """A model split at its layer boundaries. Parts run in eval mode, batch 1, static shapes."""

    num_layers: int

    def stem_inputs(self) -> dict[str, torch.Tensor]:
        """Example stem inputs by name, in the stem's argument order (their values do not matter)."""
        ...

    def stem(self) -> nn.Module:
        """Module: the named stem inputs -> hidden states (1, S, D)."""
        ...

    def layer(self, index: int) -> nn.Module:
        """Module: hidden states (1, S, D) -> hidden states after layer `index` (0-based)."""
        ...

    def head(self) -> nn.Module:
        """Module: hidden states (1, S, D) -> the model's output read at any layer."""
        ...


class LayerRange(nn.Module):
    """Layers [start, stop) of an adapter as one module: a segment, or the fused graph of all layers."""

    def __init__(self, adapter: LayeredAdapter, start: int, stop: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(adapter.layer(i) for i in range(start, stop))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden


class MethodModule(nn.Module):
    """Expose one method of a model as a module's forward (keeps the model's parameters shared)."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(*args)


class DrivingFrameShape(Protocol):
    """What DrivingFrameAdapter reads from the model's `cfg` to make example stem inputs."""

    @property
    def image_hw(self) -> tuple[int, int]: ...

    @property
    def route_points(self) -> int: ...

    @property
    def max_command_tokens(self) -> int: ...


class DrivingFrameAdapter:
    """A VLA fed by the `driving_frame` encoder: `stem(image, route, ego, command_ids)`, a list of layers,
    and a head method read after any layer. The model's `cfg` has the fields of DrivingFrameShape."""

    def __init__(self, model: nn.Module, layers: nn.ModuleList, head_method: str) -> None:
        self.model = model.eval()
        self.num_layers = len(layers)
        self._layers, self._head_method = layers, head_method

    def stem_inputs(self) -> dict[str, torch.Tensor]:
        cfg = cast(DrivingFrameShape, self.model.cfg)      # nn.Module declares no `cfg`: the model's own field
        return {"image": torch.zeros(1, 3, *cfg.image_hw), "route": torch.zeros(1, cfg.route_points, 2),
                "ego": torch.zeros(1, EGO_FEATURES),
                "command_ids": torch.zeros(1, cfg.max_command_tokens, dtype=torch.int32)}

    def stem(self) -> nn.Module:
        return MethodModule(self.model, "stem")

    def layer(self, index: int) -> nn.Module:
        return self._layers[index]

    def head(self) -> nn.Module:
        return MethodModule(self.model, self._head_method)


class VLAAdapter(DrivingFrameAdapter):
    """The demo VLA: stem = DeeadVLA.stem, layer i = blocks[i], head = trajectory_at -> (1, T, 2)."""

    def __init__(self, model: DeeadVLA) -> None:
        super().__init__(model, model.blocks, "trajectory_at")


class LlamaLayer(nn.Module):
    """One LlamaDecoderLayer with its rotary cos/sin and causal mask fixed for seq_len tokens."""

    def __init__(self, layer: nn.Module, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("cos", cos, persistent=False)     # (1, S, head_dim)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("mask", mask, persistent=False)   # (1, 1, S, S) additive: 0 or dtype min
        self.register_buffer("position_ids", torch.arange(cos.shape[1])[None], persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.layer(hidden, attention_mask=self.mask, position_ids=self.position_ids,
                         position_embeddings=(self.cos, self.sin))
        return out[0] if isinstance(out, tuple) else out      # transformers < 5 returns a tuple


class _LlamaHead(nn.Module):
    """Final RMSNorm + LM head on the last token: (1, S, D) -> (1, vocab) logits.

    It stands where a VLA's action head would read the planning token (ORION's sits on the LLM's output).
    """

    def __init__(self, norm: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.norm, self.lm_head = norm, lm_head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden[:, -1]))


class LlamaAdapter:
    """A Hugging Face `LlamaForCausalLM` over a fixed prompt length (ORION-style: the planning query last).

    The model must use eager attention (`attn_implementation="eager"`) so that the mask is an explicit
    additive tensor that exports to ONNX and TensorRT as plain MatMul/Add/Softmax.
    """

    def __init__(self, model: LlamaForCausalLM, seq_len: int) -> None:
        if model.config._attn_implementation != "eager":
            raise ValueError(f"LlamaAdapter needs attn_implementation='eager' (got "
                             f"{model.config._attn_implementation!r}); load the model with that argument")
        self.model = model.eval()
        self.seq_len = seq_len
        self.num_layers = model.config.num_hidden_layers
        inner = model.model
        positions = torch.arange(seq_len)[None]                              # (1, S)
        probe = torch.zeros(1, seq_len, model.config.hidden_size, dtype=inner.embed_tokens.weight.dtype)
        with torch.no_grad():
            self._cos, self._sin = inner.rotary_emb(probe, positions)        # (1, S, head_dim) each
        future = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)      # True above the diagonal
        self._mask = torch.zeros(1, 1, seq_len, seq_len, dtype=probe.dtype).masked_fill(
            future, torch.finfo(probe.dtype).min)

    def stem_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.zeros(1, self.seq_len, dtype=torch.int64)}

    def stem(self) -> nn.Module:
        return self.model.model.embed_tokens

    def layer(self, index: int) -> nn.Module:
        return LlamaLayer(self.model.model.layers[index], self._cos, self._sin, self._mask)

    def head(self) -> nn.Module:
        return _LlamaHead(self.model.model.norm, self.model.lm_head)
