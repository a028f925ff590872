"""The eager torch reference: the demo VLA's own modules, run layer by layer on the CPU.

Every other backend is tested against this one. It loads the fp16 weights the export copied next to
the ONNX files (listed and hashed in the manifest) and runs them in fp32.
"""
from __future__ import annotations

import numpy as np
import torch

from deead_ros.engines.inputs import FrameInputs, encode
from deead_ros.engines.manifest import Manifest
from deead_ros.engines.protocol import check_layer_range
from deead_ros.errors import ConfigError, ModelFileError
from deead_ros.model.weights import load_pretrained


class TorchEngine:
    """LayerChain over DeeadVLA; the state is the (1, S, D) hidden tensor itself (never reused)."""

    backend = "torch"

    def __init__(self, manifest: Manifest, *, num_threads: int = 1, precision: str = "fp32") -> None:
        if precision != "fp32":
            raise ConfigError(f"precision='{precision}': the torch reference runs fp32 only on the CPU")
        pretrained = load_pretrained(manifest.weights.path)
        if pretrained.inputs != manifest.inputs or pretrained.model.cfg.n_layer != manifest.num_layers:
            raise ModelFileError(f"{manifest.config.path} does not match {manifest.path} (input encoding or layer "
                                 f"count); re-run `{manifest.export_command}`")
        torch.set_num_threads(num_threads)      # process-wide in torch: the caller asked for this count
        self.model = pretrained.model
        self.manifest = manifest
        self.num_layers = manifest.num_layers
        self.precision = precision

    @torch.inference_mode()
    def prepare(self, frame: FrameInputs) -> torch.Tensor:
        inputs = {k: torch.from_numpy(v) for k, v in encode(frame, self.manifest.inputs).items()}
        return self.model.stem(**inputs)                       # (1, S, D)

    @torch.inference_mode()
    def run_layers(self, state: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        check_layer_range(start, stop, self.num_layers)
        for block in self.model.blocks[start:stop]:
            state = block(state)
        return state

    @torch.inference_mode()
    def head(self, state: torch.Tensor) -> np.ndarray:
        return self.model.trajectory_at(state)[0].numpy().astype(np.float32, copy=True)   # (T, 2)

    def close(self) -> None:
        """Nothing to release: the model is garbage-collected with the engine."""
