"""Every CPU backend against the torch reference: per layer, for chains with exits, and exit decisions."""
import subprocess
import sys

import numpy as np
import pytest

from deead_ros.engines import make_engine
from deead_ros.errors import BackendUnavailableError, ConfigError
from deead_ros.exit import DeeadPolicy, FrameContext, PriorSettings, StrideTable, run_with_exit
from deead_ros.exit.controller import checked_layers
from deead_ros.model.encoding import FrameInputs, load_encoder
from deead_lab.model.export_onnx import export_random
from deead_lab.model.llama_vla import LlamaVLAConfig
from deead_lab.model.vla import VLAConfig

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
def manifest_path(request, tmp_path_factory):
    return export_random(tmp_path_factory.mktemp(f"parity_{request.param}"), MODELS[request.param], seed=3,
                         log=lambda line: None)


def feed(engine, frame):
    """The stem's named inputs, as the Runner makes them: the manifest's encoder on the located route."""
    encoder = load_encoder(engine.manifest.encoder.name, engine.manifest.encoder.config)
    route = PriorSettings().route_ahead(frame.route_ego_m)
    return encoder.encode(frame, None if isinstance(route, str) else route)


@pytest.fixture(scope="module")
def reference(manifest_path):
    engine = make_engine("torch", manifest_path)
    yield engine
    engine.close()


@pytest.fixture(scope="module", params=CPU_BACKENDS)
def engine(request, manifest_path):
    engine = make_engine(request.param, manifest_path)
    yield engine
    engine.close()


def frames():
    rng = np.random.default_rng(7)
    curve = np.stack([np.linspace(0, 60, 40), 0.004 * np.linspace(0, 60, 40) ** 2], axis=1)
    yield FrameInputs(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8), curve, 8.0, 0.1, "turn left at the junction")
    yield FrameInputs(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), None, 0.0, 0.0, "")
    yield FrameInputs(rng.integers(0, 256, (50, 90, 3), dtype=np.uint8), curve[::-1], 3.0, -0.2,
                      "change lane to the right")


def head_after_each_layer(engine, frame):
    state = engine.prepare(feed(engine, frame))
    out = [engine.head(state)]
    for layer in range(engine.num_layers):
        state = engine.run_layers(state, layer, layer + 1)
        out.append(engine.head(state))
    return np.stack(out)                     # (L + 1, T, 2): the head at the stem and after every layer


@pytest.mark.parametrize("index", range(3))
def test_head_after_every_layer_matches_torch(engine, reference, index):
    frame = list(frames())[index]
    want, got = head_after_each_layer(reference, frame), head_after_each_layer(engine, frame)
    assert got.shape == (NUM_LAYERS + 1, engine.manifest.horizon, 2) and got.dtype == np.float32
    assert np.abs(want).max() > 1.0, "waypoints should be metres long for the tolerance to mean something"
    error = np.abs(got - want).max(axis=(1, 2))
    assert error.max() <= TOLERANCE_M, f"{engine.backend}: max |error| per layer (m) {error}"


@pytest.mark.parametrize("segments", [[(0, 6)], [(0, 2), (2, 3), (3, 6)], [(0, 0), (0, 4), (4, 4), (4, 6)]])
def test_chains_with_different_cuts_agree(engine, reference, segments):
    frame = next(frames())
    results = []
    for chain in (reference, engine):
        state = chain.prepare(feed(chain, frame))
        for start, stop in segments:
            state = chain.run_layers(state, start, stop)
        results.append(chain.head(state))
    np.testing.assert_allclose(results[1], results[0], atol=TOLERANCE_M, rtol=0)


@pytest.mark.parametrize("exit_at", [1, 3, 6])
def test_controller_makes_the_same_exit_decisions(engine, reference, exit_at):
    frame = next(frames())
    prior = head_after_each_layer(reference, frame)[exit_at]   # the prior equals the plan after `exit_at` layers
    ctx = FrameContext(NUM_LAYERS, prior, engine.manifest.dt_s)
    policy = DeeadPolicy(delta_m=1e-2, first_checkpoint=1, strides=StrideTable((8.0, 4.0, 2.0), (1, 1, 1, 1)))
    traces = [run_with_exit(chain, chain.prepare(feed(chain, frame)), policy, ctx) for chain in (reference, engine)]
    assert checked_layers(traces[0]) == checked_layers(traces[1])
    assert traces[0].exit_layer == traces[1].exit_layer == exit_at
    assert traces[0].reason == traces[1].reason
    np.testing.assert_allclose([c.deviation_m for c in traces[1].checkpoints],
                               [c.deviation_m for c in traces[0].checkpoints], atol=TOLERANCE_M)
    np.testing.assert_allclose(traces[1].trajectory_m, traces[0].trajectory_m, atol=TOLERANCE_M)


def test_head_output_is_owned_by_the_caller(engine):
    state = engine.prepare(feed(engine, next(frames())))
    first = engine.head(state)
    first[:] = 1e6
    assert not np.array_equal(engine.head(state), first)


def test_a_stale_state_is_refused(engine):
    state = engine.prepare(feed(engine, next(frames())))
    newer = engine.run_layers(state, 0, 2)
    with pytest.raises(ValueError, match="stale"):
        engine.run_layers(state, 0, 2)
    assert engine.run_layers(newer, 2, 2) is newer


@pytest.mark.parametrize("backend", ["torch", *CPU_BACKENDS])
def test_layer_range_is_checked(manifest_path, backend):
    engine = make_engine(backend, manifest_path)
    state = engine.prepare(feed(engine, next(frames())))
    for start, stop in [(-1, 2), (3, 2), (0, 7)]:
        with pytest.raises(ValueError, match=r"outside \[0, 6\]"):
            engine.run_layers(state, start, stop)


def test_factory_validates_its_arguments(manifest_path):
    with pytest.raises(ConfigError, match="backend='onnx' is unknown; use one of: torch, onnxruntime, tensorrt"):
        make_engine("onnx", manifest_path)
    with pytest.raises(ConfigError, match="precision='int8'"):
        make_engine("onnxruntime", manifest_path, precision="int8")
    with pytest.raises(ConfigError, match="num_threads=0"):
        make_engine("onnxruntime", manifest_path, num_threads=0)
    with pytest.raises(ConfigError, match="needs TensorrtExecutionProvider"):
        make_engine("onnxruntime", manifest_path, precision="fp16")
    with pytest.raises(BackendUnavailableError, match="not in this onnxruntime build"):
        make_engine("onnxruntime", manifest_path, providers=["NoSuchExecutionProvider"])


@pytest.mark.parametrize("module", ["deead_ros.engines", "deead_ros.engines.trt_cache", "deead_ros.engines.build",
                                    "deead_ros.engines.trt_engine"])
def test_importing_engines_imports_no_backend_library(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'rclpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", f"importing {module} imported {out.stdout.strip()}; import it lazily"
