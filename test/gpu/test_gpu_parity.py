"""The GPU backends against the torch reference (on the CPU), on a real NVIDIA GPU.

Runs with `pytest -m gpu` (scripts/gpu_check.sh runs it) on a machine with an NVIDIA driver: the TensorRT
tests need TensorRT 10.x or 11.x and cuda-python, the onnxruntime tests onnxruntime-gpu. Elsewhere every
test is skipped with the reason. Inputs come from test/engine_inputs.py, the helper the CPU parity tests
use, and test/unit/test_gpu_host_checks.py builds this module's inputs for GPU_MODEL on the CPU, so an
interface change breaks them where there is no GPU.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deead_ros.engines import LayerChain, make_engine
from deead_ros.engines.trt_cache import check_cuda_device
from deead_ros.errors import BackendUnavailableError
from deead_ros.exit import DeeadPolicy, FrameContext, StrideTable, run_with_exit
from deead_ros.exit.controller import checked_layers
from deead_lab.model.export_onnx import export_random
from deead_lab.model.vla import VLAConfig
from test.engine_inputs import heads_after_each_layer, parity_frames, stem_feed

pytestmark = pytest.mark.gpu

GPU_MODEL = VLAConfig(n_layer=6, d_model=64, n_head=2, stem_channels=(8, 16, 32), mlp_ratio=2,
                      waypoint_scale_m=100.0)
GPU_MODEL_ENGINES = GPU_MODEL.n_layer + 2         # stem, layers, head: one plan each
FP32_TOLERANCE_M = 1e-3          # GPU kernels sum in another order than the CPU; TF32 is off at fp32
FP16_RELATIVE = 2e-2             # of the largest waypoint coordinate
TF32_RELATIVE = 5e-3             # onnxruntime's TensorRT provider may build with TF32 (it has no switch for it)


def export_gpu_model(out_dir: Path) -> Path:
    """GPU_MODEL with random weights, exported to per-layer ONNX and torch programs; its manifest.json."""
    return export_random(out_dir, GPU_MODEL, seed=5, fused=False, log=lambda line: None)


def cuda_or_skip() -> None:
    try:
        check_cuda_device()
    except BackendUnavailableError as err:
        pytest.skip(f"no CUDA GPU: {err}")


def tensorrt_or_skip() -> None:
    cuda_or_skip()
    pytest.importorskip("tensorrt", reason="TensorRT's Python package is not installed")
    pytest.importorskip("cuda.bindings", reason="cuda-python >= 12.6 is not installed")


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cuda_or_skip()
    return export_gpu_model(tmp_path_factory.mktemp("gpu"))


@pytest.fixture(scope="module")
def reference(manifest_path: Path) -> Iterator[LayerChain]:
    engine = make_engine("torch", manifest_path)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference_heads(reference: LayerChain) -> np.ndarray:
    return heads_after_each_layer(reference, parity_frames()[0])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_trt_matches_torch_per_layer(manifest_path: Path, reference_heads: np.ndarray, tmp_path: Path,
                                     precision: str) -> None:
    tensorrt_or_skip()
    engine = make_engine("tensorrt", manifest_path, precision=precision, engine_cache_dir=tmp_path)
    try:
        got = heads_after_each_layer(engine, parity_frames()[0])
    finally:
        engine.close()
    error = float(np.abs(got - reference_heads).max())
    limit = FP32_TOLERANCE_M if precision == "fp32" else FP16_RELATIVE * float(np.abs(reference_heads).max())
    assert error <= limit, f"TensorRT {precision}: max |error| {error:.2e} m > {limit:.2e} m"


def test_trt_cache_is_reused_and_force_rebuilds(manifest_path: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    tensorrt_or_skip()
    caplog.set_level(logging.INFO, logger="deead_ros.engines.trt_engine")
    make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path).close()
    assert f"BUILDING {GPU_MODEL_ENGINES} TensorRT engine(s)" in caplog.text
    assert f"chain of {GPU_MODEL_ENGINES} engines shares one" in caplog.text
    caplog.clear()
    make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path).close()
    assert f"all {GPU_MODEL_ENGINES} TensorRT plans" in caplog.text and "BUILDING" not in caplog.text
    caplog.clear()
    make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path,
                force_engine_update=True).close()
    assert "force_engine_update is set" in caplog.text
    assert len(list(tmp_path.glob("*.plan"))) == GPU_MODEL_ENGINES
    assert len(list(tmp_path.glob("*_fp32_*.json"))) == GPU_MODEL_ENGINES


def test_trt_makes_the_same_exit_decisions(manifest_path: Path, reference: LayerChain, reference_heads: np.ndarray,
                                           tmp_path: Path) -> None:
    tensorrt_or_skip()
    engine = make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path)
    ctx = FrameContext(GPU_MODEL.n_layer, reference_heads[3], GPU_MODEL.dt_s)
    policy = DeeadPolicy(delta_m=0.05, first_checkpoint=1, strides=StrideTable((8.0, 4.0, 2.0), (1, 1, 1, 1)))
    try:
        traces = [run_with_exit(chain, chain.prepare(stem_feed(chain.manifest, parity_frames()[0])), policy, ctx)
                  for chain in (reference, engine)]
    finally:
        engine.close()
    assert checked_layers(traces[0]) == checked_layers(traces[1]) and traces[1].exit_layer == 3


def test_trt_refuses_a_foreign_feed_and_closes_twice(manifest_path: Path, tmp_path: Path) -> None:
    tensorrt_or_skip()
    engine = make_engine("tensorrt", manifest_path, precision="fp32", engine_cache_dir=tmp_path)
    feed = stem_feed(engine.manifest, parity_frames()[0])
    with pytest.raises(ValueError, match="the stem takes"):
        engine.prepare({**feed, "extra": np.zeros(1, np.float32)})
    engine.close()
    engine.close()


@pytest.mark.parametrize("execution_provider, provider", [("cuda", "CUDAExecutionProvider"),
                                                          ("tensorrt", "TensorrtExecutionProvider")])
def test_onnxruntime_gpu_providers_match_torch(manifest_path: Path, reference_heads: np.ndarray, tmp_path: Path,
                                               execution_provider: str, provider: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    if provider not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime build has no {provider} (install onnxruntime-gpu)")
    engine = make_engine("onnxruntime", manifest_path, execution_provider=execution_provider,
                         engine_cache_dir=tmp_path)
    try:
        got = heads_after_each_layer(engine, parity_frames()[0])
    finally:
        engine.close()
    error = float(np.abs(got - reference_heads).max())
    limit = FP32_TOLERANCE_M if execution_provider == "cuda" else TF32_RELATIVE * float(np.abs(reference_heads).max())
    assert error <= limit, f"{provider}: max |error| {error:.2e} m > {limit:.2e} m"
