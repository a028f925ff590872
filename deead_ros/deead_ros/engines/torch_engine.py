"""The eager torch reference: the model's own stem, layers and head, run one by one on the CPU in fp32.

It runs the `torch.export` programs that deead_export saved beside the ONNX graphs (listed and hashed
in the manifest), so it needs no model class and works for any exported VLA. Every other backend is
tested against it.
"""
from __future__ import annotations

import numpy as np

from deead_ros.engines.manifest import Manifest
from deead_ros.engines.protocol import check_layer_range
from deead_ros.errors import BackendUnavailableError, ConfigError

try:
    import torch
except ModuleNotFoundError as err:      # an optional backend: a vehicle's runtime runs without torch
    raise BackendUnavailableError(
        "backend 'torch' needs PyTorch, which is not installed here; install it (`pip install torch`, or the "
        "runtime's extra `deead_ros[torch]`) or use engine.backend onnxruntime or tensorrt") from err


class TorchEngine:
    """LayerChain over exported torch programs; the state is the (1, S, D) hidden tensor itself (never reused)."""

    backend = "torch"

    def __init__(self, manifest: Manifest, *, num_threads: int = 1, precision: str = "fp32") -> None:
        if precision != "fp32":
            raise ConfigError(f"precision='{precision}': the torch reference runs fp32 only on the CPU")
        if not manifest.torch:
            raise ConfigError(f"backend 'torch': {manifest.path} lists no torch programs (files.torch); use backend "
                              f"onnxruntime, or re-export with them: `{manifest.export_command}`")
        torch.set_num_threads(num_threads)      # process-wide in torch: the caller asked for this count
        stem, *layers, head = (torch.export.load(str(f.path)).module() for f in manifest.torch)
        self._stem, self._layers, self._head = stem, layers, head
        self.manifest = manifest
        self.num_layers = manifest.num_layers
        self.precision = precision

    @torch.inference_mode()
    def prepare(self, feed: dict[str, np.ndarray]) -> torch.Tensor:
        hidden: torch.Tensor = self._stem(*(torch.from_numpy(feed[t.name]) for t in self.manifest.stem.inputs))
        return hidden                                                                             # (1, S, D)

    @torch.inference_mode()
    def run_layers(self, state: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        check_layer_range(start, stop, self.num_layers)
        for layer in self._layers[start:stop]:
            state = layer(state)
        return state

    @torch.inference_mode()
    def head(self, state: torch.Tensor) -> np.ndarray:
        return self.manifest.head_contract.waypoints(self._head(state).numpy())   # (T, 2) m

    def close(self) -> None:
        """Nothing to release: the programs are garbage-collected with the engine."""
