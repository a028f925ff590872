"""deead_eval: run the planner over a bag without the middleware and report exits, errors and time.

The same Runner and the same input assembly as the live node, fed straight from the bag (exact
and fast: no transport, no dropped frames). For each delta and for full depth it writes a
per-frame CSV, a summary JSON and plots, and prints the table side by side.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from deead_ros.engines import make_engine
from deead_ros.errors import BadInputError, DeeadError
from deead_ros.model.encoding import FrameInputs
from deead_ros.exit import ExitPolicy, ExitSettings, FullPolicy, PriorSettings
from deead_ros.exit.metrics import l2_at_m
from deead_ros.frame_assembly import (CameraStampGuard, InputSettings, LatestInputs, model_image_hw, path_points,
                                     stamp_s)
from deead_ros.parameters import default
from deead_ros.paths import demo_manifest_path
from deead_ros.runner import PlanResult, Runner
from deead_ros.tools import bags as topics
from deead_ros.tools.bags import iterate_bag_timed
from deead_ros.tools.scale_out import expand_bags, run_bags


@dataclass(frozen=True, slots=True)
class EvalFrame:
    """One frame to plan, with its ground truth when the source has it."""

    inputs: FrameInputs
    ego_motion_known: bool
    truth_m: np.ndarray | None       # (T, 2) expert's future, ego frame
    camera_stamp_s: float = float("nan")
    external_ego_m: np.ndarray | None = None


def bag_frames(bag: Path, accel_window_s: float, image_hw: tuple[int, int] | None = None,
               settings: InputSettings = InputSettings(), max_input_age_s: float = default("io.max_input_age_s"),
               on_rejected: Callable[[str, str], None] = lambda topic, reason: None,
               remaps: dict[str, str] | None = None) -> Iterator[EvalFrame]:
    """Frames of a bag assembled exactly as the live node assembles them.

    The same LatestInputs, the same decoding (image_hw: the model's (H, W), as the node passes it) and
    the same timing rule: the node waits (io.odometry_wait_s) for odometry stamped at or after the
    frame before assembling it; here every later message is at hand, so a camera frame waits in a
    queue until that odometry sample and every message recorded at the same instant have been fed,
    or until the bag has moved io.odometry_max_gap_s past the frame (no later sample could be used).
    Camera stamps that go back are skipped like the node's `stamp_backwards` drops. `remaps` renames the
    bag's topics to this package's ({recorded: ours}, from `--remap OLD:=NEW`), as deead_replay does.
    """
    inputs = LatestInputs(accel_window_s=accel_window_s, settings=settings, on_rejected=on_rejected)
    guard = CameraStampGuard()
    truths: dict[float, np.ndarray] = {}
    waiting: deque[list] = deque()      # [camera record ns, message, raw, record ns its odometry was in or None]
    give_up_ns = int(settings.odometry_max_gap_s * 1e9)

    def ready(record_ns: int) -> Iterator[EvalFrame]:
        """Assemble the frames whose odometry was in before this record time (all messages of that instant fed)."""
        while waiting and (record_ns - waiting[0][0] > give_up_ns
                           or (waiting[0][3] is not None and record_ns > waiting[0][3])):
            _, msg, raw, _ = waiting.popleft()
            try:
                frame = inputs.assemble(msg, raw, max_input_age_s, False, image_hw)
            except BadInputError as err:
                print(f"[eval] camera frame at {stamp_s(msg.header.stamp):.2f} s skipped: {err}", file=sys.stderr)
                continue
            yield EvalFrame(frame.inputs, frame.ego_motion_known, truths.pop(frame.camera_stamp_s, None),
                            frame.camera_stamp_s, frame.external_ego_m)

    def mark_ready(record_ns: int) -> None:
        for entry in waiting:
            if entry[3] is None and inputs.wait_for_odometry(stamp_s(entry[1].header.stamp), timeout_s=0.0):
                entry[3] = record_ns

    for topic, record_ns, msg in iterate_bag_timed(bag, remaps):
        yield from ready(record_ns)
        if topic == topics.ROUTE:
            inputs.set_route(msg)
        elif topic == topics.ODOMETRY:
            inputs.set_odometry(msg)
            mark_ready(record_ns)
        elif topic == topics.COMMAND:
            inputs.set_command(msg)
        elif topic == topics.GROUND_TRUTH:
            truths[stamp_s(msg.header.stamp)] = path_points(msg)
        elif topic in (topics.CAMERA_COMPRESSED, topics.CAMERA_RAW):
            camera_s = stamp_s(msg.header.stamp)
            if guard.refuse(camera_s, camera_s, max_frame_age_s=0.0, max_future_s=0.0) is None:
                waiting.append([record_ns, msg, topic == topics.CAMERA_RAW, None])
                mark_ready(record_ns)
    yield from ready(2**62)                                  # the bag ended: assemble with what there is


def evaluate(runner: Runner, frames: Iterable[EvalFrame], settings: dict[str, ExitPolicy],
             max_frames: int = 0) -> list[dict]:
    """Plan every frame under every setting (same frame, back to back); one row per frame and setting."""
    rows: list[dict] = []
    for index, frame in enumerate(frames):
        if max_frames and index >= max_frames:
            break
        for name, policy in settings.items():
            result = runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known, policy=policy,
                                 external_ego_m=frame.external_ego_m, ground_truth_m=frame.truth_m)
            rows.append(_row(index, name, result, frame.truth_m, runner.dt_s))
        if (index + 1) % 50 == 0:
            print(f"[eval] {index + 1} frames", flush=True)
    return rows


def delta_settings(runner: Runner, deltas: Iterable[float]) -> dict[str, ExitPolicy]:
    """Full depth plus the configured policy at each delta."""
    base_exit, _ = runner.settings
    return {"full": FullPolicy(), **{f"delta_{d:g}": replace(base_exit, delta_m=d).build_policy() for d in deltas}}


def _row(frame: int, setting: str, result: PlanResult, truth: np.ndarray | None, dt_s: float) -> dict:
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


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per setting: frames, mean exit layer, sparsity, checks, latency p50/p95, L2 at 1/2/3 s, ratios to full."""
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
            "check_time_share": float(sum(r["checks_ms"] for r in sel) / total.sum()),
            **{f"l2_{t}s_m": float(np.nanmean([r[f"l2_{t}s_m"] for r in sel])) for t in (1, 2, 3)},
            "fallback_share": float(np.mean([bool(r["fallback"]) for r in sel])),
            "refused_exits_per_frame": float(np.mean([r["refused_exits"] for r in sel])),
        }
    full = summary.get("full")
    for values in summary.values():
        values["latency_ratio_vs_full"] = values["latency_p50_ms"] / full["latency_p50_ms"] if full else float("nan")
    return summary


def print_table(summary: dict[str, dict]) -> None:
    columns = [("mean_exit_layer", "exit layer", ".1f"), ("layer_sparsity", "sparsity", ".1%"),
               ("checks_per_frame", "checks", ".2f"), ("latency_p50_ms", "p50 ms", ".2f"),
               ("latency_p95_ms", "p95 ms", ".2f"), ("latency_ratio_vs_full", "vs full", ".2f"),
               ("l2_1s_m", "L2 1s", ".3f"), ("l2_2s_m", "L2 2s", ".3f"), ("l2_3s_m", "L2 3s", ".3f")]
    print(f"{'setting':>12} " + " ".join(f"{title:>10}" for _, title, _ in columns))
    for setting, values in summary.items():
        print(f"{setting:>12} " + " ".join(f"{values[key]:>10{fmt}}" for key, _, fmt in columns))


def plot(rows: list[dict], summary: dict[str, dict], out: Path) -> None:
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


@dataclass(frozen=True, slots=True)
class EvalJob:
    """deead_eval's work on one bag (deead_ros.tools.scale_out.BagJob): the engines load once per worker."""

    model: str
    backend: str
    num_threads: int
    first_checkpoint: int
    deltas: tuple[float, ...]
    max_frames: int = 0
    remaps: tuple[tuple[str, str], ...] = ()

    def setup(self) -> Runner:
        chain = make_engine(self.backend, self.model or demo_manifest_path(), num_threads=self.num_threads)
        return Runner(chain, ExitSettings(first_checkpoint=self.first_checkpoint), PriorSettings())

    def run(self, runner: Runner, bag: Path) -> tuple[list[dict], dict[str, int]]:
        """(one row per frame and setting, with the bag's path; {input: times it was not used})."""
        remaps = dict(self.remaps)
        recorded = topics.bag_topics(bag, remaps)
        rejected: dict[str, int] = {}

        def count(topic: str, reason: str) -> None:
            rejected[topic] = rejected.get(topic, 0) + 1

        frames = bag_frames(bag, runner.encoder.accel_window_s, model_image_hw(runner.encoder), on_rejected=count,
                            remaps=remaps)
        rows = evaluate(runner, frames, delta_settings(runner, self.deltas), self.max_frames)
        if not rows:
            raise BadInputError(
                f"no camera frames in {bag}. It reads {topics.CAMERA_COMPRESSED} or {topics.CAMERA_RAW} (camera), "
                f"{topics.ODOMETRY}, {topics.ROUTE}, and optionally {topics.COMMAND} and {topics.GROUND_TRUTH}; "
                f"the bag has {', '.join(sorted(recorded)) or 'no topics'}{' (after --remap)' if remaps else ''}. "
                f"Map its topics with --remap OLD:=NEW, e.g. "
                f"--remap /sensing/camera/front/image_raw/compressed:={topics.CAMERA_COMPRESSED}")
        return [{"bag": str(bag), **row} for row in rows], rejected


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
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="folder for CSV, JSON and plots")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        bags = expand_bags(args.bags)
        job = EvalJob(args.model, args.backend, args.num_threads, args.first_checkpoint, tuple(args.delta),
                      args.max_frames, tuple(topics.parse_remaps(args.remap).items()))
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
    if not rows:
        print("deead_eval: no bag could be evaluated (see above)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "frames.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(rows, summary, args.out)
    print_table(summary)
    print(f"[eval] {len(rows)} plans of {len(bags) - len(run.failed)} bag(s) in {time.perf_counter() - start:.1f} s "
          f"({run.mode}, {run.workers} worker(s)); wrote {args.out}/frames.csv, summary.json, eval.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
