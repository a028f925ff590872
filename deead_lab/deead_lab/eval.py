"""deead_eval: run the planner over a bag without the middleware and report exits, errors and time.

The same Runner and the same input assembly as the live node, fed straight from the bag (exact
and fast: no transport, no dropped frames). For each delta and for full depth it writes a
per-frame CSV, a summary JSON, plots and a report page (index.html: the table, the plots and the
debug images of the worst frames), and prints the table side by side. On request it records the
plans as a ROS 2 MCAP for Foxglove or RViz (--record) and the debug images as a video (--video).
"""
from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from deead_ros.debug_view import CameraModel, CameraMounting, encode_png, render_debug_image, trajectory_markers
from deead_ros.engines import make_engine
from deead_ros.errors import BadInputError, DeeadError
from deead_ros.exit import ExitPolicy, ExitSettings, FullPolicy, PriorSettings
from deead_ros.exit.metrics import l2_at_m
from deead_ros.camera_sync import CameraSync
from deead_ros.engines.manifest import SensorContract
from deead_ros.frame_assembly import CameraStampGuard, InputSettings, LatestInputs, model_image_hw, path_points, stamp_s
from deead_ros.model.encoding import FrameInputs
from deead_ros.parameters import default
from deead_ros.paths import demo_manifest_path, source_commit
from deead_ros.runner import PlanResult, Runner
from deead_ros.sensor_contract import CameraContract, model_cameras
from deead_ros import bags as topics
from deead_ros.bags import iterate_bag_timed
from deead_lab.eval_page import TABLE_COLUMNS, Row, Summary, WorstFrame, write_page
from deead_lab.plan_recording import DebugVideo, PlanRecorder
from deead_lab.scale_out import expand_bags, run_bags


SINGLE_CAMERA = SensorContract()          # models exported before sensors existed: one camera


@dataclass(frozen=True, slots=True)
class EvalFrame:
    """One frame to plan, with its ground truth when the source has it."""

    inputs: FrameInputs
    ego_motion_known: bool
    truth_m: np.ndarray | None       # (T, 2) expert's future, ego frame
    camera_stamp_s: float = float("nan")
    external_ego_m: np.ndarray | None = None
    prior_age_s: float = -1.0        # camera stamp to the nearest odometry sample, s; -1 without odometry
    camera_msg: Any = None           # the camera message as recorded (rosbags' type): what --record writes


def bag_frames(bag: Path, accel_window_s: float, image_hw: tuple[int, int] | None = None,
               settings: InputSettings = InputSettings(), max_input_age_s: float = default("io.max_input_age_s"),
               on_rejected: Callable[[str, str], None] = lambda topic, reason: None,
               remaps: dict[str, str] | None = None, sensors: SensorContract = SINGLE_CAMERA,
               sync_tolerance_s: float = default("io.camera_sync_tolerance_s"),
               decode_threads: int = 1, contract: CameraContract | None = None) -> Iterator[EvalFrame]:
    """Frames of a bag assembled exactly as the live node assembles them.

    The same LatestInputs, the same decoding (image_hw: the model's (H, W), as the node passes it) and
    the same timing rule: the node waits (io.odometry_wait_s) for odometry stamped at or after the
    frame before assembling it; here every later message is at hand, so a camera frame waits in a
    queue until that odometry sample and every message recorded at the same instant have been fed,
    or until the bag has moved io.odometry_max_gap_s past the frame (no later sample could be used).
    Camera stamps that go back are skipped like the node's `stamp_backwards` drops. `remaps` renames the
    bag's topics to this package's ({recorded: ours}, from `--remap OLD:=NEW`), as deead_replay does.

    A model of several cameras (sensors.cameras) reads each camera's image and CameraInfo from
    /camera/<name>/ and the IMU from /sensing/imu; the images go through the node's CameraSync (the same
    tolerance), and a complete set is one frame, stamped with the first camera's stamp. `contract` notes each
    camera image and CameraInfo against the model's camera (deead_ros.sensor_contract), as the node does.
    """
    inputs = LatestInputs(accel_window_s=accel_window_s, settings=settings, on_rejected=on_rejected,
                          decode_threads=decode_threads)
    guard = CameraStampGuard()
    several = len(sensors.cameras) > 1
    sync = CameraSync(sensors.camera_names, sync_tolerance_s) if several else None
    views = {topic: (camera, kind) for camera in sensors.camera_names
             for topic, kind in zip(topics.camera_topics(camera), ("compressed", "raw", "info"))}
    truths: dict[float, np.ndarray] = {}
    waiting: deque[list[Any]] = deque()      # [camera record ns, message, raw, record ns its odometry was in or None]
    give_up_ns = int(settings.odometry_max_gap_s * 1e9)

    def ready(record_ns: int) -> Iterator[EvalFrame]:
        """Assemble the frames whose odometry was in before this record time (all messages of that instant fed)."""
        while waiting and (record_ns - waiting[0][0] > give_up_ns
                           or (waiting[0][3] is not None and record_ns > waiting[0][3])):
            _, item, raw, _ = waiting.popleft()
            try:
                frame = (inputs.assemble_set(item.stamp_s, item.messages, raw, max_input_age_s, False, sensors.cameras)
                         if several else inputs.assemble(item, raw, max_input_age_s, False, image_hw))
            except BadInputError as err:
                print(f"[eval] camera frame at {item_stamp(item):.2f} s skipped: {err}", file=sys.stderr)
                continue
            yield EvalFrame(frame.inputs, frame.ego_motion_known, truths.pop(frame.camera_stamp_s, None),
                            frame.camera_stamp_s, frame.external_ego_m, frame.prior_age_s,
                            item.messages[0][1] if several else item)

    def item_stamp(item: Any) -> float:
        return item.stamp_s if several else stamp_s(item.header.stamp)

    def mark_ready(record_ns: int) -> None:
        for entry in waiting:
            if entry[3] is None and inputs.wait_for_instant(item_stamp(entry[1]), timeout_s=0.0):
                entry[3] = record_ns

    def arrived(record_ns: int, item: Any, raw: bool) -> None:
        if contract is not None:
            for camera, msg in item.messages if several else (("", item),):
                contract.check_image(camera, msg, raw)
        camera_s = item_stamp(item)
        if guard.refuse(camera_s, camera_s, max_frame_age_s=0.0, max_future_s=0.0) is None:
            waiting.append([record_ns, item, raw, None])
            mark_ready(record_ns)

    try:
        for topic, record_ns, msg in iterate_bag_timed(bag, remaps):
            yield from ready(record_ns)
            if topic == topics.ROUTE:
                inputs.set_route(msg)
                mark_ready(record_ns)          # a route recorded after its frame completes that frame's instant
            elif topic == topics.ODOMETRY:
                inputs.set_odometry(msg)
                mark_ready(record_ns)
            elif topic == topics.COMMAND:
                inputs.set_command(msg)
            elif topic == topics.GROUND_TRUTH:
                truths[stamp_s(msg.header.stamp)] = path_points(msg)
            elif topic == topics.IMU:
                inputs.set_imu(msg)
            elif sync is not None and topic in views:
                camera, kind = views[topic]
                if kind == "info":
                    inputs.set_camera_info(camera, msg)
                    if contract is not None:
                        contract.check_camera_info(camera, msg)
                    continue
                complete, dropped = sync.add(camera, stamp_s(msg.header.stamp), msg)
                for drop in dropped:
                    print(f"[eval] {drop.reason}", file=sys.stderr)
                if complete is not None:
                    arrived(record_ns, complete, kind == "raw")
            elif not several and topic in (topics.CAMERA_COMPRESSED, topics.CAMERA_RAW):
                arrived(record_ns, msg, topic == topics.CAMERA_RAW)
        yield from ready(2**62)                                  # the bag ended: assemble with what there is
    finally:
        inputs.close()


FrameSink = Callable[[int, EvalFrame, dict[str, PlanResult]], None]


def evaluate(runner: Runner, frames: Iterable[EvalFrame], settings: dict[str, ExitPolicy],
             max_frames: int = 0, on_frame: FrameSink | None = None) -> list[Row]:
    """Plan every frame under every setting (same frame, back to back); one row per frame and setting.

    on_frame(index, frame, {setting: PlanResult}) sees every frame's plans (debug images, recordings).
    """
    rows: list[Row] = []
    for index, frame in enumerate(frames):
        if max_frames and index >= max_frames:
            break
        results = {}
        for name, policy in settings.items():
            results[name] = runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known, policy=policy,
                                        external_ego_m=frame.external_ego_m, ground_truth_m=frame.truth_m,
                                        stream=name)       # a model with memory: one per setting
            rows.append(_row(index, name, results[name], frame.truth_m, runner.dt_s))
        if on_frame is not None:
            on_frame(index, frame, results)
        if (index + 1) % 50 == 0:
            print(f"[eval] {index + 1} frames", flush=True)
    return rows


def setting_name(delta_m: float) -> str:
    """The name of the setting that runs the configured policy at this delta (rows, plots, recorded topics)."""
    return f"delta_{delta_m:g}"


def delta_settings(runner: Runner, deltas: Iterable[float]) -> dict[str, ExitPolicy]:
    """Full depth plus the configured policy at each delta."""
    base_exit, _ = runner.settings
    return {"full": FullPolicy(), **{setting_name(d): replace(base_exit, delta_m=d).build_policy() for d in deltas}}


def _row(frame: int, setting: str, result: PlanResult, truth: np.ndarray | None, dt_s: float) -> Row:
    trace = result.trace
    row = {"frame": frame, "setting": setting, "exit_layer": trace.exit_layer, "num_layers": trace.num_layers,
           "reason": trace.reason.name.lower(), "checks": len(trace.checkpoints),
           "checkpoint_layers": " ".join(str(c.layer) for c in trace.checkpoints),
           "checkpoint_deviations_m": " ".join(f"{c.deviation_m:.3f}" for c in trace.checkpoints),
           "prior_source": result.prior.source, "stem_ms": result.stem_ms, "layers_ms": trace.layers_ms,
           "checks_ms": trace.checks_ms, "total_ms": result.total_ms,
           # validation: the model's plan passed (valid), else why not and the fallback published instead
           "valid": result.is_valid, "validation": result.validation.code, "fallback": result.fallback,
           "refused_exits": trace.refused_exits}
    for t in (1.0, 2.0, 3.0):                   # of what the node would publish (the fallback when not valid)
        row[f"l2_{t:g}s_m"] = l2_at_m(result.trajectory_m, truth, dt_s, t) if truth is not None else float("nan")
    return row


def summarise(rows: list[Row]) -> Summary:
    """Per setting: frames, mean exit layer, sparsity, checks, latency p50/p95/mean, L2 at 1/2/3 s, ratios to full."""
    summary = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        sel = [r for r in rows if r["setting"] == setting]
        layers = np.array([r["exit_layer"] for r in sel])
        total = np.array([r["total_ms"] for r in sel])
        summary[setting] = {
            "frames": len(sel), "mean_exit_layer": float(layers.mean()),
            "layer_sparsity": float(1 - layers.sum() / sum(r["num_layers"] for r in sel)),
            "checks_per_frame": float(np.mean([r["checks"] for r in sel])),
            "latency_p50_ms": float(np.median(total)), "latency_p95_ms": float(np.percentile(total, 95)),
            "latency_mean_ms": float(total.mean()),
            "check_time_share": float(sum(r["checks_ms"] for r in sel) / total.sum()),
            **{f"l2_{t}s_m": float(np.nanmean([r[f"l2_{t}s_m"] for r in sel])) for t in (1, 2, 3)},
            "fallback_share": float(np.mean([bool(r["fallback"]) for r in sel])),
            "refused_exits_per_frame": float(np.mean([r["refused_exits"] for r in sel])),
        }
    full = summary.get("full")
    for values in summary.values():
        values["latency_ratio_vs_full"] = values["latency_p50_ms"] / full["latency_p50_ms"] if full else float("nan")
    return summary


def print_table(summary: Summary) -> None:
    print(f"{'setting':>12} " + " ".join(f"{title:>10}" for _, title, _ in TABLE_COLUMNS))
    for setting, values in summary.items():
        print(f"{setting:>12} " + " ".join(f"{values[key]:>10{fmt}}" for key, _, fmt in TABLE_COLUMNS))


def plot(rows: list[Row], summary: Summary, out: Path) -> None:
    """Exit-layer histograms, deviation per checkpoint, latency per frame."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    settings = list(summary)
    num_layers = rows[0]["num_layers"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for setting in settings:
        layers = [r["exit_layer"] for r in rows if r["setting"] == setting]
        axes[0].hist(layers, bins=np.arange(0.5, num_layers + 1.5), alpha=0.5, label=setting)
        axes[2].plot([r["total_ms"] for r in rows if r["setting"] == setting], label=setting, lw=0.8)
    for r in rows:
        if r["setting"] != "full" and r["checkpoint_layers"]:
            layers = [int(v) for v in r["checkpoint_layers"].split()]
            devs = [float(v) for v in r["checkpoint_deviations_m"].split()]
            axes[1].plot(layers, devs, color="tab:blue", alpha=0.05)
    axes[0].set(title="exit layer", xlabel="layer", ylabel="frames")
    axes[1].set(title="deviation from the prior at each checkpoint", xlabel="layer", ylabel="m", yscale="log")
    axes[2].set(title="latency per frame", xlabel="frame", ylabel="ms")
    axes[0].legend()
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(out / "eval.png", dpi=110)
    plt.close(fig)


def metadrive_camera() -> CameraModel:
    """MetaDrive 0.2.6's front camera, as deead_lab.collect_metadrive records it (bags/demo).

    Mounted as deead_lab.sim.scenario says (CAMERA_*: ahead of and above the vehicle's origin, pitched down);
    its lens has a 60 degree horizontal field of view and an aspect ratio of 2, drawn on a 160 x 96 image (so its
    pixels are not square: fy > fx).
    """
    from deead_lab.sim.scenario import (CAMERA_FORWARD_M, CAMERA_HEIGHT_M, CAMERA_HFOV_DEG, CAMERA_PITCH_RAD, IMAGE_H,
                                        IMAGE_W)
    half_fov = math.radians(CAMERA_HFOV_DEG / 2)
    fx = IMAGE_W / 2 / math.tan(half_fov)
    fy = IMAGE_H / 2 / (math.tan(half_fov) / 2)
    camera = CameraModel.from_intrinsics([fx, 0, IMAGE_W / 2, 0, fy, IMAGE_H / 2, 0, 0, 1], IMAGE_W, IMAGE_H,
                                         CameraMounting(height_m=CAMERA_HEIGHT_M, pitch_rad=CAMERA_PITCH_RAD,
                                                        forward_m=CAMERA_FORWARD_M))
    assert isinstance(camera, CameraModel), camera
    return camera


CAMERAS: dict[str, Callable[[], CameraModel] | None] = {"none": None, "metadrive": metadrive_camera}


def camera_rate_hz(bag: Path, remaps: dict[str, str]) -> float:
    """The bag's camera rate (messages over its duration): the video's frame rate, so that it plays in real time."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        count = sum(c.msgcount for c in reader.connections
                    if remaps.get(c.topic, c.topic) in (topics.CAMERA_COMPRESSED, topics.CAMERA_RAW))
        span_s = reader.duration / 1e9
    return (count - 1) / span_s if count > 1 and span_s > 0 else 10.0      # 10 Hz when the bag cannot tell


WORST_FRAME_GAP = 20        # frames (2 s at 10 Hz) between two worst frames shown


class FrameOutputs:
    """What deead_eval draws of each frame, for the setting shown: the worst frames' debug images, and the MCAP
    and the video when asked for. Called by `evaluate` with every frame's plans."""

    def __init__(self, shown: str, deltas_m: dict[str, float], dt_s: float, camera: CameraModel | None,
                 debug_width: int, worst_frames: int, recorder: PlanRecorder | None = None,
                 video: DebugVideo | None = None) -> None:
        self.shown, self.deltas_m, self.dt_s, self.camera = shown, deltas_m, dt_s, camera
        self.debug_width, self.worst_frames = debug_width, worst_frames
        self.recorder, self.video = recorder, video
        self._candidates = worst_frames * 4         # the worst frames come in runs: keep more, then pick apart
        self._worst: list[tuple[float, int, bytes, str]] = []     # a min-heap on L2: the worst frames so far

    def __call__(self, index: int, frame: EvalFrame, results: dict[str, PlanResult]) -> None:
        result = results[self.shown]
        l2 = l2_at_m(result.trajectory_m, frame.truth_m, self.dt_s, 3.0) if frame.truth_m is not None else math.nan
        is_worst = self.worst_frames > 0 and math.isfinite(l2) and (len(self._worst) < self._candidates
                                                                     or l2 > self._worst[0][0])
        if not (is_worst or self.recorder or self.video):
            return
        image = render_debug_image(frame.inputs.image_rgb, result, self.deltas_m[self.shown], truth=frame.truth_m,
                                   camera=self.camera, target_width=self.debug_width)
        if is_worst:
            trace = result.trace
            caption = f"exit {trace.exit_layer}/{trace.num_layers} {trace.reason.name.lower()}"
            entry = (l2, index, encode_png(image), caption)
            (heapq.heappush if len(self._worst) < self._candidates else heapq.heappushpop)(self._worst, entry)
        if self.video:
            self.video.add(image)
        if self.recorder:
            self.recorder.write_frame(frame.camera_stamp_s, frame.camera_msg, results, self.deltas_m, self.shown,
                                      image, trajectory_markers(result, truth=frame.truth_m), frame.truth_m,
                                      frame.prior_age_s)

    def worst(self, bag: str) -> list[WorstFrame]:
        """The worst frames, worst first, at least WORST_FRAME_GAP frames apart (not six frames of one moment)."""
        picked: list[WorstFrame] = []
        for l2, index, png, caption in sorted(self._worst, reverse=True):
            if len(picked) < self.worst_frames and all(abs(index - w.frame) >= WORST_FRAME_GAP for w in picked):
                picked.append(WorstFrame(bag, index, l2, png, caption))
        return picked

    def close(self) -> None:
        for output in (self.recorder, self.video):
            if output is not None:
                output.close()


@dataclass(frozen=True, slots=True)
class EvalOutputs:
    """What deead_eval draws besides the table: the setting shown, its debug images, and per-bag recordings."""

    shown: str = "full"                         # a setting of delta_settings (its plans are drawn and recorded)
    camera: str = "none"                        # a key of CAMERAS: project the plans onto the camera image
    debug_width: int = 640                      # debug images are drawn at this width, px
    worst_frames: int = 6                       # per bag, for the report page
    files: tuple[tuple[str, str, str], ...] = ()    # (bag, --record path or "", --video path or "")


@dataclass(frozen=True, slots=True)
class EvalJob:
    """deead_eval's work on one bag (deead_lab.scale_out.BagJob): the engines load once per worker."""

    model: str
    backend: str
    num_threads: int
    first_checkpoint: int
    deltas: tuple[float, ...]
    max_frames: int = 0
    remaps: tuple[tuple[str, str], ...] = ()
    outputs: EvalOutputs = EvalOutputs()

    def setup(self) -> Runner:
        chain = make_engine(self.backend, self.model or demo_manifest_path(), num_threads=self.num_threads)
        return Runner(chain, ExitSettings(first_checkpoint=self.first_checkpoint), PriorSettings())

    def run(self, runner: Runner, bag: Path
            ) -> tuple[list[Row], dict[str, int], list[WorstFrame], list[dict[str, Any]]]:
        """(one row per frame and setting, with the bag's path; {input: times it was not used}; the worst frames;
        each camera that differs from the model's, deead_ros.sensor_contract's values)."""
        remaps = dict(self.remaps)
        recorded = topics.bag_topics(bag, remaps)
        rejected: dict[str, int] = {}

        def count(topic: str, reason: str) -> None:
            rejected[topic] = rejected.get(topic, 0) + 1

        sensors, image_hw = runner.chain.manifest.sensors, model_image_hw(runner.encoder)
        contract = CameraContract(model_cameras(sensors, image_hw))     # warn: planned anyway, as the node's default
        frames = bag_frames(bag, runner.encoder.accel_window_s, image_hw, on_rejected=count,
                            remaps=remaps, sensors=sensors, contract=contract)
        runner.reset_memory(f"new bag {bag}")           # a model with memory starts each bag afresh
        outputs = self.outputs
        record, video = next(((r, v) for b, r, v in outputs.files if b == str(bag)), ("", ""))
        camera = CAMERAS[outputs.camera]
        sink = FrameOutputs(
            outputs.shown, {"full": math.nan, **{setting_name(d): d for d in self.deltas}}, runner.dt_s,
            camera() if camera else None, outputs.debug_width, outputs.worst_frames,
            PlanRecorder(Path(record), self.backend, runner.chain.manifest.model_version) if record else None,
            DebugVideo(Path(video), camera_rate_hz(bag, remaps)) if video else None)
        try:
            rows = evaluate(runner, frames, delta_settings(runner, self.deltas), self.max_frames, sink)
        finally:
            sink.close()
        if not rows:
            names = runner.chain.manifest.sensors.camera_names
            cameras = (f"/camera/<name>/image/compressed or .../raw with /camera/<name>/camera_info for each of "
                       f"{', '.join(names)} (a set per instant)" if len(names) > 1 else
                       f"{topics.CAMERA_COMPRESSED} or {topics.CAMERA_RAW}")
            raise BadInputError(
                f"no camera frames in {bag}. It reads {cameras} (camera), "
                f"{topics.ODOMETRY}, {topics.ROUTE}, and optionally {topics.COMMAND} and {topics.GROUND_TRUTH}; "
                f"the bag has {', '.join(sorted(recorded)) or 'no topics'}{' (after --remap)' if remaps else ''}. "
                f"Map its topics with --remap OLD:=NEW, e.g. "
                f"--remap /sensing/camera/front/image_raw/compressed:={topics.CAMERA_COMPRESSED}")
        differs = [{"bag": str(bag), **r.to_dict()} for r in contract.reports.values() if r.actual_hw != r.expected_hw]
        return [{"bag": str(bag), **row} for row in rows], rejected, sink.worst(str(bag)), differs


def write_worst_frames(folder: Path, worst: list[WorstFrame]) -> None:
    """The worst frames' debug images as PNG files, worst first (a previous run's are removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    for rank, frame in enumerate(worst):
        (folder / f"{rank:02d}_{Path(frame.bag).name}_frame_{frame.frame:05d}.png").write_bytes(frame.png)


def per_bag_path(path: str, index: int, bags: list[Path]) -> str:
    """--record/--video path of the index-th bag: the path itself for one bag, else its stem + _NNN_<bag name>."""
    if not path or len(bags) == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}_{index:03d}_{bags[index].name}{p.suffix}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_eval", description=__doc__.splitlines()[0])
    parser.add_argument("bags", nargs="+", help="rosbag2 folders (mcap or sqlite3), or globs of them")
    parser.add_argument("--remap", nargs="*", default=[], type=str, metavar="OLD:=NEW",
                        help="rename the bag's topics to the ones deead_eval reads, as deead_replay does")
    parser.add_argument("--model", default="", help="manifest.json (default: the demo model installed by make setup)")
    parser.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--delta", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="thresholds to compare, m")
    parser.add_argument("--first-checkpoint", type=int, default=default("exit.first_checkpoint"))
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=0, help="per bag; 0: all")
    parser.add_argument("--workers", type=int, default=1, help="Ray workers, one bag at a time each (1: this process)")
    parser.add_argument("--ray-address", default="", help="join an existing Ray cluster (e.g. auto, ray://host:10001)")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"),
                        help="folder for CSV, JSON, plots and the report page index.html")
    parser.add_argument("--show", default="", metavar="SETTING",
                        help="setting whose plans are drawn and recorded: full or delta_<D> "
                             "(default: the last --delta)")
    parser.add_argument("--camera", default="none", choices=sorted(CAMERAS),
                        help="camera model to project the plans onto the image (metadrive: the demo bag's camera)")
    parser.add_argument("--worst-frames", type=int, default=6, help="the report shows the debug images of this many "
                        "of the worst frames by L2, 2 s apart (0: none)")
    parser.add_argument("--debug-width", type=int, default=640, help="width of the debug images, px")
    parser.add_argument("--record", default="", metavar="OUT.mcap",
                        help="write the camera, plans, prior, markers, debug images and exit diagnostics as a ROS 2 "
                             "MCAP (a path without .mcap: a rosbag2 folder); several bags: one file each")
    parser.add_argument("--video", default="", metavar="OUT.mp4", help="write the debug images as an H.264 video")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    shown = args.show or setting_name(args.delta[-1])
    if shown not in ("full", *map(setting_name, args.delta)):
        print(f"deead_eval: --show {shown} is not a setting of this run: full or "
              f"{' '.join(map(setting_name, args.delta))}", file=sys.stderr)
        return 2
    try:
        bags = expand_bags(args.bags)
        files = tuple((str(bag), per_bag_path(args.record, i, bags), per_bag_path(args.video, i, bags))
                      for i, bag in enumerate(bags))
        outputs = EvalOutputs(shown, args.camera, args.debug_width, args.worst_frames, files)
        job = EvalJob(args.model, args.backend, args.num_threads, args.first_checkpoint, tuple(args.delta),
                      args.max_frames, tuple(topics.parse_remaps(args.remap).items()), outputs)
        run = run_bags(job, bags, workers=args.workers, ray_address=args.ray_address)
    except (DeeadError, argparse.ArgumentTypeError) as err:
        print(f"deead_eval: {err}", file=sys.stderr)
        return 2
    for failed in run.failed:
        print(f"deead_eval: bag not used: {failed.bag}: {failed.error}", file=sys.stderr)
    rows = [row for outcome in run.outcomes if outcome.ok for row in outcome.result[0]]
    for outcome in run.outcomes:
        for topic, count in (outcome.result[1].items() if outcome.ok else ()):
            print(f"[eval] {outcome.bag}: {topic} not used in {count} message(s)", file=sys.stderr)
    cameras = [camera for outcome in run.outcomes if outcome.ok for camera in outcome.result[3]]
    for camera in cameras:
        print(f"[eval] {camera['bag']}: {camera['message']}", file=sys.stderr)
    if not rows:
        print("deead_eval: no bag could be evaluated (see above)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "frames.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    # camera_contract: the cameras that differ from the model's ([] when every camera matches it)
    (args.out / "summary.json").write_text(json.dumps({**summary, "camera_contract": cameras}, indent=2))
    plot(rows, summary, args.out)
    worst = sorted((w for outcome in run.outcomes if outcome.ok for w in outcome.result[2]),
                   key=lambda w: w.l2_3s_m, reverse=True)[:args.worst_frames]
    write_worst_frames(args.out / "worst_frames", worst)
    wall_s = time.perf_counter() - start
    written = [path for outcome, (_, record, video) in zip(run.outcomes, files) if outcome.ok
               for path in (record, video) if path]
    run_settings = {
        "command": shlex.join(["deead_eval", *(sys.argv[1:] if argv is None else argv)]),
        "bags": " ".join(str(b) for b in bags), "model": str(args.model or demo_manifest_path()),
        "backend": f"{args.backend}, {args.num_threads} thread(s)", "setting shown": shown,
        "exit settings": repr(ExitSettings(first_checkpoint=args.first_checkpoint)),
        "prior settings": repr(PriorSettings()), "camera projection": args.camera,
        "frames": f"{summary['full']['frames']} (--max-frames {args.max_frames or 'all'} per bag)",
        "run": f"{run.mode}, {run.workers} worker(s), {wall_s:.1f} s", "source commit": source_commit() or "unknown",
        "recordings": " ".join(written) or "none (--record, --video)"}
    page = write_page(args.out, rows, summary, worst, run_settings, (args.out / "eval.png").read_bytes())
    print_table(summary)
    print(f"[eval] {len(rows)} plans of {len(bags) - len(run.failed)} bag(s) in {wall_s:.1f} s "
          f"({run.mode}, {run.workers} worker(s)); wrote {args.out}/frames.csv, summary.json, eval.png, {page.name}"
          + "".join(f", {path}" for path in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
