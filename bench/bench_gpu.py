"""The per-layer chain on a GPU: what early exit costs and saves there, per backend found on this machine.

For each backend that runs here (onnxruntime with its CUDA provider, TensorRT fp32 and fp16, and
onnxruntime on the CPU as the same-machine baseline), on the demo model exported with its fused graph
and the frames of the committed test split (bench/test_split), medians of N runs after a burn-in:
- chain/fused: all layers as the chain of per-layer engines vs one fused graph of the same layers
  (onnxruntime backends; the price of being able to stop after any layer: a launch per layer);
- one check in layers: the head plus its device-to-host read, in units of one layer's time;
- deead at the recommended delta (the parameter table's exit.delta_m) vs full depth, per frame through
  the Runner (encode, stem, layers, checks, validation): p50 and p95, and the mean exit layer.
Every figure is timed after a device-to-host read, so the GPU's queue is empty when the clock stops.
Writes the JSON (docs/gpu.json from scripts/gpu_check.sh) with the GPU's name, driver and CUDA versions.

    python bench/bench_gpu.py --out docs/gpu.json [--runs 200] [--frames 60]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "deead_ros"), str(ROOT / "deead_lab")]      # measure this checkout

from deead_ros.engines import LayerChain, make_engine  # noqa: E402
from deead_ros.engines.manifest import HIDDEN_IN, HIDDEN_OUT  # noqa: E402
from deead_ros.errors import DeeadError  # noqa: E402
from deead_ros.exit import ExitSettings, FullPolicy, PriorSettings  # noqa: E402
from deead_ros.model.encoding import FrameInputs  # noqa: E402
from deead_ros.paths import source_commit  # noqa: E402
from deead_ros.runner import Runner  # noqa: E402

DEMO_WEIGHTS = ROOT / "deead_ros" / "models" / "demo" / "vla.safetensors"
TEST_SPLIT = ROOT / "bench" / "test_split"


def gpu_identity() -> dict[str, str]:
    """The GPU's name, the driver version and the CUDA version the driver supports (nvidia-smi)."""
    query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()[0]
    name, driver = (part.strip() for part in query.split(","))
    header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=True, timeout=60).stdout
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return {"gpu_name": name, "driver_version": driver, "cuda_version": cuda.group(1) if cuda else "unknown"}


def backends() -> list[tuple[str, dict[str, str]]]:
    """(label, make_engine arguments) for every backend this machine can run, the CPU baseline first."""
    import onnxruntime as ort
    found = [("onnxruntime_cpu", {"backend": "onnxruntime", "execution_provider": "cpu"})]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        found.append(("onnxruntime_cuda", {"backend": "onnxruntime", "execution_provider": "cuda"}))
    spec = importlib.util.find_spec("tensorrt")
    if spec is not None and spec.origin is not None:          # not the type stubs' bare folder
        found += [(f"tensorrt_{p}", {"backend": "tensorrt", "precision": p}) for p in ("fp32", "fp16")]
    return found


def timed_ms(fn: Callable[[], Any], runs: int, burn_in: int) -> np.ndarray:
    samples = []
    for run in range(burn_in + runs):
        t0 = time.perf_counter()
        fn()
        if run >= burn_in:
            samples.append((time.perf_counter() - t0) * 1e3)
    return np.array(samples)


def fused_ms(chain: LayerChain, execution_provider: str, runs: int, burn_in: int) -> np.ndarray | None:
    """One fused graph of all layers on the chain's onnxruntime provider, IO bound where the layers run."""
    if chain.backend != "onnxruntime" or chain.manifest.fused is None:
        return None
    import onnxruntime as ort

    from deead_ros.engines import EXECUTION_PROVIDERS
    from deead_ros.engines.ort_engine import open_session, resolve_providers
    providers = resolve_providers(list(EXECUTION_PROVIDERS[execution_provider]), "fp32", chain.manifest.path.parent)
    session = open_session(chain.manifest.fused.path, 1, providers)
    device = ("cuda", 0) if execution_provider != "cpu" else ("cpu", 0)
    spec_in, spec_out = chain.manifest.fused.inputs[0], chain.manifest.fused.outputs[0]
    hidden = ort.OrtValue.ortvalue_from_numpy(
        np.random.default_rng(1).standard_normal(spec_in.shape).astype(np.float32), *device)
    out = ort.OrtValue.ortvalue_from_shape_and_type(spec_out.shape, np.float32, *device)
    binding = session.io_binding()
    binding.bind_ortvalue_input(HIDDEN_IN, hidden)
    binding.bind_ortvalue_output(HIDDEN_OUT, out)
    return timed_ms(lambda: session.run_with_iobinding(binding), runs, burn_in)


def measure(label: str, args: dict[str, str], manifest: Path, frames: list[FrameInputs], cache_dir: Path,
            runs: int, burn_in: int) -> dict[str, Any]:
    chain = make_engine(manifest_path=manifest, engine_cache_dir=cache_dir, **args)
    try:
        runner = Runner(chain, ExitSettings(), PriorSettings())
        frame, n = frames[0], chain.num_layers
        route = PriorSettings().route_ahead(frame.route_ego_m)
        feed = runner.encoder.encode(frame, None if isinstance(route, str) else route)
        state = chain.prepare(feed)
        head_p50 = float(np.median(timed_ms(lambda: chain.head(state), runs, burn_in)))   # head + its read
        # stem + all layers + one check, minus stem + one check: the layers alone, finished on the device
        stem_and_check = timed_ms(lambda: chain.head(chain.prepare(feed)), runs, burn_in)
        all_layers = timed_ms(lambda: chain.head(chain.run_layers(chain.prepare(feed), 0, n)), runs, burn_in)
        chain_p50 = float(np.median(all_layers) - np.median(stem_and_check))
        fused = fused_ms(chain, args.get("execution_provider", "cpu"), runs, burn_in)
        plans: dict[str, list[float]] = {name: [] for name in ("deead", "full")}
        exit_layers: list[int] = []
        for _ in range(2):                                        # the first pass warms every path up
            for name in plans:
                plans[name].clear()
            exit_layers.clear()
            for f in frames:
                for name, policy in (("deead", None), ("full", FullPolicy())):
                    t0 = time.perf_counter()
                    result = runner.plan(f, policy=policy)
                    plans[name].append((time.perf_counter() - t0) * 1e3)
                    if name == "deead":
                        exit_layers.append(result.trace.exit_layer)
        p = {name: (float(np.median(v)), float(np.percentile(v, 95))) for name, v in plans.items()}
    finally:
        chain.close()
    result: dict[str, Any] = {
        "chain_ms": round(chain_p50, 4), "layer_ms": round(chain_p50 / n, 4), "head_and_read_ms": round(head_p50, 4),
        "check_in_layers": round(head_p50 / (chain_p50 / n), 2),
        "deead_p50_ms": round(p["deead"][0], 3), "deead_p95_ms": round(p["deead"][1], 3),
        "full_p50_ms": round(p["full"][0], 3), "full_p95_ms": round(p["full"][1], 3),
        "deead_over_full_p50": round(p["deead"][0] / p["full"][0], 3),
        "deead_over_full_p95": round(p["deead"][1] / p["full"][1], 3),
        "mean_exit_layer": round(float(np.mean(exit_layers)), 2), "num_layers": n,
    }
    if fused is not None:
        result |= {"fused_ms": round(float(np.median(fused)), 4),
                   "chain_over_fused": round(chain_p50 / float(np.median(fused)), 3)}
    print(f"{label:18s} chain {chain_p50:7.3f} ms ({n} layers)"
          + (f", fused {result['fused_ms']:.3f} ms -> chain/fused {result['chain_over_fused']:.2f}x"
             if fused is not None else "")
          + f" | one check = {result['check_in_layers']:.2f} layers | deead/full p50 "
            f"{result['deead_over_full_p50']:.2f}x p95 {result['deead_over_full_p95']:.2f}x "
            f"(exit at {result['mean_exit_layer']:.1f}/{n})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results here as JSON (docs/gpu.json)")
    parser.add_argument("--runs", type=int, default=200, help="measured runs per figure (default: %(default)s)")
    parser.add_argument("--burn-in", type=int, default=20, help="unmeasured runs first (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=60, help="test-split frames planned per policy "
                                                               "(default: %(default)s)")
    args = parser.parse_args(argv)
    from deead_lab.model.export_onnx import export_pretrained
    from deead_lab.report import test_frames

    identity = gpu_identity()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        manifest = export_pretrained(DEMO_WEIGHTS, Path(tmp) / "model", log=lambda line: None)
        probe = make_engine("onnxruntime", manifest)
        accel_window_s = Runner(probe, ExitSettings(), PriorSettings()).encoder.accel_window_s
        probe.close()
        frames = test_frames(sorted(TEST_SPLIT.rglob("ep_*.npz")), accel_window_s).frames[:args.frames]
        print(f"{identity['gpu_name']} | driver {identity['driver_version']} | CUDA {identity['cuda_version']} | "
              f"@{source_commit() or 'unknown'} | {len(frames)} frames, {args.runs} runs after {args.burn_in}")
        results: dict[str, Any] = {}
        for label, engine_args in backends():
            try:
                results[label] = measure(label, engine_args, manifest, frames, Path(tmp) / "cache", args.runs,
                                         args.burn_in)
            except DeeadError as err:                  # a backend that cannot start here says why, in the JSON
                results[label] = {"error": str(err)}
                print(f"{label:18s} not measured: {err}")
    report = {**identity, "commit": source_commit() or "unknown", "delta_m": ExitSettings().delta_m,
              "frames": len(frames), "runs": args.runs, "backends": results,
              "node_latency": {"measured": False, "reason": "bench/bench_ros.py measures the node's camera-stamp-to-"
                               "trajectory latency with a ROS 2 install and the built messages; this venv has neither"}}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
