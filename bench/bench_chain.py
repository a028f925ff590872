"""What cutting the VLA into per-layer engines costs on ONNX Runtime (CPU, one thread by default).

Measured in one run, interleaved so that machine load hits every variant alike, medians of N runs
after a burn-in:
- chain/fused: all layers as a chain of per-layer sessions (the product's path, OrtEngine.run_layers)
  vs one fused graph of the same layers (same session options, IOBinding): the price of early exit;
- per-boundary overhead: (chain - fused) / (L - 1), per extra session call;
- head/layer: one look through the shared head vs one decoder layer (what a checkpoint costs);
- full depth: frame in -> trajectory out (encode + stem + all layers + head).
Runs any exported model (`--model DIR/manifest.json`, exported with its fused graph), else exports the
trained weights at deead_ros/models/demo/ when they exist, else a randomly initialised model of the default size
(same shapes, same cost). The frame is encoded by the model's own encoder (named in its manifest).
The last line is a JSON object.

    .venv/bin/python bench/bench_chain.py [--model DIR/manifest.json] [--runs 300] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deead_ros"))      # benchmark this checkout's code, not an installed copy
sys.path.insert(1, str(ROOT / "deead_lab"))       # and its lab package

from deead_ros.engines import make_engine  # noqa: E402
from deead_ros.engines.manifest import HIDDEN_IN, HIDDEN_OUT  # noqa: E402
from deead_ros.engines.ort_engine import open_session  # noqa: E402
from deead_ros.exit import PriorSettings  # noqa: E402
from deead_ros.model.encoding import FrameInputs, load_encoder  # noqa: E402
from deead_lab.model.export_onnx import export_pretrained, export_random  # noqa: E402
from deead_ros.paths import source_commit  # noqa: E402

DEMO_WEIGHTS = ROOT / "deead_ros" / "models" / "demo" / "vla.safetensors"


def demo_frame() -> FrameInputs:
    rng = np.random.default_rng(0)
    route = np.stack([np.linspace(0, 80, 41), 0.002 * np.linspace(0, 80, 41) ** 2], axis=1)
    return FrameInputs(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8), route, 8.0, 0.05, "follow the lane")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="measured runs per variant (default: %(default)s)")
    parser.add_argument("--burn-in", type=int, default=30, help="unmeasured runs first (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="manifest.json of an exported model (with fused.onnx)")
    parser.add_argument("--weights", type=Path, default=DEMO_WEIGHTS, help="vla.safetensors to export and benchmark")
    parser.add_argument("--out", type=Path, help="write bench_chain_demo.json (the demo weights) or "
                                                 "bench_chain_<arch>.json (--model) here (docs/ for results.md)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_chain_") as tmp:
        trained = args.weights.is_file()
        manifest = args.model or (export_pretrained(args.weights, Path(tmp), log=lambda line: None) if trained
                                  else export_random(Path(tmp), log=lambda line: None))
        weights = "as exported" if args.model else "trained" if trained else "random"
        engine = make_engine("onnxruntime", manifest, num_threads=args.threads)
        if engine.manifest.fused is None:
            print(f"bench_chain: {manifest} has no fused graph; export it without --no-fused", file=sys.stderr)
            return 2
        encoder = load_encoder(engine.manifest.encoder.name, engine.manifest.encoder.config)
        arch = engine.manifest.arch
        fused = open_session(engine.manifest.fused.path, args.threads)
        frame, n = demo_frame(), engine.num_layers
        route = PriorSettings().route_ahead(frame.route_ego_m)

        def prepare() -> object:
            return engine.prepare(encoder.encode(frame, route))

        hidden = ort.OrtValue.ortvalue_from_numpy(np.random.default_rng(1).standard_normal(
            engine.manifest.fused.inputs[0].shape).astype(np.float32))
        fused_out = ort.OrtValue.ortvalue_from_shape_and_type(engine.manifest.fused.outputs[0].shape, np.float32,
                                                              "cpu", 0)
        binding = fused.io_binding()
        binding.bind_ortvalue_input(HIDDEN_IN, hidden)
        binding.bind_ortvalue_output(HIDDEN_OUT, fused_out)

        def timed(fn, *a) -> tuple[object, float]:
            """(fn's result, its wall time in ms)."""
            t0 = time.perf_counter()
            out = fn(*a)
            return out, (time.perf_counter() - t0) * 1e3

        samples: dict[str, list[float]] = {k: [] for k in ("fused", "chain", "layer", "head", "stem", "full")}
        for run in range(args.burn_in + args.runs):
            t = {"fused": timed(fused.run_with_iobinding, binding)[1]}
            state, t["stem"] = timed(prepare)
            t["chain"] = timed(engine.run_layers, state, 0, n)[1]
            state, layer_ms = prepare(), []
            for i in range(n):
                state, ms = timed(engine.run_layers, state, i, i + 1)
                layer_ms.append(ms)
            t["layer"] = float(np.median(layer_ms))
            t["head"] = timed(engine.head, state)[1]
            t["full"] = timed(lambda: engine.head(engine.run_layers(prepare(), 0, n)))[1]
            if run >= args.burn_in:
                for key, value in t.items():
                    samples[key].append(value)
        engine.close()

    p50 = {k: float(np.median(v)) for k, v in samples.items()}
    p99 = {k: float(np.percentile(v, 99)) for k, v in samples.items()}
    result = {
        "chain_over_fused": round(p50["chain"] / p50["fused"], 3),
        "head_over_layer": round(p50["head"] / p50["layer"], 3),
        "full_depth_ms": round(p50["full"], 3),
        "boundary_us": round((p50["chain"] - p50["fused"]) / (n - 1) * 1e3, 1),
        "layer_ms": round(p50["layer"], 3), "head_ms": round(p50["head"], 3), "stem_ms": round(p50["stem"], 3),
        "fused_ms": round(p50["fused"], 3), "chain_ms": round(p50["chain"], 3), "num_layers": n,
        "weights": weights, "model": engine.manifest.model_version,
        "threads": args.threads, "runs": args.runs,
    }
    print(f"{cpu_name()} | onnxruntime {ort.__version__} CPU, {args.threads} thread(s), fp32 | "
          f"{engine.manifest.model_version}, {n} layers | @{source_commit() or 'unknown'} | "
          f"{args.runs} runs after {args.burn_in} burn-in")
    print(f"layers, chain of {n} per-layer sessions: p50 {p50['chain']:.3f} ms  p99 {p99['chain']:.3f} ms")
    print(f"layers, one fused graph:                 p50 {p50['fused']:.3f} ms  p99 {p99['fused']:.3f} ms")
    print(f"  chain/fused {result['chain_over_fused']:.3f}x (target <= 1.05); per boundary "
          f"{result['boundary_us']:.1f} us")
    print(f"one layer {p50['layer']:.3f} ms | head {p50['head']:.3f} ms -> head/layer "
          f"{result['head_over_layer']:.3f} | stem + encode {p50['stem']:.3f} ms")
    print(f"full depth, frame -> trajectory: p50 {p50['full']:.3f} ms  p99 {p99['full']:.3f} ms")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = arch if args.model else "demo" if trained else f"{arch}_random"
        (args.out / f"bench_chain_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
