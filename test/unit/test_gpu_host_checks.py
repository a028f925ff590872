"""The GPU path's host side, on every commit: what scripts/gpu_check.sh checks on a machine without a GPU.

The GPU tests' own input building (test/gpu, GPU_MODEL) run through onnxruntime on the CPU, the TensorRT
versions the backend accepts and refuses, the fp16 graph a TensorRT 11 build parses, and the GPU
execution providers refused with the fix where onnxruntime-gpu is missing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from deead_ros.engines import EXECUTION_PROVIDERS, Manifest, load_manifest, make_engine
from deead_ros.engines.trt_cache import strongly_typed_fp16_onnx, tensorrt_major
from deead_ros.errors import BackendUnavailableError
from test.engine_inputs import heads_after_each_layer, parity_frames, stem_feed
from test.gpu.test_gpu_parity import FP16_RELATIVE, GPU_MODEL, export_gpu_model


@pytest.fixture(scope="module")
def gpu_model(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return load_manifest(export_gpu_model(tmp_path_factory.mktemp("gpu_model")))


def test_the_gpu_tests_inputs_are_the_stems_and_run_on_the_cpu(gpu_model: Manifest) -> None:
    for frame in parity_frames():
        feed = stem_feed(gpu_model, frame)
        assert {name: (array.shape, str(array.dtype)) for name, array in feed.items()} == \
            {t.name: (t.shape, t.dtype) for t in gpu_model.stem.inputs}
    engine = make_engine("onnxruntime", gpu_model.path)
    try:
        heads = heads_after_each_layer(engine, parity_frames()[0])
    finally:
        engine.close()
    assert heads.shape == (GPU_MODEL.n_layer + 1, gpu_model.horizon, 2) and np.isfinite(heads).all()


@pytest.mark.parametrize("version, major", [("10.0.1", 10), ("10.13.0.35", 10), ("11.4.0.106", 11)])
def test_tensorrt_10_and_11_are_accepted(version: str, major: int) -> None:
    assert tensorrt_major(version) == major


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0", "12.0.0", "", "rc-11"])
def test_other_tensorrt_versions_are_refused_with_the_fix(version: str) -> None:
    with pytest.raises(BackendUnavailableError, match=rf"TensorRT {version} is not supported: .* TensorRT 10\.x or "
                                                      r"11\.x .* or use backend: onnxruntime"):
        tensorrt_major(version)


def test_the_fp16_graph_for_tensorrt_11_keeps_its_interface(gpu_model: Manifest, tmp_path: Path) -> None:
    layer = gpu_model.engine_files[1]
    path = strongly_typed_fp16_onnx(layer, tmp_path)
    graph = onnx.load(str(path)).graph
    float_inits = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert not float_inits, f"fp32 weights left in the fp16 graph: {float_inits[:5]}"
    assert [i.type.tensor_type.elem_type for i in [*graph.input, *graph.output]] == [onnx.TensorProto.FLOAT] * 2
    hidden = np.random.default_rng(0).standard_normal(layer.inputs[0].shape).astype(np.float32)
    want, got = (ort.InferenceSession(str(p)).run(None, {layer.inputs[0].name: hidden})[0] for p in (layer.path, path))
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= FP16_RELATIVE * np.abs(want).max()
    modified = path.stat().st_mtime_ns
    assert strongly_typed_fp16_onnx(layer, tmp_path) == path and path.stat().st_mtime_ns == modified


@pytest.mark.parametrize("execution_provider", ["cuda", "tensorrt"])
def test_a_gpu_provider_without_onnxruntime_gpu_is_refused_with_the_fix(gpu_model: Manifest,
                                                                         execution_provider: str) -> None:
    if EXECUTION_PROVIDERS[execution_provider][0] in ort.get_available_providers():
        pytest.skip(f"this onnxruntime build has {EXECUTION_PROVIDERS[execution_provider][0]}: test/gpu runs it")
    with pytest.raises(BackendUnavailableError, match="not in this onnxruntime build .* install onnxruntime-gpu"):
        make_engine("onnxruntime", gpu_model.path, execution_provider=execution_provider)
