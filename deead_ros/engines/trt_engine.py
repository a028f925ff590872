"""TensorRT backend (TensorRT 10+): one engine per exported graph, chained on one CUDA stream.

Plans are built from the same per-layer ONNX files as onnxruntime uses and cached on disk
(trt_cache.py: keyed by ONNX sha256, TensorRT version, GPU name and compute capability, precision).
Building is loud and happens only at start-up or in `deead_build_engines`, never while planning.

At run time the hidden state stays on the GPU in two ping-pong device buffers; layers are enqueued on
one stream with named tensors (`set_tensor_address` + `execute_async_v3`), and only the head's (T, 2)
output is copied to the host, at a check. CUDA memory and streams come from cuda-python
(`cuda.bindings.runtime`, the package NVIDIA's own TensorRT samples use) rather than torch.cuda, so
that a vehicle install needs no torch. Nothing here imports tensorrt before check_cuda_device() has
confirmed a driver and a GPU (load_runtime); after that, each function imports it by name, so that the
type checker verifies every TensorRT call against the API's types (tensorrt-stubs; `make lint`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deead_ros.engines.manifest import HIDDEN_IN, HIDDEN_OUT, TRAJECTORY, Manifest, ModelFile
from deead_ros.engines.protocol import PingPong, PingPongState, check_layer_range
from deead_ros.engines.trt_cache import CachedPlan, PlanKey, check_cuda_device, decide, store, timing_cache_path
from deead_ros.errors import BackendUnavailableError, EngineBuildError, ModelFileError

if TYPE_CHECKING:
    import tensorrt as trt

_LOG = logging.getLogger(__name__)
WORKSPACE_MB = 1024


def load_runtime() -> Any:
    """Check the driver, tensorrt (>= 10) and cuda-python; return cuda-python's runtime bindings (untyped)."""
    check_cuda_device()
    try:
        import tensorrt as trt
    except ImportError as err:
        raise BackendUnavailableError(
            "backend 'tensorrt': the tensorrt Python package is missing; it comes with the vehicle's "
            "JetPack/TensorRT install (PyPI's 'tensorrt' only downloads from NVIDIA's index)") from err
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as err:
        raise BackendUnavailableError("backend 'tensorrt' needs cuda-python >= 12.6 for CUDA memory and "
                                      "streams: pip install 'deead_ros[tensorrt]'") from err
    if int(trt.__version__.split(".")[0]) < 10:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} is too old: this backend uses the TensorRT 10 API "
                                      "(named tensors, execute_async_v3)")
    return cudart


class Cuda:
    """The few CUDA runtime calls the backend needs, each checked."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def __call__(self, what: str, result: tuple[Any, ...]) -> Any:
        status, *values = result
        if status != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA {what} failed: {status}")
        return values[0] if len(values) == 1 else tuple(values)

    def gpu(self) -> tuple[str, str]:
        """(name, compute capability "major.minor") of the current device."""
        device = self("cudaGetDevice", self.rt.cudaGetDevice())
        props = self("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), f"{props.major}.{props.minor}"

    def malloc(self, nbytes: int) -> int:
        return int(self("cudaMalloc", self.rt.cudaMalloc(nbytes)))


def _progress_monitor(prefix: str) -> trt.IProgressMonitor:
    """A TensorRT progress monitor that logs each top-level build phase (builds take minutes)."""
    import tensorrt as trt

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                _LOG.warning("%s   %s (%d steps)", prefix, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True                       # never cancel

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


def _build_plan(builder: trt.Builder, logger: trt.ILogger, onnx: ModelFile, precision: str,
                timing_cache: trt.ITimingCache, prefix: str) -> bytes:
    import tensorrt as trt
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx.path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx.path}: {errors}; re-export it with deead_export")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_MB << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)    # fp32 means fp32: TF32 matmuls differ from torch by ~1e-3
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    monitor = _progress_monitor(prefix)            # a local reference keeps it alive for the whole build
    config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx.path} at {precision}; see the TensorRT errors above")
    return bytes(plan)


def build_plans(manifest: Manifest, *, precision: str, cache_dir: Path, force_engine_update: bool = False,
                cudart: Any = None) -> list[CachedPlan]:
    """Make sure every engine of the chain has a valid cached plan, building what is missing or stale.

    Returns:
        The plans in chain order: stem, layers, head.
    """
    cudart = cudart or load_runtime()
    import tensorrt as trt
    gpu_name, capability = Cuda(cudart).gpu()
    plans = [CachedPlan.locate(cache_dir, f, PlanKey(f.sha256, trt.__version__, gpu_name, capability, precision))
             for f in manifest.engine_files]
    todo = [(plan, why) for plan in plans if (why := decide(plan, force_engine_update)).rebuild]
    if not todo:
        _LOG.info("all %d TensorRT plans in %s match (%s, %s)", len(plans), cache_dir, gpu_name, precision)
        return plans
    _LOG.warning("BUILDING %d TensorRT engine(s) for %s (sm %s, TensorRT %s, %s) into %s. This takes minutes; "
                 "build ahead of time with `deead_build_engines --manifest %s --precision %s`", len(todo), gpu_name,
                 capability, trt.__version__, precision, cache_dir, manifest.path, precision)
    cache_dir.mkdir(parents=True, exist_ok=True)
    timing_path = timing_cache_path(cache_dir, plans[0].key)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_config = builder.create_builder_config()       # kept alive with the timing cache it creates
    timing_cache = cache_config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    for n, (plan, why) in enumerate(todo, start=1):
        prefix = f"[{n:2d}/{len(todo)}] {plan.role}"
        _LOG.warning("%s: building (%s)", prefix, why.reason)
        t0 = time.perf_counter()
        data = _build_plan(builder, logger, plan.onnx, precision, timing_cache, prefix)
        store(plan, data, time.perf_counter() - t0)
        _LOG.warning("%s: built in %.1f s, %.1f MB -> %s", prefix, time.perf_counter() - t0, len(data) / 1e6,
                     plan.plan_path.name)
    timing_path.write_bytes(bytes(timing_cache.serialize()))
    return plans


@dataclass
class _Engine:
    engine: trt.ICudaEngine
    context: trt.IExecutionContext


class TrtEngine:
    """LayerChain on TensorRT. State: which of two device hidden buffers is current (see PingPong)."""

    backend = "tensorrt"

    def __init__(self, manifest: Manifest, *, precision: str, cache_dir: Path,
                 force_engine_update: bool = False) -> None:
        cudart = load_runtime()
        import tensorrt as trt
        self._cuda = Cuda(cudart)
        plans = build_plans(manifest, precision=precision, cache_dir=cache_dir,
                            force_engine_update=force_engine_update, cudart=cudart)
        self.manifest = manifest
        self.num_layers = manifest.num_layers
        self.precision = precision
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engines = [self._load(plan) for plan in plans]
        self._stem, self._layers, self._head = engines[0], engines[1:-1], engines[-1]
        self._stream = self._cuda("cudaStreamCreate", cudart.cudaStreamCreate())
        self._device: list[int] = []                           # every cudaMalloc, freed in close()
        # host staging arrays + device buffers for the stem inputs, two hidden buffers, the trajectory
        self._inputs = {t.name: (np.zeros(t.shape, t.dtype), self._alloc(t.shape, t.dtype))
                        for t in manifest.stem.inputs}
        hidden = manifest.stem.outputs[0]
        self._hidden = [self._alloc(hidden.shape, hidden.dtype) for _ in range(2)]
        traj = manifest.head.outputs[0]
        self._traj_host, self._traj_device = np.zeros(traj.shape, np.float32), self._alloc(traj.shape, traj.dtype)
        for name, (_, device) in self._inputs.items():
            self._stem.context.set_tensor_address(name, device)
        self._stem.context.set_tensor_address(HIDDEN_OUT, self._hidden[0])
        self._head.context.set_tensor_address(TRAJECTORY, self._traj_device)
        self._pingpong = PingPong()

    def _load(self, plan: CachedPlan) -> _Engine:
        engine = self._runtime.deserialize_cuda_engine(plan.plan_path.read_bytes())
        if engine is None:
            raise ModelFileError(f"TensorRT cannot load plan {plan.plan_path}; delete it or start with "
                                 "force_engine_update: true to rebuild it")
        for spec in (*plan.onnx.inputs, *plan.onnx.outputs):
            dims = engine.get_tensor_shape(spec.name)
            shape = tuple(dims[i] for i in range(len(dims)))
            if shape != spec.shape:
                raise ModelFileError(f"plan {plan.plan_path} has {spec.name} {shape}, the manifest says {spec.shape}; "
                                     "rebuild with force_engine_update: true")
        return _Engine(engine, engine.create_execution_context())

    def _alloc(self, shape: tuple[int, ...], dtype: str) -> int:
        pointer = self._cuda.malloc(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self._device.append(pointer)
        return pointer

    def _execute(self, engine: _Engine) -> None:
        if not engine.context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed; see the TensorRT log")

    def prepare(self, feed: dict[str, np.ndarray]) -> PingPongState:
        h2d = self._cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name, array in feed.items():
            host, device = self._inputs[name]
            np.copyto(host, array)
            self._cuda("cudaMemcpyAsync", self._cuda.rt.cudaMemcpyAsync(device, host.ctypes.data, host.nbytes, h2d,
                                                                        self._stream))
        self._execute(self._stem)
        return self._pingpong.written(0)

    def run_layers(self, state: PingPongState, start: int, stop: int) -> PingPongState:
        check_layer_range(start, stop, self.num_layers)
        slot = self._pingpong.check(state).slot
        for layer in self._layers[start:stop]:
            layer.context.set_tensor_address(HIDDEN_IN, self._hidden[slot])
            layer.context.set_tensor_address(HIDDEN_OUT, self._hidden[1 - slot])
            self._execute(layer)
            slot = 1 - slot
        return self._pingpong.written(slot) if stop > start else state

    def head(self, state: PingPongState) -> np.ndarray:
        self._head.context.set_tensor_address(HIDDEN_IN, self._hidden[self._pingpong.check(state).slot])
        self._execute(self._head)
        d2h = self._cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._cuda("cudaMemcpyAsync", self._cuda.rt.cudaMemcpyAsync(
            self._traj_host.ctypes.data, self._traj_device, self._traj_host.nbytes, d2h, self._stream))
        self._cuda("cudaStreamSynchronize", self._cuda.rt.cudaStreamSynchronize(self._stream))
        return self.manifest.head_contract.waypoints(self._traj_host)   # (T, 2) m, a new array

    def close(self) -> None:
        """Free device memory and the stream; the engine is unusable afterwards."""
        if not self._device:
            return
        self._cuda("cudaStreamSynchronize", self._cuda.rt.cudaStreamSynchronize(self._stream))
        for pointer in self._device:
            self._cuda("cudaFree", self._cuda.rt.cudaFree(pointer))
        self._device = []
        self._cuda("cudaStreamDestroy", self._cuda.rt.cudaStreamDestroy(self._stream))
