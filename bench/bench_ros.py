"""End to end over ROS: camera publisher and deead_node in separate processes on loopback.

For each camera size (160x96, 640x360, 1920x1080) and format (JPEG CompressedImage, raw rgb8 Image) a
publisher process sends the demo bag's frames at that size, at 10 Hz (--rates), stamped with the time
of sending, plus odometry and a static route; the node plans them; this process measures latency
from the camera stamp to the trajectory's arrival (median, p95, p99), the node's own planning time
from its exit diagnostics, drops by reason from /diagnostics and the node's CPU use, its RSS early
and late, and whether every frame is accounted for (received = planned + dropped by reason). Where
the latency goes, from the exit diagnostics: the wait until the planning thread takes the frame
(transport, executor, hand-off), decoding, the assembly of the camera instant's inputs, the runner,
building and publishing the messages, and the delivery of the trajectory to the listener. Beside
each, the floor: the same harness with an echo node (same QoS, message types and executor) that
publishes a Path as soon as it receives the image, so the middleware's own share is measured in the
same run. Prints a table and ends with one JSON line: per size and format `node_over_runner`,
`overhead_ms` (the median over frames of latency - that frame's runner time, minus the floor's
median), `floor_ms` and the overhead's parts (`parts_ms`: decoding and resizing, the frame's
assembly, building and publishing the messages, and the rest: the hand-off to the planning thread
and delivery beyond the echo node's). With --before REVISION the node of that git revision runs on
every camera too, alternating with this checkout's, so before and after share the
machine's load; the JSON gets a `before` part. Goals (issue 38): overhead <= 0.5 ms at 160x96 and
640x360 JPEG, node / runner <= 1.10 at 640x360 JPEG, decoding a 1920x1080 JPEG <= 3 ms.

With --overload the model is a heavier one (an untrained 24-layer VLA of width 384 at full depth,
about 40 ms per frame, exported once into runs/heavy_model) and the camera runs at 10 Hz (slower than
the model: the node's fixed overhead against a planning time of a size real VLAs have) and at 30 and
60 Hz (faster than the model): latency must stay bounded (the newest frame wins, older ones are
dropped as superseded), memory flat, and nothing unaccounted; its last line has
`frames_unaccounted`, `latency_p99_ms_max`, `runner_p50_ms` and `node_over_runner_10hz`.

With --stress the demo bag is replayed at 1x into the node twice, alone and while os.cpu_count()
busy-loop processes load every core, and each pass's plans are scored against the bag's ground truth:
L2 at 1 s and 3 s, the share of the bag's frames planned and the drops by reason, for both passes in
one run, with deead_eval's plans of the same bag as the reference. The node takes every input at the
camera's stamp, so a frame planned under load is planned exactly as without it (`max_diff_common_m`);
load may only cost frames (superseded) or, past io.odometry_wait_s, the ego state. Its last line has
`l2_1s_ratio` and `l2_3s_ratio` (loaded / unloaded; goal <= 1.05) and `planned_share` of both passes.

With --cameras N (issue 39) the publisher sends N cameras (ORION's six names; the bag's frame at the size,
each view made from it as deead_make_bag --cameras makes them) with their CameraInfo, an IMU and odometry,
all stamped with one exposure; the node runs the six-camera, stateful test model (32 layers, random
weights, exported once into runs/multi_view_model) with `cameras` set, once per --decode-threads value;
the floor is the echo node that publishes when the last view of an instant has arrived. Rows carry
"cameras": N and "decode_threads", and their overhead per view; with --out they replace the N-camera
rows of bench_ros.json and leave the single-camera ones as they are.

    python bench/bench_ros.py [--seconds 20] [--sizes 640x360] [--formats jpeg raw] [--rates 10 20] [--out docs]
    python bench/bench_ros.py --before 03d2581 --out docs    # the node before issue 38 beside this one
    python bench/bench_ros.py --overload --seconds 60 --out docs
    python bench/bench_ros.py --stress [--seconds 0] [--out docs]
    python bench/bench_ros.py --cameras 6 --sizes 640x360 1600x900 --formats jpeg --decode-threads 1 4 --out docs
"""
from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deead_ros"))    # measure this checkout
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "deead_lab"))    # and its lab package

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402

from deead_ros.engines.manifest import load_manifest  # noqa: E402
from deead_ros.errors import ModelFileError  # noqa: E402
from deead_ros.exit.metrics import l2_at_m  # noqa: E402
from deead_ros.parameters import default  # noqa: E402
from deead_ros.paths import share_dir, source_commit  # noqa: E402
from deead_ros.ros.dds import use_localhost_profile  # noqa: E402
from deead_ros.ros.demo import NODE, node_command, node_statuses, private_domain  # noqa: E402
from deead_ros import bags as topics  # noqa: E402
from deead_ros_msgs.msg import ExitDiagnostics  # noqa: E402
from deead_lab.proc_stats import cpu_seconds, rss_mb  # noqa: E402

DEFAULT_RATES = [10.0]
DEFAULT_SIZES = ["160x96", "640x360", "1920x1080"]
CHECKOUT = Path(__file__).resolve().parents[1]
HEAVY_MODEL = CHECKOUT / "runs" / "heavy_model"
MULTI_VIEW_MODEL = CHECKOUT / "runs" / "multi_view_model"
RUNTIME = CHECKOUT / "deead_ros"         # the runtime package: deead_ros/ (its Python) and config/
PARAMS_FILE = RUNTIME / "config" / "deead_node.param.yaml"   # this checkout's node


def camera_frames(bag: Path, size: tuple[int, int], fmt: str, count: int) -> list[bytes]:
    """The bag's first `count` frames at size (W, H): JPEG bytes (quality 90) or raw rgb8 pixels."""
    from PIL import Image as PilImage

    from deead_ros.bags import iterate_bag
    jpegs = [bytes(m.data) for t, m in iterate_bag(bag) if t == topics.CAMERA_COMPRESSED][:count]
    frames = []
    for data in jpegs:
        with PilImage.open(io.BytesIO(data)) as img:
            image = img.convert("RGB")
        if image.size != size:
            image = image.resize(size, PilImage.BICUBIC)
        if fmt == "raw":
            frames.append(image.tobytes())
        else:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            frames.append(buffer.getvalue())
    return frames


def camera_names(count: int) -> tuple[str, ...]:
    """The names of --cameras N: ORION's six (or their first N); () for one camera on the usual topic."""
    from deead_lab.make_bag import ORION_CAMERAS
    return ORION_CAMERAS[:count] if count > 1 else ()


def publish_camera(bag: Path, rate_hz: float, seconds: float, size: tuple[int, int], fmt: str, cameras: int = 1) -> int:
    """The camera process: the bag's frames at rate_hz and size, stamped now, with odometry and a static route.

    cameras > 1: that many views per exposure (made from the frame as deead_make_bag does), each with its
    CameraInfo, and an IMU sample."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu

    from deead_lab.make_bag import view_image
    names = camera_names(cameras)
    frames = camera_frames(bag, size, fmt, (40 if fmt == "raw" else 200) // max(cameras, 1))
    rclpy.init()
    node = rclpy.create_node("bench_camera")

    def views(frame: bytes, index: int) -> bytes:
        """View `index` of a frame, in the frame's format (a JPEG is decoded, made a view and encoded again)."""
        from PIL import Image as PilImage
        if index == 0:
            return frame
        pixels = (np.frombuffer(frame, np.uint8).reshape(size[1], size[0], 3) if fmt == "raw"
                  else np.asarray(PilImage.open(io.BytesIO(frame)).convert("RGB")))
        view = view_image(pixels, index)
        if fmt == "raw":
            return view.tobytes()
        buffer = io.BytesIO()
        PilImage.fromarray(view).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    def message(data: bytes) -> Image | CompressedImage:
        return (Image(height=size[1], width=size[0], encoding="rgb8", step=size[0] * 3, data=data) if fmt == "raw"
                else CompressedImage(format="jpeg", data=data))

    image_type = Image if fmt == "raw" else CompressedImage
    if names:
        cameras_pub = [node.create_publisher(image_type, topics.camera_topics(n)[1 if fmt == "raw" else 0],
                                             qos_profile_sensor_data) for n in names]
        infos = [node.create_publisher(CameraInfo, topics.camera_topics(n)[2], qos_profile_sensor_data) for n in names]
        imu = node.create_publisher(Imu, topics.IMU, 10)
        view_sets = [[message(views(f, i)) for i in range(len(names))] for f in frames]
    else:
        topic = topics.CAMERA_RAW if fmt == "raw" else topics.CAMERA_COMPRESSED
        cameras_pub = [node.create_publisher(image_type, topic, qos_profile_sensor_data)]
        view_sets = [[message(f)] for f in frames]
    info = CameraInfo(width=size[0], height=size[1])
    focal = size[0] / 2 / np.tan(np.radians(30))
    info.k = [focal, 0.0, size[0] / 2, 0.0, focal, size[1] / 2, 0.0, 0.0, 1.0]
    odometry = node.create_publisher(Odometry, topics.ODOMETRY, 10)
    route_pub = node.create_publisher(PathMsg, topics.ROUTE, QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    route = PathMsg()
    route.header.frame_id = "base_link"                        # stamp 0: a static route
    for x in np.arange(0.0, 100.0, 2.0):
        pose = PoseStamped()
        pose.pose.position.x, pose.pose.orientation.w = float(x), 1.0
        route.poses.append(pose)
    route_pub.publish(route)
    deadline = time.monotonic() + 20
    while any(p.get_subscription_count() == 0 for p in cameras_pub) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)                                            # let the subscriber's other topics match too
    period, start = 1.0 / rate_hz, time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        exposure = node.get_clock().now().to_msg()                # the exposure: just before sending
        odom = Odometry()                                         # odometry of the camera's instant: the
        odom.header.stamp, odom.header.frame_id = exposure, "map"  # node need not wait for a later sample
        odom.pose.pose.orientation.w, odom.twist.twist.linear.x = 1.0, 8.0
        odometry.publish(odom)
        if names:
            sample = Imu()
            sample.header.stamp, sample.linear_acceleration.z = exposure, 9.81
            imu.publish(sample)
            for publisher in infos:
                info.header.stamp = exposure
                publisher.publish(info)
        for publisher, image in zip(cameras_pub, view_sets[sent % len(view_sets)]):
            image.header.stamp = exposure
            publisher.publish(image)
        sent += 1
        time.sleep(max(0.0, start + sent * period - time.monotonic()))
    print(json.dumps({"sent": sent}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def echo(fmt: str, executor_name: str, cameras: int = 1) -> int:
    """The floor: a node that receives the same camera message and at once publishes a Path stamped like it.

    Same QoS, message types and executor as deead_node, no work: its latency is the middleware's and
    rclpy's own share (transport, deserialising the image, the executor, publishing, delivery). Several
    cameras: it publishes when the last view of an exposure has arrived.
    """
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CompressedImage, Image

    from deead_ros.ros.node import OUTPUT_QOS, make_executor, spin_until_signalled
    from deead_ros.ros.ros_io import trajectory_path
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(NODE)
    publisher = node.create_publisher(PathMsg, "~/output/trajectory", OUTPUT_QOS)
    straight = np.stack([np.arange(1, 7) * 4.0, np.zeros(6)], axis=1)
    image_type, topic = (Image, topics.CAMERA_RAW) if fmt == "raw" else (CompressedImage, topics.CAMERA_COMPRESSED)
    names = camera_names(cameras)
    arrived: dict[int, int] = {}

    def on_image(msg: Image | CompressedImage) -> None:
        key = stamp_ns(msg)
        arrived[key] = arrived.get(key, 0) + 1
        if arrived[key] == max(len(names), 1):
            del arrived[key]
            publisher.publish(trajectory_path(straight, msg.header.stamp, "base_link"))

    for name_topic in ([topics.camera_topics(n)[1 if fmt == "raw" else 0] for n in names] or [topic]):
        node.create_subscription(image_type, name_topic, on_image, qos_profile_sensor_data)
    executor = make_executor(executor_name)
    executor.add_node(node)
    spin_until_signalled(executor)
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def measure(bag: Path, rate_hz: float, seconds: float, model: str, extra: dict[str, str],
            size: tuple[int, int] = (160, 96), fmt: str = "jpeg", floor: bool = False,
            debug_subscriber: bool = False, source: Path = RUNTIME, cameras: int = 1) -> dict:
    """One run: the camera at rate_hz into deead_node (or, floor=True, into the echo node); see the docstring.

    debug_subscriber: the listener also subscribes to ~/debug/image and ~/debug/markers, so the node draws.
    source: the tree whose deead_ros and config/ the node runs (default this checkout; --before: an earlier one).
    """
    parameters = {"camera_format": "raw" if fmt == "raw" else "compressed", "diagnostics.period_s": 1.0, **extra}
    if model:
        parameters["model_file_path"] = model
    executor_name = str(parameters.get("executor", default("executor")))
    command = ([sys.executable, __file__, "--echo", fmt, "--executor", executor_name, "--cameras", str(cameras)]
               if floor else node_command(parameters, source / "config" / "deead_node.param.yaml",
                                          camera_names(cameras)))
    log = tempfile.TemporaryFile("w+")                # the node's log, read back if it fails to start
    # `python -m deead_ros.ros.node` imports deead_ros from its working directory: the source tree's
    node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True, cwd=source)
    listener = rclpy.create_node("bench_listener")
    latencies, exits, counters = {}, {}, {}           # latencies and the node's timings by camera stamp, ns

    def on_path(msg: PathMsg, info: dict) -> None:
        # arrival = when the middleware received it (rmw's received_timestamp), not when this
        # process's executor got round to the callback: the listener's own delay is not the node's
        arrival = info.get("received_timestamp") or listener.get_clock().now().nanoseconds
        latencies[stamp_ns(msg)] = (arrival - stamp_ns(msg)) / 1e6

    def on_exit(msg: ExitDiagnostics) -> None:
        exits[stamp_ns(msg)] = (msg.input_wait_ms, msg.node_ms, msg.total_ms, msg.decode_ms, msg.assembly_ms)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for values in node_statuses(msg).values():
            counters.update(values)

    listener.create_subscription(PathMsg, f"/{NODE}/output/trajectory", on_path, 50)
    listener.create_subscription(ExitDiagnostics, f"/{NODE}/output/exit_diagnostics",
                                 on_exit, 50)
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    debug_received = {"image": 0, "markers": 0}
    if debug_subscriber:
        from sensor_msgs.msg import CompressedImage
        from visualization_msgs.msg import MarkerArray

        def counter(name: str) -> Callable[[object], None]:
            return lambda _msg: debug_received.__setitem__(name, debug_received[name] + 1)
        for name, msg_type in (("image", CompressedImage), ("markers", MarkerArray)):
            listener.create_subscription(msg_type, f"/{NODE}/debug/{name}", counter(name), 5)
    while listener.count_publishers(f"/{NODE}/output/trajectory") == 0:
        if node.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{' '.join(command[:4])} exited at start: {log.read().strip()[-2000:]}")
        rclpy.spin_once(listener, timeout_sec=0.1)
    camera = subprocess.Popen([sys.executable, __file__, "--publish-camera", str(rate_hz), "--seconds", str(seconds),
                               "--bag", str(bag), "--sizes", f"{size[0]}x{size[1]}", "--formats", fmt,
                               "--cameras", str(cameras)],
                              stdout=subprocess.PIPE, text=True)
    cpu_start, wall_start = cpu_seconds(node.pid), time.monotonic()
    rss_samples = []
    while camera.poll() is None:
        rclpy.spin_once(listener, timeout_sec=0.02)
        if time.monotonic() - wall_start > len(rss_samples):                # once a second
            rss_samples.append(rss_mb(node.pid))
    cpu = (cpu_seconds(node.pid) - cpu_start) / (time.monotonic() - wall_start)
    settle = time.monotonic() + 2.5
    while time.monotonic() < settle:
        rclpy.spin_once(listener, timeout_sec=0.02)
    sent = json.loads(camera.stdout.read().strip().splitlines()[-1])["sent"]
    stop(node)
    listener.destroy_node()
    row = {"size": f"{size[0]}x{size[1]}", "format": fmt, "rate_hz": rate_hz, "executor": executor_name,
           "sent": sent, "planned": len(latencies), "cameras": cameras,
           **({} if floor or cameras == 1 else {"decode_threads": int(parameters.get("decode_threads", 1))}),
           "load_average_1min": round(os.getloadavg()[0], 2)}     # how busy the machine was (it may be shared)
    if floor:
        lat = np.array([latencies[t] for t in sorted(latencies)[5:]])
        if not len(lat):      # nothing came back (the machine too loaded for the echo?): said, not a crash
            print(f"[bench_ros] {row['size']} {fmt}: the echo node returned {len(latencies)} frames of {sent}; "
                  "no floor", file=sys.stderr, flush=True)
            return {**row, "floor_p50_ms": float("nan"), "floor_p95_ms": float("nan"), "floor_cpu_cores": round(cpu, 2)}
        return {**row, "floor_p50_ms": float(np.median(lat)), "floor_p95_ms": float(np.percentile(lat, 95)),
                "floor_cpu_cores": round(cpu, 2)}
    stamps = sorted(set(latencies) & set(exits))[5:]           # skip the warm-up frames
    if not stamps:
        raise RuntimeError(f"{row['size']} {fmt}: no trajectory with its exit diagnostics came back "
                           f"({len(latencies)} trajectories, {len(exits)} diagnostics of {sent} frames sent)")
    lat = np.array([latencies[t] for t in stamps])
    wait_ms, node_ms, runner_ms, decode_ms, assembly_ms = np.array([exits[t] for t in stamps]).T
    drops = {k: int(v) for k, v in counters.items() if k.startswith("dropped_")}
    received = int(counters.get("frames_received", 0))
    third = max(1, len(rss_samples) // 3)
    return {**row, "received": received, **drops,
            "unaccounted": received - int(counters.get("frames_planned", 0)) - sum(drops.values()),
            "rss_mb_first_third": float(np.median(rss_samples[:third])),
            "rss_mb_last_third": float(np.median(rss_samples[-third:])),
            "latency_p50_ms": float(np.median(lat)), "latency_p95_ms": float(np.percentile(lat, 95)),
            "latency_p99_ms": float(np.percentile(lat, 99)), "runner_p50_ms": float(np.median(runner_ms)),
            "node_over_runner": float(np.median(lat) / np.median(runner_ms)), "node_cpu_cores": round(cpu, 2),
            "node_cpu_ms_per_frame": round(cpu * 1e3 / rate_hz, 2), "debug_subscriber": debug_subscriber,
            "debug_images_received": debug_received["image"], "debug_markers_received": debug_received["markers"],
            # where the latency goes (medians): to the planning thread, decoding, the inputs of the camera's
            # instant, the runner, building and publishing messages, delivery to the listener
            "wait_p50_ms": float(np.median(wait_ms)), "decode_p50_ms": float(np.median(decode_ms)),
            "assembly_p50_ms": float(np.median(assembly_ms)),
            "messages_p50_ms": float(np.median(node_ms - runner_ms - decode_ms - assembly_ms)),
            "node_outside_runner_p50_ms": float(np.median(node_ms - runner_ms)),
            # latency beyond the runner, frame by frame: the median of the difference does not carry the
            # runner's frame-to-frame spread (how deep each frame went, the machine's load) into the overhead
            "beyond_runner_p50_ms": float(np.median(lat - runner_ms)),
            "delivery_p50_ms": float(np.median(lat - wait_ms - node_ms))}


def stop(process: subprocess.Popen) -> None:
    """SIGINT, as a user stops a node; killed after 15 s so that no node outlives its run (and loads the next)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        print(f"[bench_ros] {process.args[1:3]} ignored SIGINT for 15 s: killed", file=sys.stderr, flush=True)
        process.kill()
        process.wait()


def busy_loops(count: int) -> list[subprocess.Popen]:
    """Processes that keep one core each busy until stopped."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stress_pass(bag: Path, frames: int, seconds: float, load: int, dt_s: float) -> dict:
    """Start the node, replay the bag at 1x (with `load` busy-loop processes), score what it published."""
    from deead_ros.ros.demo import Listener, spin_until
    node = subprocess.Popen(node_command({"camera_format": "compressed"}, PARAMS_FILE), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    listener = Listener()
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(listener)
    loops: list[subprocess.Popen] = []
    try:
        if not listener.set_params.wait_for_service(timeout_sec=60.0):
            raise RuntimeError("deead_node did not come up within 60 s")
        loops = busy_loops(load)
        cpu_start = cpu_seconds(node.pid)
        replay = subprocess.Popen([sys.executable, "-m", "deead_ros.ros.replay", str(bag), "--rate", "1",
                                   "--wait-for-subscribers", "10", "--duration", str(seconds)],
                                  stdout=subprocess.DEVNULL)
        spin_until(executor, lambda: replay.poll() is not None, (seconds or frames / 10.0) + 120.0)
        if replay.poll() is None:
            replay.kill()
            raise RuntimeError("deead_replay did not finish")
        spin_until(executor, lambda: len(listener.exits) >= len(listener.truths), 3.0)   # the last frames
        result = {"exits": dict(listener.exits), "trajectories": dict(listener.trajectories),
                  "truths": dict(listener.truths)}
        cpu = cpu_seconds(node.pid) - cpu_start
        spin_until(executor, lambda: False, 1.5)                   # one more /diagnostics period
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
        stop(node)
        listener.destroy_node()
    trajectories, truths, exits = result["trajectories"], result["truths"], result["exits"]
    scored = [t for t in trajectories if t in truths]
    drops = listener.diagnostics.get("drops", {})
    sent = len(truths)                                          # camera frames the replay sent (one truth each)
    return {"load_processes": load, "frames_sent": sent, "frames_planned": len(trajectories),
            "planned_share": len(trajectories) / max(sent, 1),
            "l2_1s_m": float(np.mean([l2_at_m(trajectories[t], truths[t], dt_s, 1.0) for t in scored])),
            "l2_3s_m": float(np.mean([l2_at_m(trajectories[t], truths[t], dt_s, 3.0) for t in scored])),
            "no_prior_share": float(np.mean([m.prior_source == "none" for m in exits.values()])) if exits else 0.0,
            "latency_p50_ms": float(np.median([m.total_ms for m in exits.values()])) if exits else float("nan"),
            "node_cpu_s": round(cpu, 1),
            **{k: int(v) for k, v in drops.items() if k.startswith(("dropped_", "rejected_"))},
            "trajectories": trajectories, "truths": truths}


def offline_reference(bag: Path, model: str) -> dict[float, np.ndarray]:
    """deead_eval's plans of the bag with the node's defaults: {camera stamp: trajectory}."""
    from deead_ros.engines import make_engine
    from deead_ros.exit import ExitSettings, PriorSettings
    from deead_ros.frame_assembly import model_image_hw
    from deead_ros.paths import demo_manifest_path
    from deead_ros.runner import Runner
    from deead_lab.eval import bag_frames
    runner = Runner(make_engine("onnxruntime", model or demo_manifest_path(), num_threads=1), ExitSettings(),
                    PriorSettings())
    return {f.camera_stamp_s: runner.plan(f.inputs, ego_motion_known=f.ego_motion_known).trajectory_m
            for f in bag_frames(bag, runner.encoder.accel_window_s, model_image_hw(runner.encoder))}


def stress(bag: Path, seconds: float, out: Path | None) -> int:
    """Unloaded vs loaded 1x replay of the demo bag; see the module docstring."""
    from deead_ros.paths import demo_manifest_path
    from deead_ros.ros.demo import count_camera_frames
    frames, load = count_camera_frames(bag), os.cpu_count() or 1
    manifest = load_manifest(demo_manifest_path(), verify=False)
    dt_s = manifest.dt_s
    print(f"[bench_ros] stress: {bag} ({frames} frames) at 1x{f' for {seconds:g} s' if seconds else ''}, "
          f"alone and with {load} busy-loop processes", flush=True)
    rclpy.init()
    try:
        passes = {"unloaded": stress_pass(bag, frames, seconds, 0, dt_s),
                  "loaded": stress_pass(bag, frames, seconds, load, dt_s)}
    finally:
        rclpy.try_shutdown()
    offline = offline_reference(bag, "")
    a, b = passes["unloaded"], passes["loaded"]
    common = sorted(set(a["trajectories"]) & set(b["trajectories"]) & set(a["truths"]))
    for name, row in passes.items():
        live = row.pop("trajectories")
        truths = row.pop("truths")
        diffs = {t: float(np.abs(live[t] - offline[t]).max()) for t in live if t in offline}
        row["max_diff_offline_m"] = max(diffs.values(), default=float("nan"))
        row["frames_unlike_offline"] = sorted(round(t - min(offline), 2) for t, d in diffs.items() if d > 1e-4)
        row["l2_1s_common_m"] = float(np.mean([l2_at_m(live[t], truths[t], dt_s, 1.0) for t in common]))
        row["l2_3s_common_m"] = float(np.mean([l2_at_m(live[t], truths[t], dt_s, 3.0) for t in common]))
        passes[name]["_live"] = live
    max_diff = float(max((np.abs(a["_live"][t] - b["_live"][t]).max() for t in common), default=float("nan")))
    for row in passes.values():
        row.pop("_live")
    keys = ("frames_sent", "frames_planned", "planned_share", "l2_1s_m", "l2_3s_m", "l2_1s_common_m",
            "l2_3s_common_m", "no_prior_share", "latency_p50_ms", "max_diff_offline_m")
    print(f"{'':>10} " + " ".join(f"{k:>18}" for k in keys))
    for name, row in passes.items():
        print(f"{name:>10} " + " ".join(f"{row[k]:>18.4g}" for k in keys))
    summary = {"model_version": manifest.model_version, "bag": str(bag), "seconds": seconds,
               "load_processes": load, "common_frames": len(common),
               "max_diff_common_m": max_diff,
               "l2_1s_ratio": round(b["l2_1s_m"] / a["l2_1s_m"], 4),
               "l2_3s_ratio": round(b["l2_3s_m"] / a["l2_3s_m"], 4),
               "planned_share": {name: round(row["planned_share"], 4) for name, row in passes.items()},
               "passes": passes}
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_stress.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


def parse_size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def sizes_table(rows: list[dict], floors: dict[tuple[str, str], dict]) -> dict:
    """Per size and format: latency, runner, the floor beside them, and the node's overhead beyond the floor."""
    table = {}
    for row in rows:
        floor = floors.get((row["size"], row["format"]), {})
        floor_ms = floor.get("floor_p50_ms", float("nan"))
        row["floor_p50_ms"], row["floor_p95_ms"] = floor_ms, floor.get("floor_p95_ms", float("nan"))
        row["overhead_ms"] = row["beyond_runner_p50_ms"] - floor_ms
        table[f"{row['size']} {row['format']}"] = {
            "node_over_runner": round(row["node_over_runner"], 3), "overhead_ms": round(row["overhead_ms"], 2),
            "floor_ms": round(floor_ms, 2), "latency_p50_ms": round(row["latency_p50_ms"], 2),
            "runner_p50_ms": round(row["runner_p50_ms"], 2), "decode_p50_ms": round(row["decode_p50_ms"], 2),
            # the overhead's parts: the node's own timings, and what is left (hand-off to the planning thread,
            # publishing and delivery beyond the echo node's; medians do not add up exactly)
            "parts_ms": {"decode_resize": round(row["decode_p50_ms"], 2), "assembly": round(row["assembly_p50_ms"], 2),
                         "messages": round(row["messages_p50_ms"], 2),
                         "handoff_rest": round(row["overhead_ms"] - row["decode_p50_ms"] - row["assembly_p50_ms"]
                                               - row["messages_p50_ms"], 2)}}
    return table


def checkout_at(revision: str) -> tuple[Path, str]:
    """deead_ros and config/ of an earlier commit in a temporary directory, and its short hash: the node before
    a change, measured beside this checkout's in the same run (same machine, same load, same environment)."""
    commit = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "--short", revision], capture_output=True,
                            text=True, check=True).stdout.strip()
    old_layout = subprocess.run(["git", "-C", str(CHECKOUT), "cat-file", "-e", f"{commit}:config"]).returncode == 0
    paths = ["deead_ros", "config"] if old_layout else ["deead_ros"]
    archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", commit, *paths], capture_output=True,
                             check=True).stdout
    tree = Path(tempfile.mkdtemp(prefix=f"bench_ros_{commit}_"))
    atexit.register(shutil.rmtree, tree, ignore_errors=True)          # gone when the benchmark ends
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return (tree if old_layout else tree / "deead_ros"), commit   # before the colcon layout: both at the top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=DEFAULT_RATES)
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="camera sizes WxH")
    parser.add_argument("--formats", nargs="+", default=["jpeg", "raw"], choices=("jpeg", "raw"),
                        help="CompressedImage (jpeg, quality 90) and/or Image (rgb8)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per run (default 20); with --stress, per pass (default: the whole bag)")
    parser.add_argument("--bag", type=Path, default=share_dir() / "bags" / "demo")
    parser.add_argument("--model", default="", help="manifest.json (default: the installed demo model)")
    parser.add_argument("--param", nargs="*", default=[], metavar="NAME:=VALUE", help="extra node parameters")
    parser.add_argument("--overload", action="store_true",
                        help="a heavier model: an untrained 24-layer VLA of width 384 (exported once into "
                             "runs/heavy_model), full depth, 160x96 jpeg camera at 10, 30 and 60 Hz")
    parser.add_argument("--stress", action="store_true",
                        help="1x replay of the demo bag alone and with every core busy: L2 and frames planned")
    parser.add_argument("--out", type=Path, default=None,
                        help="write bench_ros.json (or bench_overload.json, bench_stress.json) here")
    parser.add_argument("--debug", action="store_true",
                        help="each camera twice, without and with a subscriber to ~/debug/image and ~/debug/markers: "
                             "latency and the node's CPU per frame (the drawing's cost); writes bench_debug.json")
    parser.add_argument("--tag", default="", help="suffix of the JSON's name, e.g. quiet: bench_ros_quiet.json")
    parser.add_argument("--note", default="", help="a sentence stored with the figures (how loaded the machine was)")
    parser.add_argument("--before", default="", metavar="REVISION",
                        help="also run the node of this git revision (its deead_ros and config/) on every camera, "
                             "alternating with this checkout's, in the same run; bench_ros.json gets a 'before' part")
    parser.add_argument("--cameras", type=int, default=1,
                        help="several cameras (ORION's six names): the six-camera, stateful test model, IMU and "
                             "CameraInfo; rows with \"cameras\": N replace those of bench_ros.json")
    parser.add_argument("--decode-threads", type=int, nargs="+", default=[default("decode_threads")],
                        help="with --cameras: the node's decode_threads, one run each")
    parser.add_argument("--tail", type=int, default=0, metavar="PAIRS",
                        help="the bounded tail over ROS: PAIRS alternating runs of exit.policy full and deead on the "
                             "first camera (640x360 jpeg by default), p95 deead / full per pair; bench_ros_tail.json")
    parser.add_argument("--publish-camera", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--echo", default="", help=argparse.SUPPRESS)
    parser.add_argument("--executor", default=default("executor"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    private_domain()    # other ROS processes on the machine must not cross-talk; inherited by node, camera, echo
    # as the launch file does: images over shared memory, unless the caller configured DDS (then theirs is measured)
    profile = use_localhost_profile(share_dir() / "config")
    dds = f"localhost profile {profile}" if profile else "the caller's DDS configuration"
    if args.stress:
        return stress(args.bag, args.seconds or 0.0, args.out)
    if args.echo:
        return echo(args.echo, args.executor, args.cameras)
    args.seconds = 20.0 if args.seconds is None else args.seconds
    if args.publish_camera:
        return publish_camera(args.bag, args.publish_camera, args.seconds, parse_size(args.sizes[0]), args.formats[0],
                              args.cameras)
    extra = dict(item.split(":=", 1) for item in args.param)
    model, rates, cameras = args.model, args.rates, [(parse_size(s), f) for s in args.sizes for f in args.formats]
    if args.overload:
        model, rates = str(heavy_model()), (args.rates if args.rates != DEFAULT_RATES else [10.0, 30.0, 60.0])
        cameras = [((160, 96), "jpeg")]
        extra.setdefault("exit.policy", "full")
    rclpy.init()
    if args.debug:
        return debug_costs(args, cameras, model, extra)
    if args.cameras > 1:
        return several_cameras(args, cameras, model or str(multi_view_model()), extra)
    if args.tail:
        command = shlex.join(["python", "bench/bench_ros.py", *(sys.argv[1:] if argv is None else argv)])
        return tail_over_ros(args, cameras[0] if args.sizes != DEFAULT_SIZES else ((640, 360), "jpeg"), model, extra,
                             dds, command)
    before_tree, before_commit = checkout_at(args.before) if args.before else (None, "")
    rows, before_rows, floors = [], [], {}
    for i, (size, fmt) in enumerate(cameras):
        for rate in rates:
            nodes = [("after", RUNTIME, rows)] + ([("before", before_tree, before_rows)] if before_tree else [])
            for variant, source, into in (nodes[::-1] if i % 2 else nodes):   # alternate which goes first
                into.append(measure(args.bag, rate, args.seconds, model, extra, size, fmt, source=source))
                row = into[-1]
                print(f"[bench_ros] {size[0]}x{size[1]} {fmt} {rate:g} Hz{' (' + variant + ')' if before_tree else ''}"
                      f": latency p50 {row['latency_p50_ms']:.2f} ms, runner {row['runner_p50_ms']:.2f} ms", flush=True)
        if not args.overload:
            floor = measure(args.bag, rates[0], args.seconds, model, extra, size, fmt, floor=True)
            floors[(floor["size"], fmt)] = floor
            print(f"[bench_ros] {floor['size']} {fmt} floor (echo node): "
                  f"p50 {floor['floor_p50_ms']:.2f} ms", flush=True)
    rclpy.try_shutdown()
    table = sizes_table(rows, floors)
    before = ({"revision": args.before, "commit": before_commit, "rows": before_rows,
               "by_camera": sizes_table(before_rows, floors)} if before_tree else None)
    keys = ("rate_hz", "sent", "planned", "dropped_superseded", "unaccounted", "latency_p50_ms", "latency_p95_ms",
            "runner_p50_ms", "node_over_runner", "floor_p50_ms", "overhead_ms", "wait_p50_ms", "decode_p50_ms",
            "assembly_p50_ms", "messages_p50_ms", "delivery_p50_ms", "node_cpu_cores", "rss_mb_last_third")
    print(f"{'camera':>22} " + " ".join(f"{k[:13]:>13}" for k in keys))
    for variant, variant_rows in (("", rows), (f" ({before_commit})", before_rows)):
        for row in variant_rows:
            print(f"{row['size'] + ' ' + row['format'] + variant:>22} "
                  + " ".join(f"{row.get(k, 0):>13.2f}" for k in keys))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "bench_overload" if args.overload else "bench_ros"
        path = args.out / f"{name}{'_' + args.tag if args.tag else ''}.json"
        several = several_camera_part(path) if name == "bench_ros" else {"rows": [], "floors": []}
        path.write_text(json.dumps(
            {"model": model or "demo", "parameters": extra, "seconds": args.seconds, "commit": source_commit(),
             "dds": dds,
             **({"note": args.note} if args.note else {}),
             "rows": rows + several.pop("rows"), "floors": list(floors.values()) + several.pop("floors"),
             "by_camera": table, **({"before": before} if before else {}), **several}, indent=1))
    if args.overload:
        at_10hz = [r for r in rows if r["rate_hz"] == 10]
        print(json.dumps({"frames_unaccounted": sum(r["unaccounted"] for r in rows),
                          "latency_p99_ms_max": round(max(r["latency_p99_ms"] for r in rows), 1),
                          "runner_p50_ms": round(rows[0]["runner_p50_ms"], 1),
                          **({"node_over_runner_10hz": round(at_10hz[-1]["node_over_runner"], 3)} if at_10hz else {}),
                          "rows": rows}))
    else:
        summary = {"by_camera": table, "frames_unaccounted": sum(r["unaccounted"] for r in rows + before_rows)}
        if before:
            summary["before"] = {"commit": before_commit, "by_camera": before["by_camera"]}
        print(json.dumps(summary))
    return 0


def debug_costs(args: argparse.Namespace, cameras: list, model: str, extra: dict[str, str]) -> int:
    """Without and with a debug subscriber per camera: the plan's latency must not change; CPU shows the drawing."""
    rows = []
    for size, fmt in cameras:
        for subscribed in (False, True):
            rows.append(measure(args.bag, args.rates[0], args.seconds, model, extra, size, fmt,
                                debug_subscriber=subscribed))
    rclpy.try_shutdown()
    summary = {}
    for plain, drawn in zip(rows[::2], rows[1::2]):
        summary[f"{plain['size']} {plain['format']}"] = {
            "latency_p50_ms": [round(plain["latency_p50_ms"], 2), round(drawn["latency_p50_ms"], 2)],
            "node_cpu_ms_per_frame": [plain["node_cpu_ms_per_frame"], drawn["node_cpu_ms_per_frame"]],
            "drawing_cpu_ms_per_frame": round(drawn["node_cpu_ms_per_frame"] - plain["node_cpu_ms_per_frame"], 2),
            "debug_images_received": drawn["debug_images_received"], "planned": [plain["planned"], drawn["planned"]]}
    for name, row in summary.items():
        print(f"[bench_ros] {name}: {row}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_debug.json").write_text(json.dumps({"seconds": args.seconds, "rows": rows,
                                                               "by_camera": summary}, indent=1))
    print(json.dumps({"by_camera": summary}))
    return 0


def several_cameras(args: argparse.Namespace, cameras: list, model: str, extra: dict[str, str]) -> int:
    """--cameras N: per size and format, the node at each --decode-threads and the echo floor; the overhead per view."""
    rows, floors = [], {}
    for size, fmt in cameras:
        for threads in args.decode_threads:
            row = measure(args.bag, args.rates[0], args.seconds, model, {**extra, "decode_threads": str(threads)},
                          size, fmt, cameras=args.cameras)
            rows.append(row)
            print(f"[bench_ros] {args.cameras} x {size[0]}x{size[1]} {fmt}, decode_threads {threads}: latency p50 "
                  f"{row['latency_p50_ms']:.2f} ms, runner {row['runner_p50_ms']:.2f} ms, decode "
                  f"{row['decode_p50_ms']:.2f} ms", flush=True)
        floor = measure(args.bag, args.rates[0], args.seconds, model, extra, size, fmt, floor=True,
                        cameras=args.cameras)
        floors[(floor["size"], fmt)] = floor
        print(f"[bench_ros] {args.cameras} x {floor['size']} {fmt} floor (echo node): "
              f"p50 {floor['floor_p50_ms']:.2f} ms", flush=True)
    rclpy.try_shutdown()
    table = {}
    for row in rows:
        entry = sizes_table([row], floors)[f"{row['size']} {row['format']}"]
        entry["overhead_per_view_ms"] = round(entry["overhead_ms"] / args.cameras, 2)
        entry["decode_per_view_ms"] = round(row["decode_p50_ms"] / args.cameras, 2)
        table[f"{args.cameras} x {row['size']} {row['format']} decode_threads {row['decode_threads']}"] = entry
    for name, entry in table.items():
        print(f"[bench_ros] {name}: {entry}")
    if args.out:
        path = args.out / "bench_ros.json"
        data = json.loads(path.read_text()) if path.is_file() else {"rows": [], "floors": [], "by_camera": {}}
        keep = lambda items: [r for r in items if r.get("cameras", 1) != args.cameras]  # noqa: E731
        data["rows"] = keep(data["rows"]) + rows
        data["floors"] = keep(data["floors"]) + list(floors.values())
        data["several_cameras"] = {"cameras": args.cameras, "model": model, "parameters": extra,
                                   "seconds": args.seconds, "commit": source_commit(),
                                   **({"note": args.note} if args.note else {}), "by_camera": table}
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    print(json.dumps({"several_cameras": table, "frames_unaccounted": sum(r["unaccounted"] for r in rows)}))
    return 0


def tail_over_ros(args: argparse.Namespace, camera: tuple, model: str, extra: dict[str, str], dds: str,
                  command: str) -> int:
    """Issue 37's check over ROS: the camera stamp to trajectory p95 of deead (the bounded tail, default delta)
    against full depth, in alternating runs so that both see the same machine."""
    (size, fmt), runs = camera, []
    for pair in range(args.tail):
        for policy in (("full", "deead") if pair % 2 == 0 else ("deead", "full")):
            row = measure(args.bag, args.rates[0], args.seconds, model, {**extra, "exit.policy": policy}, size, fmt)
            runs.append({"policy": policy, "pair": pair, **{k: row[k] for k in (
                "planned", "latency_p50_ms", "latency_p95_ms", "runner_p50_ms", "load_average_1min")}})
            print(f"[bench_ros] tail pair {pair + 1}/{args.tail} {policy}: latency p50 {row['latency_p50_ms']:.2f} ms, "
                  f"p95 {row['latency_p95_ms']:.2f} ms, runner {row['runner_p50_ms']:.2f} ms", flush=True)
    rclpy.try_shutdown()
    p95 = {(r["pair"], r["policy"]): r["latency_p95_ms"] for r in runs}
    ratios = [round(p95[(i, "deead")] / p95[(i, "full")], 3) for i in range(args.tail)]
    result = {"what": f"camera stamp to trajectory arrival over ROS, {size[0]}x{size[1]} {fmt} at "
                      f"{args.rates[0]:g} Hz: exit.policy full against deead (the parameter file's delta and "
                      "max_checks), alternating runs on one machine",
              "command": command,
              "commit": source_commit(), "dds": dds, **({"note": args.note} if args.note else {}),
              "parameters": extra, "runs": runs, "p95_ratio_deead_over_full": ratios}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_ros_tail.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({"p95_ratio_deead_over_full": ratios}))
    return 0


def several_camera_part(path: Path) -> dict:
    """What a --cameras N run wrote into bench_ros.json (its rows, floors and table), kept when a single-camera
    run rewrites the file: the two are measured by separate runs."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    several = [r for r in data.get("rows", []) if r.get("cameras", 1) > 1]
    return {"rows": several, "floors": [f for f in data.get("floors", []) if f.get("cameras", 1) > 1],
            **({"several_cameras": data["several_cameras"]} if several and "several_cameras" in data else {})}


def multi_view_model() -> Path:
    """The six-camera, stateful Llama VLA at ORION's depth (32 layers, random weights), exported once."""
    manifest = MULTI_VIEW_MODEL / "manifest.json"
    try:
        load_manifest(manifest, verify=False)
        return manifest
    except ModelFileError as err:
        print(f"[bench_ros] exporting the six-camera test model ({err})", flush=True)
    from deead_lab.model.export_onnx import export_random
    from deead_lab.model.multi_view_vla import MultiViewLlamaVLAConfig
    return export_random(MULTI_VIEW_MODEL, MultiViewLlamaVLAConfig(), fused=False)


def heavy_model() -> Path:
    """An untrained demo-architecture VLA wide enough to be slower than a 30 Hz camera on one core.

    Exported again when missing or made for another version of the input encoding.
    """
    manifest = HEAVY_MODEL / "onnx" / "manifest.json"
    try:
        load_manifest(manifest, verify=False)
        return manifest
    except ModelFileError as err:
        print(f"[bench_ros] exporting the heavy model ({err})", flush=True)
    import torch

    from deead_ros.model.encoding import InputSpec
    from deead_lab.model.export_onnx import export_pretrained
    from deead_lab.model.vla import DeeadVLA, VLAConfig
    from deead_lab.model.weights import save_pretrained
    torch.manual_seed(0)
    weights = save_pretrained(DeeadVLA(VLAConfig(d_model=384, n_head=6)), InputSpec(), HEAVY_MODEL / "weights",
                              model_version="deead-vla heavy (untrained, overload benchmark)")
    return export_pretrained(weights, HEAVY_MODEL / "onnx", fused=False)


if __name__ == "__main__":
    raise SystemExit(main())
