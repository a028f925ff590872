"""TensorRT (and onnxruntime's GPU providers) against the torch reference, on a real GPU.

Runs only with `pytest -m gpu` on a machine with an NVIDIA driver, TensorRT >= 10 and cuda-python;
elsewhere every test is skipped with the reason.
"""
import logging

import numpy as np
import pytest

from deead_ros.engines import make_engine
from deead_ros.model.encoding import FrameInputs
from deead_ros.engines.trt_cache import check_cuda_device
from deead_ros.errors import BackendUnavailableError
from deead_ros.exit import DeeadPolicy, FrameContext, StrideTable, run_with_exit
from deead_ros.exit.controller import checked_layers
from deead_lab.model.export_onnx import export_random
from deead_lab.model.vla import VLAConfig

pytestmark = pytest.mark.gpu

SMALL = VLAConfig(n_layer=6, d_model=64, n_head=2, stem_channels=(8, 16, 32), mlp_ratio=2, waypoint_scale_m=100.0)
FP32_TOLERANCE_M = 1e-3          # GPU kernels sum in another order than the CPU; TF32 is off at fp32
FP16_RELATIVE = 2e-2             # of the largest waypoint coordinate


def gpu_or_skip() -> None:
    try:
        check_cuda_device()
    except BackendUnavailableError as err:
        pytest.skip(f"no CUDA GPU: {err}")
    pytest.importorskip("tensorrt", reason="TensorRT's Python package is not installed")
    pytest.importorskip("cuda.bindings", reason="cuda-python >= 12.6 is not installed")


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory):
    gpu_or_skip()
    return export_random(tmp_path_factory.mktemp("trt"), SMALL, seed=5, fused=False, log=lambda line: None)


@pytest.fixture(scope="module")
def reference(manifest_path):
    return make_engine("torch", manifest_path)


def frame() -> FrameInputs:
    rng = np.random.default_rng(11)
    route = np.stack([np.linspace(0, 60, 30), 0.003 * np.linspace(0, 60, 30) ** 2], axis=1)
    image = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    return FrameInputs(image, route, 7.0, 0.05, "turn left at the junction")


def heads(engine) -> np.ndarray:
    state = engine.prepare(frame())
    out = [engine.head(state)]
    for layer in range(engine.num_layers):
        state = engine.run_layers(state, layer, layer + 1)
        out.append(engine.head(state))
    return np.stack(out)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_trt_matches_torch_per_layer(manifest_path, reference, tmp_path, precision):
    engine = make_engine("tensorrt", manifest_path, precision=precision, engine_cache_dir=tmp_path)
    try:
        want, got = heads(reference), heads(engine)
    finally:
        engine.close()
    error = np.abs(got - want).max()
    limit = FP32_TOLERANCE_M if precision == "fp32" else FP16_RELATIVE * np.abs(want).max()
    assert error <= limit, f"TensorRT {precision}: max |error| {error:.2e} m > {limit:.2e} m"


def test_trt_cache_is_reused_and_force_rebuilds(manifest_path, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="deead_ros.engines.trt_engine")
    make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path).close()
    assert "BUILDING 8 TensorRT engine(s)" in caplog.text
    caplog.clear()
    make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path).close()
    assert "all 8 TensorRT plans" in caplog.text and "BUILDING" not in caplog.text
    caplog.clear()
    make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path,
                force_engine_update=True).close()
    assert "force_engine_update is set" in caplog.text
    assert len(list(tmp_path.glob("*.plan"))) == 8 and len(list(tmp_path.glob("*.json"))) == 8


def test_trt_makes_the_same_exit_decisions(manifest_path, reference, tmp_path):
    engine = make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path)
    prior = heads(reference)[3]
    ctx = FrameContext(SMALL.n_layer, prior, SMALL.dt_s)
    policy = DeeadPolicy(delta_m=0.05, first_checkpoint=1, strides=StrideTable((8.0, 4.0, 2.0), (1, 1, 1, 1)))
    try:
        traces = [run_with_exit(chain, chain.prepare(frame()), policy, ctx) for chain in (reference, engine)]
    finally:
        engine.close()
    assert checked_layers(traces[0]) == checked_layers(traces[1]) and traces[1].exit_layer == 3


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
def test_onnxruntime_gpu_providers_match_torch(manifest_path, reference, tmp_path, provider):
    ort = pytest.importorskip("onnxruntime")
    if provider not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime build has no {provider} (install onnxruntime-gpu)")
    engine = make_engine("onnxruntime", manifest_path, providers=[provider, "CPUExecutionProvider"],
                         engine_cache_dir=tmp_path)
    error = np.abs(heads(engine) - heads(reference)).max()
    assert error <= FP32_TOLERANCE_M, f"{provider}: max |error| {error:.2e} m"
