"""ONNX Runtime backend: one InferenceSession per exported graph, chained through two bound buffers.

Measured on this project's CPU (2-core EPYC, 24-layer demo model, one thread; bench/bench_chain.py):
- IOBinding with the hidden state kept in two OrtValues that the layers write in turn beats
  `session.run` with numpy arrays (chain/fused 1.09 vs 1.14) and `run_with_ort_values` (1.27);
- turning the per-session memory arena off lowers chain/fused by another ~3% (to ~1.07): with arenas
  every session keeps its own activation block (25 blocks, cold in L2), while malloc hands each
  session the block the previous one just freed;
- a global thread pool (`use_per_session_threads = False`) made no measurable difference: with one
  thread per session there is no pool to share;
- intra-op spinning is off: with it on and torch in the same process the chain ran 3x slower.
What is left (~20 us per layer boundary against a 0.27 ms layer) is onnxruntime's fixed cost per
`Run` (~7 us for a layer-sized graph, measured with compute-free graphs) plus caches refilled after
each return to Python.

On a GPU (execution_provider cuda or tensorrt, onnxruntime-gpu) the two hidden OrtValues live on the
device, so the layers pass the hidden state to each other without a host copy; the stem's inputs are
copied up once per frame and only the head's (T, 2) trajectory comes down, at a check.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from deead_ros.engines.manifest import HIDDEN_IN, HIDDEN_OUT, TRAJECTORY, Manifest
from deead_ros.engines.protocol import CPU, CUDA, TENSORRT, PingPong, PingPongState, check_layer_range
from deead_ros.errors import BackendUnavailableError, ConfigError


def session_options(num_threads: int) -> ort.SessionOptions:
    """The options every session of a chain uses (and the benchmark's fused baseline)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = num_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = False
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def resolve_providers(requested: list[str] | None, precision: str, cache_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """Check the requested providers exist in this onnxruntime build and attach their options.

    Raises:
        BackendUnavailableError: a requested provider is not in this build.
        ConfigError: fp16 without the TensorRT provider (the CPU and CUDA providers run the fp32 graphs).
    """
    names = list(requested or [CPU])
    available = ort.get_available_providers()
    missing = [p for p in names if p not in available]
    if missing:
        raise BackendUnavailableError(
            f"onnxruntime execution provider(s) {missing} are not in this onnxruntime build (it has {available}); "
            "install onnxruntime-gpu built for this CUDA/TensorRT, or set execution_provider: cpu (the default)")
    if precision == "fp16" and TENSORRT not in names:
        raise ConfigError("precision='fp16' on onnxruntime needs TensorrtExecutionProvider; the CPU and CUDA "
                          "providers run the fp32 graphs (use precision fp32, or backend tensorrt)")
    options: dict[str, dict[str, Any]] = {
        TENSORRT: {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(cache_dir)},
        CUDA: {"use_tf32": 0},              # fp32 means fp32: TF32 matmuls differ from torch by ~1e-3
    }
    return [(name, options.get(name, {})) for name in names]


def open_session(path: Path, num_threads: int = 1,
                 providers: list[tuple[str, dict[str, Any]]] | None = None) -> ort.InferenceSession:
    """Create a session and verify that its first provider is the one asked for.

    onnxruntime-gpu silently falls back to the CPU when CUDA or TensorRT cannot start; this turns that
    into an error.
    """
    providers = providers or [(CPU, {})]
    session = ort.InferenceSession(str(path), session_options(num_threads), providers=providers)
    wanted, got = providers[0][0], session.get_providers()
    if got[0] != wanted:
        raise BackendUnavailableError(f"onnxruntime fell back to {got} for {path.name} although {wanted} was asked "
                                      "for; check the CUDA/TensorRT libraries and the driver (nvidia-smi)")
    return session


class OrtEngine:
    """LayerChain on ONNX Runtime. State: which of two hidden OrtValues is current (see PingPong)."""

    backend = "onnxruntime"

    def __init__(self, manifest: Manifest, *, num_threads: int = 1, precision: str = "fp32",
                 providers: list[str] | None = None, engine_cache_dir: Path | None = None) -> None:
        provider_options = resolve_providers(providers, precision, engine_cache_dir or manifest.path.parent)
        self.manifest = manifest
        self.num_layers = manifest.num_layers
        self.precision = precision
        sessions = [open_session(f.path, num_threads, provider_options) for f in manifest.engine_files]
        self._stem, *self._layers, self._head = sessions
        on_gpu = provider_options[0][0] != CPU
        device = ("cuda", 0) if on_gpu else ("cpu", 0)     # keep the hidden states where the layers run
        hidden = manifest.stem.outputs[0]
        self._hidden = [ort.OrtValue.ortvalue_from_shape_and_type(hidden.shape, np.float32, *device) for _ in range(2)]
        trajectory = manifest.head.outputs[0]
        self._trajectory = ort.OrtValue.ortvalue_from_shape_and_type(trajectory.shape, np.float32, "cpu", 0)
        self._stem_binding = self._stem.io_binding()
        self._stem_binding.bind_ortvalue_output(HIDDEN_OUT, self._hidden[0])
        # bindings[i][slot]: layer i reading hidden[slot] and writing hidden[1 - slot]
        self._layer_bindings = [[self._bind(s, self._hidden[slot], HIDDEN_OUT, self._hidden[1 - slot])
                                 for slot in (0, 1)] for s in self._layers]
        self._head_bindings = [self._bind(self._head, self._hidden[slot], TRAJECTORY, self._trajectory)
                               for slot in (0, 1)]
        self._pingpong = PingPong()

    @staticmethod
    def _bind(session: ort.InferenceSession, source: ort.OrtValue, output: str, target: ort.OrtValue) -> Any:
        binding = session.io_binding()
        binding.bind_ortvalue_input(HIDDEN_IN, source)
        binding.bind_ortvalue_output(output, target)
        return binding

    def prepare(self, feed: dict[str, np.ndarray]) -> PingPongState:
        for name, array in feed.items():
            self._stem_binding.bind_cpu_input(name, array)
        self._stem.run_with_iobinding(self._stem_binding)
        return self._pingpong.written(0)

    def run_layers(self, state: PingPongState, start: int, stop: int) -> PingPongState:
        check_layer_range(start, stop, self.num_layers)
        slot = self._pingpong.check(state).slot
        for session, bindings in zip(self._layers[start:stop], self._layer_bindings[start:stop]):
            session.run_with_iobinding(bindings[slot])
            slot = 1 - slot
        return self._pingpong.written(slot) if stop > start else state

    def head(self, state: PingPongState) -> np.ndarray:
        self._head.run_with_iobinding(self._head_bindings[self._pingpong.check(state).slot])
        return self.manifest.head_contract.waypoints(self._trajectory.numpy())   # (T, 2) m, a new array

    def close(self) -> None:
        """Drop the sessions and buffers (onnxruntime frees them with the last reference)."""
        self._stem = self._head = None
        self._layers, self._layer_bindings, self._head_bindings, self._hidden = [], [], [], []
