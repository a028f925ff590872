"""Soak: replay the demo bag in a loop into deead_node for a while; watch memory, latency and counters.

    python bench/soak.py --minutes 30        # the report's run
    python bench/soak.py --minutes 0.3       # the short version the test suite runs

Samples the node's RSS (/proc) and its exit diagnostics every --sample-s seconds, writes
docs/soak.json and docs/soak.png (with --out), and ends with one JSON line:
`minutes`, `rss_growth_pct` (after warm-up), `frames_unaccounted` (received - planned - dropped, from
the node's own /diagnostics counters), plus latency p50 early vs late.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deead_ros"))    # measure this checkout
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "deead_lab"))    # and its lab package

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from deead_ros.engines.manifest import load_manifest  # noqa: E402
from deead_ros.paths import demo_manifest_path, share_dir  # noqa: E402
from deead_ros.ros.demo import NODE, node_command, node_statuses  # noqa: E402
from deead_ros_msgs.msg import ExitDiagnostics  # noqa: E402
from deead_lab.proc_stats import rss_mb  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--bag", type=Path, default=share_dir() / "bags" / "demo")
    parser.add_argument("--model", default="", help="manifest.json (default: the installed demo model)")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="write soak.json and soak.png here")
    parser.add_argument("--param", nargs="*", default=[], metavar="NAME:=VALUE", help="extra node parameters")
    args = parser.parse_args(argv)
    parameters = {"camera_format": "compressed", "diagnostics.period_s": 1.0,
                  **dict(item.split(":=", 1) for item in args.param)}
    if args.model:
        parameters["model_file_path"] = args.model
    model_version = load_manifest(args.model or demo_manifest_path(), verify=False).model_version
    node = subprocess.Popen(node_command(parameters))
    rclpy.init()
    listener = rclpy.create_node("soak_listener")
    latencies: list[float] = []
    counters: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for values in node_statuses(msg).values():
            counters.update(values)

    listener.create_subscription(ExitDiagnostics, f"/{NODE}/output/exit_diagnostics",
                                 lambda m: latencies.append(m.total_ms), 50)
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    duration_s = args.minutes * 60
    replay = subprocess.Popen([sys.executable, "-m", "deead_ros.ros.replay", str(args.bag), "--loop", "--rate",
                               str(args.rate), "--duration", str(duration_s), "--wait-for-subscribers", "30"],
                              stdout=subprocess.DEVNULL)
    samples = []
    start = time.monotonic()
    next_sample = start + args.sample_s
    try:
        while replay.poll() is None:
            if node.poll() is not None:
                print(f"soak: deead_node exited with code {node.returncode} (its log is above)", file=sys.stderr)
                return 1
            rclpy.spin_once(listener, timeout_sec=0.05)
            if time.monotonic() >= next_sample:
                window = latencies[-200:]
                samples.append({"t_s": time.monotonic() - start, "rss_mb": rss_mb(node.pid),
                                "planned": int(counters.get("frames_planned", 0)),
                                "p50_ms": float(np.median(window)) if window else float("nan"),
                                "p95_ms": float(np.percentile(window, 95)) if window else float("nan")})
                print(f"[soak] {samples[-1]['t_s']:6.0f} s  RSS {samples[-1]['rss_mb']:.1f} MB  planned "
                      f"{samples[-1]['planned']}  p50 {samples[-1]['p50_ms']:.1f} ms", flush=True)
                next_sample += args.sample_s
        settle = time.monotonic() + 3.0                   # two more /diagnostics periods
        while time.monotonic() < settle:
            rclpy.spin_once(listener, timeout_sec=0.05)
    finally:
        replay.kill()
        node.send_signal(signal.SIGINT)
        node.wait(timeout=15)
        listener.destroy_node()
        rclpy.try_shutdown()
    if len(samples) < 2:
        print("soak: too short to sample twice; raise --minutes", file=sys.stderr)
        return 2
    received = int(counters.get("frames_received", 0))
    dropped = sum(int(v) for k, v in counters.items() if k.startswith("dropped_"))
    unaccounted = received - int(counters.get("frames_planned", 0)) - dropped
    warm = samples[max(1, len(samples) // 5)]                # after warm-up: a fifth of the run
    growth = 100.0 * (samples[-1]["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"]
    thirds = np.array_split([s["p50_ms"] for s in samples], 3)
    result = {"minutes": round(args.minutes, 2), "rss_growth_pct": round(growth, 2),
              "frames_unaccounted": unaccounted, "frames_received": received, "frames_dropped": dropped,
              "drops": {k.removeprefix("dropped_"): int(v) for k, v in counters.items()
                        if k.startswith("dropped_") and int(v)},
              "rss_mb_after_warmup": round(warm["rss_mb"], 1), "rss_mb_end": round(samples[-1]["rss_mb"], 1),
              "latency_p50_first_third_ms": round(float(np.nanmedian(thirds[0])), 2),
              "latency_p50_last_third_ms": round(float(np.nanmedian(thirds[-1])), 2),
              "load_average_15min": round(os.getloadavg()[2], 1)}        # other jobs on the machine meanwhile
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        written = {"model_version": model_version, "result": result, "samples": samples}
        (args.out / "soak.json").write_text(json.dumps(written, indent=1))
        plot(samples, args.out / "soak.png")
    print(json.dumps(result))
    return 0


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    axes[0].plot(t, [s["rss_mb"] for s in samples])
    axes[0].set(xlabel="minutes", ylabel="node RSS (MB)", title="memory")
    axes[1].plot(t, [s["p50_ms"] for s in samples], label="p50")
    axes[1].plot(t, [s["p95_ms"] for s in samples], label="p95")
    axes[1].set(xlabel="minutes", ylabel="ms", title="planning latency")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
