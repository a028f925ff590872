"""The one interface every backend implements over named tensors: stem, layers [start, stop), shared head.

The Runner encodes each frame once with the model's encoder (deead_ros.model.encoding) and hands the
stem its named tensors; engines know nothing about frames, routes or models.

The exit controller (deead_ros.exit.controller.run_with_exit) drives any object with this shape;
it never knows which backend it has. Backends satisfy it structurally (no base class).

Buffer ownership: `prepare` and `run_layers` return an opaque state that may live in buffers the
engine reuses (two ping-pong buffers on onnxruntime and TensorRT), so a state is valid only until the
next `prepare`/`run_layers` call on the same engine; engines refuse an older one. `head` returns a
fresh host array that the caller owns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from deead_ros.engines.manifest import Manifest
from deead_ros.parameters import choices

BACKENDS = choices("backend")
PRECISIONS = choices("precision")
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# onnxruntime's execution providers by the `execution_provider` parameter's value, in priority order: what
# the first cannot run falls to the next (the CPU runs the few operators CUDA has no kernel for).
EXECUTION_PROVIDERS: dict[str, tuple[str, ...]] = {"cpu": (CPU,), "cuda": (CUDA, CPU),
                                                   "tensorrt": (TENSORRT, CUDA, CPU)}


class LayerChain(Protocol):
    """A VLA cut into a stem, `num_layers` decoder layers and a shared action head."""

    num_layers: int
    backend: str                 # torch | onnxruntime | tensorrt
    precision: str               # fp32 | fp16
    manifest: Manifest

    def prepare(self, feed: dict[str, np.ndarray]) -> Any:
        """Run the stem on its named inputs (manifest.stem.inputs, batch 1); return the state before layer 0."""
        ...

    def run_layers(self, state: Any, start: int, stop: int) -> Any:
        """Run 0-based layers start .. stop-1 on `state` (after it, `stop` layers have run)."""
        ...

    def head(self, state: Any) -> np.ndarray:
        """Read the shared action head at `state`: (T, 2) float32 waypoints, ego frame, metres (the manifest's
        head contract applied); the caller owns the array."""
        ...

    def close(self) -> None:
        """Release sessions, engines and device memory."""
        ...


def check_layer_range(start: int, stop: int, num_layers: int) -> None:
    """Raise ValueError unless 0 <= start <= stop <= num_layers."""
    if not 0 <= start <= stop <= num_layers:
        raise ValueError(f"layer range [{start}, {stop}) is outside [0, {num_layers}]")


@dataclass(frozen=True, slots=True)
class PingPongState:
    """Which of an engine's two hidden-state buffers holds the current hidden states."""

    slot: int                    # 0 or 1
    generation: int              # the engine's write counter when this state was made


class PingPong:
    """Bookkeeping for two reused hidden buffers: which one is current, and refusing stale states."""

    def __init__(self) -> None:
        self.generation = 0

    def written(self, slot: int) -> PingPongState:
        """Record a write into `slot` and return the state that points at it."""
        self.generation += 1
        return PingPongState(slot, self.generation)

    def check(self, state: Any) -> PingPongState:
        """Return `state` if it is this engine's latest state, else raise ValueError."""
        if not isinstance(state, PingPongState) or state.generation != self.generation:
            raise ValueError("stale or foreign layer state: this engine reuses two hidden buffers, so only the "
                             "state returned by its latest prepare()/run_layers() call is valid")
        return state
