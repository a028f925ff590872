"""Every CPU backend against the torch reference: per layer, for chains with exits, and exit decisions.

The inputs come from test/engine_inputs.py, the helper the GPU tests (test/gpu) use too.
"""
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deead_ros.engines import LayerChain, make_engine
from deead_ros.errors import ConfigError
from deead_ros.exit import DeeadPolicy, FrameContext, StrideTable, run_with_exit
from deead_ros.exit.controller import checked_layers
from deead_lab.model.export_onnx import export_random
from deead_lab.model.llama_vla import LlamaVLAConfig
from deead_lab.model.vla import VLAConfig
from test.engine_inputs import heads_after_each_layer, parity_frames, stem_feed

# waypoint_scale_m=100 makes a random model's waypoints metres long, so that 1e-4 m is a real tolerance
MODELS = {"demo": VLAConfig(n_layer=6, d_model=32, n_head=2, stem_channels=(8, 8, 16), mlp_ratio=2,
                            waypoint_scale_m=100.0),
          "llama": LlamaVLAConfig(num_hidden_layers=6, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                  num_key_value_heads=2, vit_width=32, vit_layers=1, vit_heads=2, head_hidden=32,
                                  waypoint_scale_m=1000.0)}
NUM_LAYERS = 6
TOLERANCE_M = 1e-4
CPU_BACKENDS = ("onnxruntime",)


@pytest.fixture(scope="module", params=sorted(MODELS))
def manifest_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_random(tmp_path_factory.mktemp(f"parity_{request.param}"), MODELS[request.param], seed=3,
                         log=lambda line: None)


@pytest.fixture(scope="module")
def reference(manifest_path: Path) -> Iterator[LayerChain]:
    engine = make_engine("torch", manifest_path)
    yield engine
    engine.close()


@pytest.fixture(scope="module", params=CPU_BACKENDS)
def engine(request: pytest.FixtureRequest, manifest_path: Path) -> Iterator[LayerChain]:
    engine = make_engine(request.param, manifest_path)
    yield engine
    engine.close()


@pytest.mark.parametrize("index", range(3))
def test_head_after_every_layer_matches_torch(engine: LayerChain, reference: LayerChain, index: int) -> None:
    frame = parity_frames()[index]
    want, got = heads_after_each_layer(reference, frame), heads_after_each_layer(engine, frame)
    assert got.shape == (NUM_LAYERS + 1, engine.manifest.horizon, 2) and got.dtype == np.float32
    assert np.abs(want).max() > 1.0, "waypoints should be metres long for the tolerance to mean something"
    error = np.abs(got - want).max(axis=(1, 2))
    assert error.max() <= TOLERANCE_M, f"{engine.backend}: max |error| per layer (m) {error}"


@pytest.mark.parametrize("segments", [[(0, 6)], [(0, 2), (2, 3), (3, 6)], [(0, 0), (0, 4), (4, 4), (4, 6)]])
def test_chains_with_different_cuts_agree(engine: LayerChain, reference: LayerChain,
                                          segments: list[tuple[int, int]]) -> None:
    frame = parity_frames()[0]
    results = []
    for chain in (reference, engine):
        state = chain.prepare(stem_feed(chain.manifest, frame))
        for start, stop in segments:
            state = chain.run_layers(state, start, stop)
        results.append(chain.head(state))
    np.testing.assert_allclose(results[1], results[0], atol=TOLERANCE_M, rtol=0)


@pytest.mark.parametrize("exit_at", [1, 3, 6])
def test_controller_makes_the_same_exit_decisions(engine: LayerChain, reference: LayerChain, exit_at: int) -> None:
    frame = parity_frames()[0]
    prior = heads_after_each_layer(reference, frame)[exit_at]   # the prior equals the plan after `exit_at` layers
    ctx = FrameContext(NUM_LAYERS, prior, engine.manifest.dt_s)
    policy = DeeadPolicy(delta_m=1e-2, first_checkpoint=1, strides=StrideTable((8.0, 4.0, 2.0), (1, 1, 1, 1)))
    traces = [run_with_exit(chain, chain.prepare(stem_feed(chain.manifest, frame)), policy, ctx)
              for chain in (reference, engine)]
    assert checked_layers(traces[0]) == checked_layers(traces[1])
    assert traces[0].exit_layer == traces[1].exit_layer == exit_at
    assert traces[0].reason == traces[1].reason
    np.testing.assert_allclose([c.deviation_m for c in traces[1].checkpoints],
                               [c.deviation_m for c in traces[0].checkpoints], atol=TOLERANCE_M)
    np.testing.assert_allclose(traces[1].trajectory_m, traces[0].trajectory_m, atol=TOLERANCE_M)


def test_head_output_is_owned_by_the_caller(engine: LayerChain) -> None:
    state = engine.prepare(stem_feed(engine.manifest, parity_frames()[0]))
    first = engine.head(state)
    first[:] = 1e6
    assert not np.array_equal(engine.head(state), first)


def test_a_stale_state_is_refused(engine: LayerChain) -> None:
    state = engine.prepare(stem_feed(engine.manifest, parity_frames()[0]))
    newer = engine.run_layers(state, 0, 2)
    with pytest.raises(ValueError, match="stale"):
        engine.run_layers(state, 0, 2)
    assert engine.run_layers(newer, 2, 2) is newer


@pytest.mark.parametrize("backend", ["torch", *CPU_BACKENDS])
def test_layer_range_is_checked(manifest_path: Path, backend: str) -> None:
    engine = make_engine(backend, manifest_path)
    state = engine.prepare(stem_feed(engine.manifest, parity_frames()[0]))
    for start, stop in [(-1, 2), (3, 2), (0, 7)]:
        with pytest.raises(ValueError, match=r"outside \[0, 6\]"):
            engine.run_layers(state, start, stop)


def test_factory_validates_its_arguments(manifest_path: Path) -> None:
    with pytest.raises(ConfigError, match="backend='onnx' is unknown; use one of: torch, onnxruntime, tensorrt"):
        make_engine("onnx", manifest_path)
    with pytest.raises(ConfigError, match="precision='int8'"):
        make_engine("onnxruntime", manifest_path, precision="int8")
    with pytest.raises(ConfigError, match="num_threads=0"):
        make_engine("onnxruntime", manifest_path, num_threads=0)
    with pytest.raises(ConfigError, match="needs TensorrtExecutionProvider"):
        make_engine("onnxruntime", manifest_path, precision="fp16")
    with pytest.raises(ConfigError, match="execution_provider='gpu' is unknown; use one of: cpu, cuda, tensorrt"):
        make_engine("onnxruntime", manifest_path, execution_provider="gpu")


@pytest.mark.parametrize("module", ["deead_ros.engines", "deead_ros.engines.trt_cache", "deead_ros.engines.build",
                                    "deead_ros.engines.trt_engine"])
def test_importing_engines_imports_no_backend_library(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'rclpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", f"importing {module} imported {out.stdout.strip()}; import it lazily"
