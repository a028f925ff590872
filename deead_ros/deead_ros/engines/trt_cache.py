"""The TensorRT backend's parts that need no tensorrt: plan cache keys, file names, rebuild decisions,
and the CUDA driver pre-flight. Unit-tested on machines without a GPU.

A plan is valid for one ONNX file, one TensorRT version, one GPU (name + compute capability) and one
precision. All of these go into the plan's file name or its JSON sidecar; on load every field is
compared and a difference is reported as "configured X, cached Y" before the plan is rebuilt.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deead_ros.engines.manifest import ModelFile
from deead_ros.errors import BackendUnavailableError
from deead_ros.files import write_atomic

# The TensorRT majors this backend builds and runs: 10 (weakly typed builds, precision by builder flag) and
# 11 (strongly typed only: precision comes from the ONNX graph's types). Each new major changes the build API.
SUPPORTED_TENSORRT_MAJORS = (10, 11)


def tensorrt_major(version: str) -> int:
    """Return the major of a TensorRT version string ("10.13.0.35" -> 10) if this backend supports it.

    Raises:
        BackendUnavailableError: the version is not 10.x or 11.x, or not a version at all.
    """
    head = version.split(".", 1)[0]
    major = int(head) if head.isdigit() else -1
    if major not in SUPPORTED_TENSORRT_MAJORS:
        supported = " or ".join(f"{m}.x" for m in SUPPORTED_TENSORRT_MAJORS)
        raise BackendUnavailableError(
            f"TensorRT {version} is not supported: backend 'tensorrt' builds and runs with TensorRT {supported} "
            "(named tensors, execute_async_v3, user-managed scratch memory); install one of those, or use "
            "backend: onnxruntime")
    return major


@dataclass(frozen=True, slots=True)
class PlanKey:
    """Everything a serialized TensorRT plan depends on."""

    onnx_sha256: str
    tensorrt_version: str        # e.g. 10.3.0
    gpu_name: str                # e.g. NVIDIA H100 80GB HBM3
    compute_capability: str      # e.g. 9.0
    precision: str               # fp32 | fp16

    def plan_name(self, role: str) -> str:
        """File name that changes whenever the plan would: layer_03_fp16_trt10.3.0_sm90_<onnx sha12>.plan."""
        sm = self.compute_capability.replace(".", "")
        return f"{role}_{self.precision}_trt{self.tensorrt_version}_sm{sm}_{self.onnx_sha256[:12]}.plan"


@dataclass(frozen=True, slots=True)
class CachedPlan:
    """Where one engine's plan and sidecar live, and what they must say."""

    role: str
    onnx: ModelFile
    key: PlanKey
    plan_path: Path
    sidecar_path: Path

    @classmethod
    def locate(cls, cache_dir: Path, onnx: ModelFile, key: PlanKey) -> CachedPlan:
        plan = cache_dir / key.plan_name(onnx.role)
        return cls(onnx.role, onnx, key, plan, plan.with_suffix(".json"))

    def expected_sidecar(self) -> dict[str, Any]:
        """The sidecar fields a matching plan must have (plan size and hash are added when it is written)."""
        io = {k: [[t.name, list(t.shape), t.dtype] for t in getattr(self.onnx, k)] for k in ("inputs", "outputs")}
        return {"role": self.role, "onnx_file": self.onnx.path.name, **asdict(self.key), "io": io}


@dataclass(frozen=True, slots=True)
class CacheDecision:
    rebuild: bool
    reason: str                  # why (or why not), for the build log


def compare_sidecar(expected: dict[str, Any], cached: dict[str, Any]) -> list[str]:
    """Return one "field: configured X, cached Y" line per field that differs."""
    return [f"{field}: configured {expected[field]!r}, cached {cached.get(field)!r}"
            for field in expected if cached.get(field) != expected[field]]


def decide(plan: CachedPlan, force_engine_update: bool) -> CacheDecision:
    """Whether the cached plan can be used as is, and why not."""
    if force_engine_update:
        return CacheDecision(True, "force_engine_update is set")
    if not plan.plan_path.is_file():
        return CacheDecision(True, f"no cached plan {plan.plan_path.name}")
    try:
        cached = json.loads(plan.sidecar_path.read_text())
    except (OSError, ValueError) as err:
        return CacheDecision(True, f"sidecar {plan.sidecar_path.name} is missing or unreadable ({err})")
    differences = compare_sidecar(plan.expected_sidecar(), cached)
    if differences:
        return CacheDecision(True, "; ".join(differences))
    size = plan.plan_path.stat().st_size
    if size != cached.get("plan_bytes"):
        return CacheDecision(True, f"plan is {size} bytes, sidecar says {cached.get('plan_bytes')} (truncated)")
    if hashlib.sha256(plan.plan_path.read_bytes()).hexdigest() != cached.get("plan_sha256"):
        return CacheDecision(True, "plan's sha256 differs from its sidecar (modified after the build)")
    return CacheDecision(False, "cached plan matches")


def store(plan: CachedPlan, data: bytes, build_s: float) -> None:
    """Write the plan and then its sidecar, each atomically: a crash leaves no plan that looks valid."""
    write_atomic(plan.plan_path, data)
    sidecar = {**plan.expected_sidecar(), "plan_bytes": len(data), "plan_sha256": hashlib.sha256(data).hexdigest(),
               "build_s": round(build_s, 2)}
    write_atomic(plan.sidecar_path, (json.dumps(sidecar, indent=1) + "\n").encode())


def timing_cache_path(cache_dir: Path, key: PlanKey) -> Path:
    """One persisted timing cache per TensorRT version and GPU architecture (it speeds up rebuilds)."""
    return cache_dir / f"timing_trt{key.tensorrt_version}_sm{key.compute_capability.replace('.', '')}.cache"



def check_cuda_device() -> int:
    """Return the number of CUDA devices, or raise BackendUnavailableError without touching TensorRT.

    TensorRT (the lean runtime especially) can crash the process when used without a CUDA driver, so
    the driver is asked first, through ctypes: libcuda.so.1, cuInit, cuDeviceGetCount.
    """
    fix = "use backend: onnxruntime on this machine, or run on one with an NVIDIA GPU and driver"
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError as err:
        raise BackendUnavailableError(f"backend 'tensorrt' needs the NVIDIA driver, but libcuda.so.1 cannot "
                                      f"be loaded ({err}); {fix}") from err
    status = libcuda.cuInit(0)
    if status != 0:
        raise BackendUnavailableError(f"backend 'tensorrt': cuInit failed with CUresult {status} (no usable "
                                      f"GPU, or driver and kernel module disagree); {fix}")
    count = ctypes.c_int(0)
    status = libcuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value < 1:
        raise BackendUnavailableError(f"backend 'tensorrt': the driver sees {count.value} CUDA devices "
                                      f"(CUresult {status}); {fix}")
    return count.value


def strongly_typed_fp16_onnx(onnx_file: ModelFile, cache_dir: Path) -> Path:
    """Write (once) an fp16 copy of an exported fp32 graph for a strongly typed TensorRT 11 build.

    TensorRT 11 takes precision from the graph's types only (no FP16 builder flag), so an fp16 engine
    needs fp16 weights and activations in the ONNX itself. The graph's inputs and outputs stay float32
    (`keep_io_types`), so the chain's buffers, the manifest and the fp32 engines keep one layout.
    The converter is ONNX Runtime's (onnxruntime.transformers.float16, shipped in the onnxruntime wheel
    that the runtime depends on anyway); the copy is named by the source's sha256 and reused.

    Returns:
        The path of the fp16 graph in cache_dir.
    """
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as err:
        raise BackendUnavailableError(f"fp16 engines on TensorRT 11 are built from an fp16 copy of each graph, "
                                      f"which needs the onnx package ({err}): pip install 'deead_ros[tensorrt]', "
                                      "or use precision: fp32") from err

    path = cache_dir / f"{onnx_file.role}_fp16_{onnx_file.sha256[:12]}.onnx"
    if path.is_file():
        return path
    model = convert_float_to_float16(onnx.load(str(onnx_file.path)), keep_io_types=True)
    write_atomic(path, model.SerializeToString())
    return path
