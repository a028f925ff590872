"""TensorRT backend (TensorRT 10.x and 11.x): one engine per exported graph, chained on one CUDA stream.

Plans are built from the same per-layer ONNX files as onnxruntime uses and cached on disk
(trt_cache.py: keyed by ONNX sha256, TensorRT version, GPU name and compute capability, precision).
Building is loud and happens only at start-up or in `deead_build_engines`, never while planning.
Precision as each major expects it: TensorRT 10 builds the fp32 graph with the FP16 builder flag;
TensorRT 11 builds only strongly typed networks, so fp16 builds an fp16 copy of the graph
(trt_cache.strongly_typed_fp16_onnx). Other majors are refused (trt_cache.tensorrt_major).

At run time the hidden state stays on the GPU in two ping-pong device buffers; layers are enqueued on
one stream with named tensors (`set_tensor_address` + `execute_async_v3`), and only the head's (T, 2)
output is copied to the host, at a check. The execution contexts run one after another on that
stream, so they share one scratch allocation (user-managed device memory, sized for the largest
engine) instead of one each; host staging buffers are pinned, so the copies are truly asynchronous.
CUDA memory and streams come from cuda-python (`cuda.bindings.runtime`, the package NVIDIA's own
TensorRT samples use) rather than torch.cuda, so that a vehicle install needs no torch. Nothing here
imports tensorrt before check_cuda_device() has confirmed a driver and a GPU (load_runtime); after
that, each function imports it by name, so that the type checker verifies every TensorRT call against
the API's types (tensorrt-stubs; `make lint`).
"""
from __future__ import annotations

import ctypes
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deead_ros.engines.manifest import HIDDEN_IN, HIDDEN_OUT, TRAJECTORY, Manifest, ModelFile
from deead_ros.engines.protocol import PingPong, PingPongState, check_layer_range
from deead_ros.engines.trt_cache import (CachedPlan, PlanKey, check_cuda_device, decide, store,
                                         strongly_typed_fp16_onnx, tensorrt_major, timing_cache_path)
from deead_ros.errors import BackendUnavailableError, EngineBuildError, ModelFileError

if TYPE_CHECKING:
    import tensorrt as trt

_LOG = logging.getLogger(__name__)
WORKSPACE_MB = 1024


def load_runtime() -> Any:
    """Check the driver, tensorrt (10.x or 11.x) and cuda-python; return cuda-python's runtime bindings (untyped)."""
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
    tensorrt_major(trt.__version__)
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


class CudaMemory:
    """Every allocation, pinned host buffer and the stream of one chain, released together by close()."""

    def __init__(self, cuda: Cuda) -> None:
        self._cuda = cuda
        self._device: list[int] = []
        self._host: list[int] = []
        self.stream: Any = cuda("cudaStreamCreate", cuda.rt.cudaStreamCreate())

    def device(self, nbytes: int) -> int:
        """A device allocation of nbytes; its address."""
        pointer = int(self._cuda("cudaMalloc", self._cuda.rt.cudaMalloc(nbytes)))
        self._device.append(pointer)
        return pointer

    def pinned(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """A page-locked host array (cudaMallocHost): asynchronous copies from and to it overlap the host."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        pointer = int(self._cuda("cudaMallocHost", self._cuda.rt.cudaMallocHost(nbytes)))
        self._host.append(pointer)
        buffer = memoryview((ctypes.c_byte * nbytes).from_address(pointer)).cast("B")
        return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)

    def synchronize(self) -> None:
        self._cuda("cudaStreamSynchronize", self._cuda.rt.cudaStreamSynchronize(self.stream))

    def copy(self, destination: int, source: int, nbytes: int, kind: str) -> None:
        """Enqueue a copy on the stream; kind: cudaMemcpyHostToDevice | cudaMemcpyDeviceToHost."""
        self._cuda("cudaMemcpyAsync", self._cuda.rt.cudaMemcpyAsync(
            destination, source, nbytes, getattr(self._cuda.rt.cudaMemcpyKind, kind), self.stream))

    def close(self) -> None:
        """Wait for the stream, free every allocation, destroy the stream (idempotent)."""
        if self.stream is None:
            return
        self.synchronize()
        for pointer in self._device:
            self._cuda("cudaFree", self._cuda.rt.cudaFree(pointer))
        for pointer in self._host:
            self._cuda("cudaFreeHost", self._cuda.rt.cudaFreeHost(pointer))
        self._device, self._host = [], []
        self._cuda("cudaStreamDestroy", self._cuda.rt.cudaStreamDestroy(self.stream))
        self.stream = None


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


def _network(builder: trt.Builder, major: int) -> trt.INetworkDefinition:
    """An empty network: weakly typed on TensorRT 10 (precision by builder flag), strongly typed on 11."""
    import tensorrt as trt
    if major == 10:
        return builder.create_network(0)
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def _set_precision(config: trt.IBuilderConfig, precision: str, major: int) -> None:
    """fp32 means fp32 on both majors (TF32 matmuls differ from torch by ~1e-3); fp16 by flag on 10 only."""
    import tensorrt as trt
    config.clear_flag(trt.BuilderFlag.TF32)
    if precision == "fp16" and major == 10:
        config.set_flag(trt.BuilderFlag.FP16)    # deprecated in 10.12, removed in 11: there the graph says fp16


def _build_plan(builder: trt.Builder, logger: trt.ILogger, onnx: ModelFile, precision: str,
                timing_cache: trt.ITimingCache, prefix: str, cache_dir: Path) -> bytes:
    import tensorrt as trt
    major = tensorrt_major(trt.__version__)
    source = strongly_typed_fp16_onnx(onnx, cache_dir) if precision == "fp16" and major >= 11 else onnx.path
    network = _network(builder, major)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {source}: {errors}; re-export it with deead_export")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_MB << 20)
    _set_precision(config, precision, major)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    monitor = _progress_monitor(prefix)            # a local reference keeps it alive for the whole build
    config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build {source} at {precision}; see the TensorRT errors above")
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
        data = _build_plan(builder, logger, plan.onnx, precision, timing_cache, prefix, cache_dir)
        store(plan, data, time.perf_counter() - t0)
        _LOG.warning("%s: built in %.1f s, %.1f MB -> %s", prefix, time.perf_counter() - t0, len(data) / 1e6,
                     plan.plan_path.name)
    timing_path.write_bytes(bytes(timing_cache.serialize()))
    return plans


class TrtEngine:
    """LayerChain on TensorRT. State: which of two device hidden buffers is current (see PingPong)."""

    backend = "tensorrt"

    def __init__(self, manifest: Manifest, *, precision: str, cache_dir: Path,
                 force_engine_update: bool = False) -> None:
        cudart = load_runtime()
        import tensorrt as trt
        cuda = Cuda(cudart)
        plans = build_plans(manifest, precision=precision, cache_dir=cache_dir,
                            force_engine_update=force_engine_update, cudart=cudart)
        self.manifest = manifest
        self.num_layers = manifest.num_layers
        self.precision = precision
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._memory = CudaMemory(cuda)
        self._engines: list[trt.ICudaEngine] = []
        self._contexts: list[trt.IExecutionContext] = []       # stem, layers..., head; destroyed before engines
        try:
            self._engines = [self._load(plan) for plan in plans]
            self._contexts = self._contexts_sharing_one_scratch(self._engines)
            # pinned host staging + device buffers for the stem inputs, two hidden buffers, the trajectory
            self._inputs = {t.name: (self._memory.pinned(t.shape, t.dtype), self._device_for(t.shape, t.dtype))
                            for t in manifest.stem.inputs}
            hidden = manifest.stem.outputs[0]
            self._hidden = [self._device_for(hidden.shape, hidden.dtype) for _ in range(2)]
            traj = manifest.head.outputs[0]
            self._traj_host = self._memory.pinned(traj.shape, traj.dtype)
            self._traj_device = self._device_for(traj.shape, traj.dtype)
        except BaseException:
            self.close()
            raise
        stem, head = self._contexts[0], self._contexts[-1]
        for name, (_, device) in self._inputs.items():
            stem.set_tensor_address(name, device)
        stem.set_tensor_address(HIDDEN_OUT, self._hidden[0])
        head.set_tensor_address(TRAJECTORY, self._traj_device)
        self._pingpong = PingPong()

    def _load(self, plan: CachedPlan) -> trt.ICudaEngine:
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
        return engine

    def _contexts_sharing_one_scratch(self, engines: list[trt.ICudaEngine]) -> list[trt.IExecutionContext]:
        """One execution context per engine, all on one scratch allocation as large as the largest needs.

        The contexts run one at a time on one stream, so their scratch (activation) memory is never in use
        by two at once; without this, each of the chain's contexts would allocate its own.
        """
        import tensorrt as trt
        scratch_bytes = max(engine.device_memory_size_v2 for engine in engines)
        scratch = self._memory.device(scratch_bytes) if scratch_bytes else 0
        contexts = []
        for engine in engines:
            context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if scratch_bytes:
                context.set_device_memory(scratch, scratch_bytes)
            contexts.append(context)
        _LOG.info("TensorRT chain of %d engines shares one %.1f MB scratch allocation", len(engines),
                  scratch_bytes / 1e6)
        return contexts

    def _device_for(self, shape: tuple[int, ...], dtype: str) -> int:
        return self._memory.device(int(np.prod(shape)) * np.dtype(dtype).itemsize)

    def _execute(self, context: trt.IExecutionContext) -> None:
        if not context.execute_async_v3(int(self._memory.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed; see the TensorRT log")

    def prepare(self, feed: dict[str, np.ndarray]) -> PingPongState:
        if feed.keys() != self._inputs.keys():
            raise ValueError(f"the stem takes {sorted(self._inputs)}, got {sorted(feed)}")
        self._memory.synchronize()             # the staging buffers may still feed the previous frame's copy
        for name, array in feed.items():
            host, device = self._inputs[name]
            np.copyto(host, array)
            self._memory.copy(device, host.ctypes.data, host.nbytes, "cudaMemcpyHostToDevice")
        self._execute(self._contexts[0])
        return self._pingpong.written(0)

    def run_layers(self, state: PingPongState, start: int, stop: int) -> PingPongState:
        check_layer_range(start, stop, self.num_layers)
        slot = self._pingpong.check(state).slot
        for context in self._contexts[1 + start:1 + stop]:
            context.set_tensor_address(HIDDEN_IN, self._hidden[slot])
            context.set_tensor_address(HIDDEN_OUT, self._hidden[1 - slot])
            self._execute(context)
            slot = 1 - slot
        return self._pingpong.written(slot) if stop > start else state

    def head(self, state: PingPongState) -> np.ndarray:
        head = self._contexts[-1]
        head.set_tensor_address(HIDDEN_IN, self._hidden[self._pingpong.check(state).slot])
        self._execute(head)
        self._memory.copy(self._traj_host.ctypes.data, self._traj_device, self._traj_host.nbytes,
                          "cudaMemcpyDeviceToHost")
        self._memory.synchronize()
        return self.manifest.head_contract.waypoints(self._traj_host)   # (T, 2) m, a new array

    def close(self) -> None:
        """Destroy the contexts, then the engines, then free the memory and the stream (idempotent); the
        engine is unusable afterwards."""
        if self._memory.stream is not None:
            self._memory.synchronize()                        # nothing may still run when the contexts go
        self._contexts, self._engines = [], []                # contexts use the scratch: they go first
        self._inputs, self._hidden = {}, []                   # no view of freed pinned memory stays reachable
        self._traj_host = np.zeros(0, np.float32)
        self._memory.close()
