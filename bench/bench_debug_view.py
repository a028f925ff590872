"""What the debug image costs per frame: drawing (deead_ros.debug_view.render_debug_image) and JPEG encoding.

The issue's goal: drawing <= 2 ms at 640x360. Real frames and real plans: the demo bag's first N camera
frames planned by the demo model (deead, delta 2 m), then each drawn, interleaved, after a burn-in:
- draw 640x360: the camera frame resized to 640x360 beforehand, drawn at its size (the inset only: the
  MetaDrive camera's 5:3 image does not fit 16:9);
- draw 160x96 -> 640x384: the model-scale frame the node holds, scaled up while drawing, with the
  MetaDrive camera's projection (what deead_eval --camera metadrive draws);
- jpeg: encoding that 640x384 image (quality 80), what ~/debug/image publishes.
Each as p50 / p99 in ms and as a ratio to the runner's own p50 per frame. The last line is a JSON object.

    .venv/bin/python bench/bench_debug_view.py [--frames 200] [--bag deead_ros/bags/demo]
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deead_ros"))      # benchmark this checkout's code, not an installed copy
sys.path.insert(1, str(ROOT / "deead_lab"))       # and its lab package

from deead_ros.debug_view import encode_jpeg, render_debug_image  # noqa: E402
from deead_ros.engines import make_engine  # noqa: E402
from deead_ros.exit import ExitSettings, PriorSettings  # noqa: E402
from deead_ros.frame_assembly import model_image_hw  # noqa: E402
from deead_ros.paths import demo_manifest_path, source_commit  # noqa: E402
from deead_ros.runner import Runner  # noqa: E402
from deead_lab.eval import bag_frames, metadrive_camera  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--bag", type=Path, default=ROOT / "deead_ros" / "bags" / "demo")
    parser.add_argument("--burn-in", type=int, default=20)
    args = parser.parse_args()
    runner = Runner(make_engine("onnxruntime", demo_manifest_path(), num_threads=1), ExitSettings(delta_m=2.0),
                    PriorSettings())
    frames = list(itertools.islice(bag_frames(args.bag, runner.encoder.accel_window_s,
                                              model_image_hw(runner.encoder)), args.frames))
    plans = [runner.plan(f.inputs, ego_motion_known=f.ego_motion_known) for f in frames]
    wide = [np.asarray(Image.fromarray(f.inputs.image_rgb).resize((640, 360))) for f in frames]
    camera = metadrive_camera()

    def draw_wide(i: int) -> np.ndarray:
        return render_debug_image(wide[i], plans[i], 2.0, truth=frames[i].truth_m)

    def draw_scaled(i: int) -> np.ndarray:
        return render_debug_image(frames[i].inputs.image_rgb, plans[i], 2.0, truth=frames[i].truth_m, camera=camera,
                                  target_width=640)

    scaled = [draw_scaled(i) for i in range(len(frames))]
    variants = {"draw_640x360": draw_wide, "draw_160x96_to_640x384": draw_scaled,
                "jpeg_640x384": lambda i: encode_jpeg(scaled[i])}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in itertools.chain(range(min(args.burn_in, len(frames))), range(len(frames))):
        for name, fn in variants.items():            # interleaved: machine load hits every variant alike
            start = time.perf_counter()
            fn(i)
            times[name].append((time.perf_counter() - start) * 1e3)
    runner_p50 = float(np.median([p.total_ms for p in plans]))
    result: dict[str, Any] = {"frames": len(frames), "runner_p50_ms": runner_p50, "commit": source_commit(),
              "cpu": platform.processor() or platform.machine()}
    for name, values in times.items():
        measured = np.array(values[min(args.burn_in, len(frames)):])
        result[name] = {"p50_ms": float(np.median(measured)), "p99_ms": float(np.percentile(measured, 99)),
                        "vs_runner_p50": float(np.median(measured) / runner_p50)}
        print(f"{name:>24}: p50 {result[name]['p50_ms']:.2f} ms  p99 {result[name]['p99_ms']:.2f} ms  "
              f"({result[name]['vs_runner_p50']:.2f}x the runner's p50 {runner_p50:.2f} ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
