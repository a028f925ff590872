"""Backends that run a VLA as a chain of per-layer engines behind one protocol (see protocol.py).

Importing this package imports no torch, onnxruntime, tensorrt or rclpy: `make_engine` imports the
chosen backend's module only when it is asked for.
"""
from __future__ import annotations

import os
from pathlib import Path

from deead_ros.engines.manifest import HeadContract, Manifest, TensorSpec, load_manifest
from deead_ros.engines.protocol import BACKENDS, EXECUTION_PROVIDERS, PRECISIONS, LayerChain
from deead_ros.errors import ConfigError

__all__ = ["BACKENDS", "EXECUTION_PROVIDERS", "PRECISIONS", "HeadContract", "LayerChain", "Manifest", "TensorSpec",
           "load_manifest", "make_engine"]


def make_engine(backend: str, manifest_path: str | os.PathLike[str], *, num_threads: int = 1, precision: str = "fp32",
                engine_cache_dir: str | os.PathLike[str] | None = None, force_engine_update: bool = False,
                execution_provider: str = "cpu") -> LayerChain:
    """Open the exported model at `manifest_path` (manifest.json or its directory) on one backend.

    Args:
        backend: torch | onnxruntime | tensorrt.
        num_threads: CPU threads per operator (torch and onnxruntime).
        precision: fp32 | fp16 (fp16: tensorrt, or onnxruntime with its TensorRT provider).
        engine_cache_dir: where TensorRT plans are cached (default: <manifest dir>/trt_cache).
        force_engine_update: rebuild TensorRT plans even when the cache matches.
        execution_provider: where onnxruntime runs: cpu | cuda | tensorrt (EXECUTION_PROVIDERS; the GPU ones
            need onnxruntime-gpu and an NVIDIA driver). Other backends ignore it.
    Raises:
        ConfigError: an unknown backend, precision or execution provider, or a bad thread count.
        ModelFileError: the manifest or a file it lists is missing or modified.
        BackendUnavailableError: the backend's library or device is missing on this machine.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend='{backend}' is unknown; use one of: {', '.join(BACKENDS)} (case sensitive)")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision='{precision}' is unknown; use one of: {', '.join(PRECISIONS)}")
    if execution_provider not in EXECUTION_PROVIDERS:
        raise ConfigError(f"execution_provider='{execution_provider}' is unknown; use one of: "
                          f"{', '.join(EXECUTION_PROVIDERS)}")
    if num_threads < 1:
        raise ConfigError(f"num_threads={num_threads} must be >= 1")
    manifest = load_manifest(manifest_path)
    if backend == "torch":
        from deead_ros.engines.torch_engine import TorchEngine
        return TorchEngine(manifest, num_threads=num_threads, precision=precision)
    if backend == "onnxruntime":
        from deead_ros.engines.ort_engine import OrtEngine
        return OrtEngine(manifest, num_threads=num_threads, precision=precision,
                         providers=list(EXECUTION_PROVIDERS[execution_provider]),
                         engine_cache_dir=_cache_dir(manifest, engine_cache_dir))
    from deead_ros.engines.trt_engine import TrtEngine
    return TrtEngine(manifest, precision=precision, cache_dir=_cache_dir(manifest, engine_cache_dir),
                     force_engine_update=force_engine_update)


def _cache_dir(manifest: Manifest, engine_cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(engine_cache_dir) if engine_cache_dir else manifest.path.parent / "trt_cache"
