"""The one way the engine tests build a chain's inputs: sample frames, the stem's named tensors, the head per layer.

Shared by the CPU parity tests (test/unit/test_engines_parity.py, every commit) and the GPU tests
(test/gpu, only where a GPU is), so that a change to the encoders or the engines' interface breaks the
GPU tests' input building on the CPU too, where it is seen; `make lint` type-checks both against it.
"""
from __future__ import annotations

import numpy as np

from deead_ros.engines import LayerChain, Manifest
from deead_ros.exit import PriorSettings
from deead_ros.model.encoding import FrameInputs, load_encoder


def parity_frames() -> list[FrameInputs]:
    """Three frames that differ in every input: image size, a curved route or none, speed, yaw rate, command."""
    rng = np.random.default_rng(7)
    curve = np.stack([np.linspace(0, 60, 40), 0.004 * np.linspace(0, 60, 40) ** 2], axis=1)
    return [FrameInputs(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8), curve, 8.0, 0.1,
                        "turn left at the junction"),
            FrameInputs(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), None, 0.0, 0.0, ""),
            FrameInputs(rng.integers(0, 256, (50, 90, 3), dtype=np.uint8), curve[::-1], 3.0, -0.2,
                        "change lane to the right")]


def stem_feed(manifest: Manifest, frame: FrameInputs) -> dict[str, np.ndarray]:
    """The stem's named inputs, as the Runner makes them: the manifest's encoder on the located route."""
    encoder = load_encoder(manifest.encoder.name, manifest.encoder.config)
    route = PriorSettings().route_ahead(frame.route_ego_m)
    return encoder.encode(frame, None if isinstance(route, str) else route)


def heads_after_each_layer(chain: LayerChain, frame: FrameInputs) -> np.ndarray:
    """The head read at the stem and after every layer, one layer at a time: (L + 1, T, 2) float32, m."""
    state = chain.prepare(stem_feed(chain.manifest, frame))
    out = [chain.head(state)]
    for layer in range(chain.num_layers):
        state = chain.run_layers(state, layer, layer + 1)
        out.append(chain.head(state))
    return np.stack(out)
