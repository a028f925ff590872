"""The TensorRT backend's GPU-free parts: plan names, sidecars, rebuild decisions, the driver pre-flight."""
import ctypes
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from deead_ros.engines import make_engine
from deead_ros.engines.build import main as build_main
from deead_ros.engines.manifest import ModelFile, TensorSpec
from deead_ros.engines.trt_cache import (CachedPlan, PlanKey, check_cuda_device, compare_sidecar, decide, store,
                                         timing_cache_path)
from deead_ros.errors import BackendUnavailableError
from deead_lab.model.export_onnx import export_random
from deead_lab.model.vla import VLAConfig

HIDDEN = (1, 37, 128)
ONNX = ModelFile("layer_03", Path("/models/layer_03.onnx"), "ab" * 32, 1234,
                 (TensorSpec("hidden_in", HIDDEN, "float32"),), (TensorSpec("hidden_out", HIDDEN, "float32"),))
KEY = PlanKey(ONNX.sha256, "10.3.0", "NVIDIA Orin", "8.7", "fp16")


def has_cuda_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def built(tmp_path, key=KEY, data=b"plan bytes") -> CachedPlan:
    plan = CachedPlan.locate(tmp_path, ONNX, key)
    store(plan, data, build_s=1.0)
    return plan


def test_plan_name_encodes_everything_that_makes_a_plan_non_portable():
    assert KEY.plan_name("layer_03") == f"layer_03_fp16_trt10.3.0_sm87_{'ab' * 6}.plan"
    assert timing_cache_path(Path("/c"), KEY) == Path("/c/timing_trt10.3.0_sm87.cache")


def test_missing_plan_and_force_rebuild(tmp_path):
    plan = CachedPlan.locate(tmp_path, ONNX, KEY)
    assert decide(plan, False).rebuild and "no cached plan" in decide(plan, False).reason
    plan = built(tmp_path)
    assert decide(plan, False) == decide(plan, False) and not decide(plan, False).rebuild
    assert decide(plan, True).rebuild and decide(plan, True).reason == "force_engine_update is set"


@pytest.mark.parametrize("field, value", [("gpu_name", "NVIDIA Jetson AGX Thor"), ("tensorrt_version", "10.1.0"),
                                          ("precision", "fp32"), ("compute_capability", "8.6"),
                                          ("onnx_sha256", "cd" * 32)])
def test_each_key_field_mismatch_says_configured_and_cached(tmp_path, field, value):
    cached = built(tmp_path, replace(KEY, **{field: value}))
    configured = CachedPlan(cached.role, cached.onnx, KEY, cached.plan_path, cached.sidecar_path)
    decision = decide(configured, False)
    assert decision.rebuild
    assert decision.reason == f"{field}: configured {getattr(KEY, field)!r}, cached {value!r}"


def test_io_change_in_the_onnx_means_rebuild(tmp_path):
    plan = built(tmp_path)
    changed = ModelFile(ONNX.role, ONNX.path, ONNX.sha256, ONNX.size_bytes,
                        (TensorSpec("hidden_in", (1, 40, 128), "float32"),), ONNX.outputs)
    decision = decide(CachedPlan(plan.role, changed, KEY, plan.plan_path, plan.sidecar_path), False)
    assert decision.rebuild and decision.reason.startswith("io: configured")


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.plan_path.write_bytes(b"plan"), "truncated"),
    (lambda p: p.plan_path.write_bytes(b"PLAN BYTES"), "modified after the build"),
    (lambda p: p.sidecar_path.unlink(), "missing or unreadable"),
    (lambda p: p.sidecar_path.write_text("{"), "missing or unreadable"),
])
def test_damaged_cache_entries_are_rebuilt(tmp_path, damage, reason):
    plan = built(tmp_path)
    damage(plan)
    decision = decide(plan, False)
    assert decision.rebuild and reason in decision.reason


def test_sidecar_records_key_io_and_plan_hash(tmp_path):
    plan = built(tmp_path)
    sidecar = json.loads(plan.sidecar_path.read_text())
    assert sidecar["gpu_name"] == "NVIDIA Orin" and sidecar["plan_bytes"] == len(b"plan bytes")
    assert sidecar["io"]["inputs"] == [["hidden_in", [1, 37, 128], "float32"]]
    assert compare_sidecar(plan.expected_sidecar(), sidecar) == []
    assert not list(tmp_path.glob(".*")), "temporary files must not be left behind"


@pytest.mark.skipif(has_cuda_driver(), reason="this machine has a CUDA driver; the no-GPU path cannot be seen")
def test_without_a_driver_the_backend_fails_clearly_and_never_imports_tensorrt(tmp_path, capsys):
    with pytest.raises(BackendUnavailableError, match="libcuda.so.1 cannot be loaded.*onnxruntime"):
        check_cuda_device()
    manifest = export_random(tmp_path, VLAConfig(n_layer=1, d_model=16, n_head=1, stem_channels=(4, 4, 4)),
                             fused=False, log=lambda line: None)
    with pytest.raises(BackendUnavailableError, match="libcuda.so.1"):
        make_engine("tensorrt", manifest)
    assert build_main(["--manifest", str(manifest)]) == 2
    assert "deead_build_engines: error: backend 'tensorrt' needs the NVIDIA driver" in capsys.readouterr().err
    assert build_main(["--manifest", str(tmp_path / "nowhere.json")]) == 2
    assert "export the model first" in capsys.readouterr().err
    assert "tensorrt" not in sys.modules
