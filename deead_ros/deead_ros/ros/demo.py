"""The demo: start deead_node, replay the bundled bag into it twice, and report what it published.

Pass 1 runs the node at full depth (exit.policy = full), pass 2 with DeeAD early exit, switched
on the running node through its parameter service, as an engineer would tune it. Every figure
is measured from the node's own messages (trajectory, exit diagnostics, /diagnostics). The last
line is a JSON object for scripts; `--out` writes it with each pass's figures (`make demo`:
docs/demo.json, where the README's demo figures come from).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from deead_ros.exit.metrics import l2_at_m
from deead_ros.files import write_atomic
from deead_ros.frame_assembly import path_points, stamp_s
from deead_ros.engines.manifest import load_manifest
from deead_ros.parameters import default
from deead_ros.paths import demo_manifest_path, share_dir, source_commit
from deead_ros.ros.dds import use_localhost_profile
from deead_ros import bags as topics
from deead_ros_msgs.msg import ExitDiagnostics

NODE = "deead_node"


def node_command(parameters: dict[str, object], params_file: Path | None = None,
                 cameras: Sequence[str] = ()) -> list[str]:
    """deead_node as a process with the installed defaults (or params_file), its inputs remapped to the bag's topics.

    cameras: several cameras (the `cameras` parameter is set from them): each one's image and CameraInfo
    from /camera/<name>/, and the IMU.
    """
    command = [sys.executable, "-m", "deead_ros.ros.node", "--ros-args", "--params-file",
               str(params_file or share_dir() / "config" / "deead_node.param.yaml")]
    for name, value in {**parameters, **({"cameras": f"[{','.join(cameras)}]"} if cameras else {})}.items():
        command += ["-p", f"{name}:={value}"]
    raw = parameters.get("camera_format") == "raw"
    remaps = {"image": topics.CAMERA_RAW if raw else topics.CAMERA_COMPRESSED, "route": topics.ROUTE,
              "odometry": topics.ODOMETRY, "command": topics.COMMAND, "imu": topics.IMU}
    for camera in cameras:
        compressed, raw_topic, info = topics.camera_topics(camera)
        remaps |= {f"{camera}/image": raw_topic if raw else compressed, f"{camera}/camera_info": info}
    for name, topic in remaps.items():
        command += ["-r", f"~/input/{name}:={topic}"]
    return command


def node_statuses(msg: DiagnosticArray) -> dict[str, dict[str, str]]:
    """deead_node's statuses in a /diagnostics message: {concern: {key: value}}."""
    return {status.name.split(": ", 1)[-1]: {kv.key: kv.value for kv in status.values}
            for status in msg.status if status.name.startswith(NODE)}


class Listener(Node):
    """Collects the node's outputs and the bag's ground truth, keyed by camera stamp."""

    def __init__(self) -> None:
        super().__init__("deead_demo_listener")
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.trajectories: dict[float, np.ndarray] = {}
        self.exits: dict[float, ExitDiagnostics] = {}
        self.truths: dict[float, np.ndarray] = {}
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.create_subscription(PathMsg, f"/{NODE}/output/trajectory", self._on_trajectory, qos)
        self.create_subscription(ExitDiagnostics, f"/{NODE}/output/exit_diagnostics", self._on_exit, qos)
        self.create_subscription(PathMsg, topics.GROUND_TRUTH, self._on_truth, qos)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.set_params = self.create_client(SetParameters, f"/{NODE}/set_parameters")

    def _on_trajectory(self, msg: PathMsg) -> None:
        self.trajectories[stamp_s(msg.header.stamp)] = path_points(msg)

    def _on_exit(self, msg: ExitDiagnostics) -> None:
        self.exits[stamp_s(msg.header.stamp)] = msg

    def _on_truth(self, msg: PathMsg) -> None:
        self.truths[stamp_s(msg.header.stamp)] = path_points(msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.diagnostics.update(node_statuses(msg))

    def reset(self) -> None:
        self.trajectories, self.exits, self.truths = {}, {}, {}


def spin_until(executor, condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()


def set_parameters(executor, listener: Listener, values: dict, timeout_s: float = 10.0) -> None:
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    future = listener.set_params.call_async(request)
    if not spin_until(executor, future.done, timeout_s):
        raise RuntimeError(f"deead_node did not answer set_parameters within {timeout_s} s")
    failed = [r.reason for r in future.result().results if not r.successful]
    if failed:
        raise RuntimeError(f"deead_node refused {values}: {failed}")


def replay_pass(executor, listener: Listener, bag: Path, rate: float, frames: int, timeout_s: float) -> dict:
    """Replay the bag once; return the node's outputs for this pass."""
    listener.reset()
    replay = subprocess.Popen([sys.executable, "-m", "deead_ros.ros.replay", str(bag), "--rate", str(rate),
                               "--wait-for-subscribers", "10"], stdout=subprocess.DEVNULL)
    spin_until(executor, lambda: replay.poll() is not None, timeout_s)
    if replay.poll() is None:
        replay.kill()
        raise RuntimeError(f"replay did not finish within {timeout_s} s")
    spin_until(executor, lambda: len(listener.exits) >= frames, 3.0)   # the last frames still in flight
    return {"exits": dict(listener.exits), "trajectories": dict(listener.trajectories),
            "truths": dict(listener.truths)}


def summarise(result: dict, frames: int, dt_s: float) -> dict:
    exits = list(result["exits"].values())
    layers = np.array([m.exit_layer for m in exits])
    l2 = [l2_at_m(result["trajectories"][s], result["truths"][s], dt_s, 3.0)
          for s in result["trajectories"] if s in result["truths"]]
    return {"frames_sent": frames, "frames_planned": len(exits), "frames_dropped": frames - len(exits),
            "mean_exit_layer": float(layers.mean()), "num_layers": int(exits[0].num_layers),
            "layer_sparsity": float(1 - layers.mean() / exits[0].num_layers),
            "latency_p50_ms": float(np.median([m.total_ms for m in exits])),
            "latency_p95_ms": float(np.percentile([m.total_ms for m in exits], 95)),
            "l2_3s_m": float(np.mean(l2)) if l2 else float("nan"),
            "early_exits": int(sum(m.exited_early for m in exits))}


def private_domain() -> str:
    """This run's ROS domain: ROS_DOMAIN_ID when the user set it, else one drawn at random (1-100), so that another
    deead_node on this machine (a second demo, a benchmark) cannot answer for ours."""
    return os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))


def check_own_outputs(figures: dict, policy: str, domain: str) -> None:
    """Refuse figures that cannot be this node's: more plans than frames sent, or early exits at full depth."""
    if figures["frames_planned"] > figures["frames_sent"] or (policy == "full" and figures["early_exits"]):
        raise RuntimeError(f"{figures['frames_planned']} plans ({figures['early_exits']} early exits) for "
                           f"{figures['frames_sent']} frames under exit.policy {policy}: another deead_node publishes "
                           f"on ROS domain {domain}; run the demo on a domain of its own (ROS_DOMAIN_ID=N)")


def count_camera_frames(bag: Path) -> int:
    from rosbags.highlevel import AnyReader
    with AnyReader([bag]) as reader:
        return sum(c.msgcount for c in reader.connections if c.topic == topics.CAMERA_COMPRESSED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--bag", type=Path, default=share_dir() / "bags" / "demo", help="rosbag2 to replay")
    parser.add_argument("--rate", type=float, default=2.0, help="replay speed factor (20 Hz camera at 2)")
    parser.add_argument("--delta", type=float, default=default("exit.delta_m"),
                        help="exit threshold of the early-exit pass, m (default: exit.delta_m's, %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds per pass")
    parser.add_argument("--model", type=Path, default=None,
                        help="manifest.json of an exported model (default: the demo model `make setup` exports)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the summary and each pass's figures to this JSON file")
    args = parser.parse_args(argv)
    if not (args.bag / "metadata.yaml").exists():
        print(f"deead_demo: no bag at {args.bag}; run `make setup` (it installs bags/demo)", file=sys.stderr)
        return 2
    frames = count_camera_frames(args.bag)
    manifest = args.model or demo_manifest_path()
    command = node_command({"camera_format": "compressed", "exit.policy": "full", "model_file_path": manifest})
    domain = private_domain()
    use_localhost_profile(share_dir() / "config")     # as the launch file: camera images over shared memory
    print(f"[demo] starting {NODE} (onnxruntime, the committed demo model) on ROS domain {domain}; replaying "
          f"{args.bag} ({frames} frames) twice: full depth, then early exit", flush=True)
    node_process = subprocess.Popen(command, env=os.environ.copy())
    rclpy.init()
    listener = Listener()
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(listener)
    try:
        if not listener.set_params.wait_for_service(timeout_sec=60.0):
            print("deead_demo: deead_node did not come up within 60 s (see its log above)", file=sys.stderr)
            return 2
        dt_s = load_manifest(manifest, verify=False).dt_s
        full = summarise(replay_pass(executor, listener, args.bag, args.rate, frames, args.timeout), frames, dt_s)
        check_own_outputs(full, "full", domain)
        set_parameters(executor, listener, {"exit.policy": "deead", "exit.delta_m": args.delta})
        early = summarise(replay_pass(executor, listener, args.bag, args.rate, frames, args.timeout), frames, dt_s)
        check_own_outputs(early, "deead", domain)
        spin_until(executor, lambda: False, 1.5)              # one more /diagnostics period
    finally:
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_process.kill()
        listener.destroy_node()
        rclpy.try_shutdown()
    print(f"\n{'':>22} {'full depth':>12} {'early exit':>12}")
    for key in ("frames_planned", "frames_dropped", "mean_exit_layer", "layer_sparsity", "latency_p50_ms",
                "latency_p95_ms", "l2_3s_m", "early_exits"):
        print(f"{key:>22} {full[key]:>12.3g} {early[key]:>12.3g}")
    drops = listener.diagnostics.get("drops", {})
    print(f"[demo] node's own drop counters (both passes): {drops}")
    ratio = early["latency_p50_ms"] / full["latency_p50_ms"]
    print(f"[demo] early exit at delta {args.delta} m: mean exit layer {early['mean_exit_layer']:.1f} of "
          f"{early['num_layers']}, sparsity {early['layer_sparsity']:.0%}, latency {ratio:.2f}x full depth, "
          f"L2@3s {early['l2_3s_m']:.2f} m vs {full['l2_3s_m']:.2f} m at full depth")
    summary = {"frames_planned": early["frames_planned"], "frames_dropped": early["frames_dropped"],
               "mean_exit_layer": round(early["mean_exit_layer"], 3), "num_layers": early["num_layers"],
               "latency_ratio_vs_full": round(ratio, 3), "l2_3s_m": round(early["l2_3s_m"], 3),
               "l2_3s_m_full": round(full["l2_3s_m"], 3)}
    print(json.dumps(summary))
    if args.out:
        record = {"summary": summary, "passes": {"full": full, "deead": early}, "delta_m": args.delta,
                  "rate": args.rate, "bag": str(args.bag.name), "frames_in_bag": frames, "backend": "onnxruntime",
                  "num_threads": 1, "node_drop_counters": drops, "commit": source_commit()}
        write_atomic(args.out, (json.dumps(record, indent=1) + "\n").encode())
        print(f"[demo] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
