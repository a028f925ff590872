"""deead_calibrate: choose exit.delta_m with a finite-sample risk guarantee (Learn then Test).

The question it answers: "with this delta, how often does the early-exit trajectory differ from the
full-depth one by more than eps metres, and how sure are we?" For each delta of a grid and each frame
of the calibration bags, the loss is

    loss(frame, delta) = 1{ L2 at `at_s` (default: the model's horizon, 3 s) between the trajectory the
                            runner publishes with early exit at delta and the one it publishes at full depth > eps }

(label-free: any bag will do), or with `--against truth` the same against the bag's ground truth
(/ground_truth/trajectory). The risk R(delta) = P(loss = 1) on a new frame. deead_calibrate returns the
largest delta it can certify: R(delta) <= alpha with probability >= confidence = 1 - d over the draw of
the calibration set.

Method: Learn then Test (Angelopoulos et al., arXiv 2110.01052), as CALM calibrates its exits.
- Each delta is a null hypothesis H(delta): R(delta) > alpha. With n frames and k losses, the exact
  binomial tail p(delta) = P(Binomial(n, alpha) <= k) is a valid p-value (Clopper-Pearson's one-sided
  test): under H, k is stochastically at least Binomial(n, alpha). The matching upper confidence bound
  on R(delta) (Clopper-Pearson, level 1 - d) is reported beside it; p <= d exactly when that bound <= alpha.
- Family-wise error over the grid by fixed-sequence testing: test the deltas from strict (small: exits
  late) to loose (large: exits early), each at level d, and stop at the first that is not rejected;
  every delta before it is certified and we return the largest. The order is fixed before the data is
  seen, so the chance of certifying any delta whose risk exceeds alpha is <= d with no Bonferroni
  division of d by the grid's size (which would ask for many more frames), and nothing assumes that
  R(delta) grows with delta: it need not, frame by frame (a larger delta changes the multi-hop strides,
  so the checkpoints visited, and validation may refuse an exit and send the frame deeper). If the risk
  is not monotone, fixed-sequence only loses power (it stops at the first bump); it stays valid.
- Conformal risk control (arXiv 2208.02814) would bound the expected loss marginally and needs a loss
  monotone in delta; LTT gives the stronger "with probability 1 - d" statement without monotonicity.

Units: whole drives (the default, `--unit drive`). The frames of one drive are not independent (10 Hz,
the same road, the same traffic), so a bound that counts frames as i.i.d. (`--unit frame`, exact binomial)
is optimistic, and so are short blocks of one drive (`--unit block --block-s S`): neighbouring blocks share
the road. What can be exchangeable with the drives the node will see are whole drives from the same
population: here one collected episode (`ep_*.npz`, one MetaDrive map) is one drive, and in a bag a
camera-stamp gap above `--drive-gap-s` starts one. Each drive's share of bad frames is its loss in
[0, 1], and the risk bounded is their mean over drives: the chance that a frame of a new drive is bad.
The p-value over drives is Waudby-Smith and Ramdas' betting test (LTT's WSR, `--unit-bound betting`,
the default) or Hoeffding-Bentkus (`--unit-bound hoeffding_bentkus`). Betting adapts to how the losses
spread (most drives lose nothing, a few a small share): 40 drives of which 6 lose a fifth of their frames
(mean 0.03) bound the risk at 0.09 at confidence 0.9, Hoeffding-Bentkus only at 0.13. Both need a floor
of drives even with no loss at all (at alpha 0.1 and confidence 0.9: 25 for betting, 22 for
Hoeffding-Bentkus).

Cost: each frame runs once through the whole chain with the shared head read after every layer (and
the full-depth plan); each delta's exit is then replayed from those recorded trajectories by the very
controller the node runs (deead_ros.exit.run_with_exit over a chain that returns the recorded heads,
with the runner's validation), instead of re-running the model per delta. A test checks the replayed
exits and trajectories against direct Runner runs, and `--latency-frames` repeats the check on the bag.

Outputs in --out: calibration.param.yaml (the exit.* parameters, for `deead_node --ros-args --params-file`),
calibration.json (the bound and the evidence per delta), calibration.png (risk with its bound and the
layer share vs delta). `--split-test N` also splits the drives N times at random into a calibration half
and a held-out half, calibrates on the first and measures the risk on the second: how often the held-out
risk exceeds alpha (the guarantee says at most d of the time, up to the held-out half's own sampling
noise) and how often a delta above 0 is chosen at all (full depth is safe by construction and saves nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from deead_ros.engines import make_engine
from deead_ros.engines.manifest import load_manifest
from deead_ros.errors import DeeadError
from deead_ros.exit import (ExitSettings, PriorSettings)
from deead_ros.exit.metrics import l2_at_m
from deead_ros.exit.validation import ValidationLimits
from deead_ros.frame_assembly import model_image_hw
from deead_ros.parameters import default
from deead_ros.paths import demo_manifest_path, source_commit
from deead_ros.runner import Runner
from deead_ros import bags as topics
from deead_lab.dataset_format import load_episode
from deead_lab.eval import EvalFrame, bag_frames, delta_settings, evaluate, summarise
from deead_lab.calibration.replay import BagRecords, Replayed, check_bag_topics, record_frames, replay
from deead_lab.calibration.risk import (UNIT_BOUNDS, CalibrationError, calibration_units, check_settings,
                                        guarantee_statement, learn_then_test, split_test, units_of)
from deead_lab.scale_out import BagRun, ScaleOutError, compare_serial_and_ray, expand_bags, run_bags
from deead_lab.train import episode_frames

# Fine below 0.25 m: on a model whose depth matters, a strict eps is certified only at small deltas.
DEFAULT_DELTAS_M = (0.05, 0.1, 0.15, 0.2, *(float(d) for d in np.round(np.arange(0.25, 4.0001, 0.25), 2)))
UNITS = ("frame", "block", "drive")




# --------------------------------------------------------------------------------------------------------------
# The statistics: exact binomial tail, Clopper-Pearson, Hoeffding-Bentkus, fixed-sequence testing






















# --------------------------------------------------------------------------------------------------------------
# Recording: each frame once through every layer; replay: any delta's exit from the recording






















# --------------------------------------------------------------------------------------------------------------
# Learn then Test over units (frames, blocks or drives)






# --------------------------------------------------------------------------------------------------------------
# The job each worker runs (Ray or serial), and the outputs


@dataclass(frozen=True, slots=True)
class RecordJob:
    """Load the engines once per worker; record every frame of a bag."""

    model: str
    backend: str = "onnxruntime"
    num_threads: int = 1
    exit_settings: ExitSettings = ExitSettings()
    need_truth: bool = False
    drive_gap_s: float = 0.5
    max_frames: int = 0

    def setup(self) -> Runner:
        chain = make_engine(self.backend, self.model or demo_manifest_path(), num_threads=self.num_threads)
        return Runner(chain, self.exit_settings, PriorSettings())

    def run(self, runner: Runner, bag: Path) -> BagRecords:
        if is_episode(bag):
            if not bag.is_file():
                raise CalibrationError(f"{bag}: no such episode (collect it: deead_lab.collect_metadrive)")
            records = record_frames(runner, source_frames(runner, bag), str(bag), max_frames=self.max_frames)
            records = replace(records, drive=np.zeros(len(records), np.int64))      # one episode is one drive
            rejected: dict[str, int] = {}
        else:
            check_bag_topics(bag, self.need_truth)
            rejected = {}

            def count(topic: str, reason: str) -> None:
                rejected[topic] = rejected.get(topic, 0) + 1

            records = record_frames(runner, source_frames(runner, bag, count), str(bag), self.drive_gap_s,
                                    self.max_frames)
        if len(records) == 0:
            raise CalibrationError(f"{bag}: no camera frame could be assembled (inputs not used: {rejected or 'none'})")
        if self.need_truth and np.isnan(records.truth_m).all(axis=(1, 2)).any():
            missing = int(np.isnan(records.truth_m).all(axis=(1, 2)).sum())
            raise CalibrationError(f"{bag}: {missing} of {len(records)} frames have no {topics.GROUND_TRUTH} message "
                                   "at their camera stamp (needed by --against truth)")
        return replace(records, inputs_not_used=rejected)


def is_episode(path: Path) -> bool:
    """A collected episode file (deead_lab.dataset_format), not a rosbag2."""
    return path.suffix == ".npz"


def episode_eval_frames(path: Path, accel_window_s: float) -> list[EvalFrame]:
    """The frames of one collected episode (one drive) that the model report scores, with the expert's future."""
    episode = load_episode(path)
    keep, frames = episode_frames(episode, accel_window_s)
    stamps = np.asarray(episode["timestamp"], dtype=np.float64)[keep]
    truth = np.asarray(episode["future_ego"], dtype=np.float32)[keep]
    return [EvalFrame(frame, True, future, float(stamp)) for frame, future, stamp in zip(frames, truth, stamps)]


def source_frames(runner: Runner, path: Path,
                  on_rejected: Callable[[str, str], None] = lambda topic, reason: None) -> Iterable[EvalFrame]:
    """The frames of a rosbag2 or of a collected episode, as the runner takes them."""
    if is_episode(path):
        return episode_eval_frames(path, runner.encoder.accel_window_s)
    return bag_frames(path, runner.encoder.accel_window_s, model_image_hw(runner.encoder), on_rejected=on_rejected)


def params_yaml(settings: ExitSettings, result: dict, source: str) -> str:
    """The calibrated exit.* parameters as a ROS 2 params file (`/**: ros__parameters:`)."""
    rows = result["ltt"]["rows"]
    chosen = rows[result["ltt"]["chosen_index"]]
    guarantee = result["guarantee"]
    table = ", ".join(f"{v:g}" for v in settings.stride_table)
    statement = textwrap.fill(f"Guarantee: {guarantee['statement']}.", 110, initial_indent="# ",
                              subsequent_indent="# ")
    return (f"# Written by deead_calibrate ({textwrap.shorten(source, 200)}).\n{statement}\n"
            f"# (Learn then Test, {guarantee['unit']}s as units, {guarantee['unit_bound']} p-values: {chosen['n']} "
            f"units, {chosen['frames']} frames, {chosen['losses']} losses, upper bound {chosen['upper_bound']:.4f}).\n"
            "# It holds for the model and the exit settings below (budget_ms 0: a budget that cuts a frame short is\n"
            "# not replayed); load after the node's config:\n"
            "#   deead_node --ros-args --params-file config/deead_node.param.yaml --params-file <this file>\n"
            "/**:\n  ros__parameters:\n    exit:\n"
            f"      policy: {settings.policy}\n"
            f"      delta_m: {float(result['delta_m'])!r}\n"
            f"      first_checkpoint: {settings.first_checkpoint}\n"
            f"      min_exit_layer: {settings.min_exit_layer}\n"
            f"      horizon_s: {float(settings.horizon_s)!r}\n"
            f"      stride_table: [{table}]\n"
            f"      max_checks: {settings.max_checks}\n"
            "      budget_ms: 0.0\n")


def plot(result: dict, out: Path) -> None:
    """Risk with its upper bound vs delta, and the share of layers run vs delta."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["ltt"]["rows"]
    deltas = [r["delta_m"] for r in rows]
    g = result["guarantee"]
    fig, (risk_ax, layer_ax) = plt.subplots(1, 2, figsize=(11, 4))
    per_unit = "" if g["unit"] == "frame" else f" (mean over {g['unit']}s)"
    risk_ax.plot(deltas, [r["empirical_risk"] for r in rows], "o-", label=f"empirical risk{per_unit}")
    risk_ax.plot(deltas, [r["upper_bound"] for r in rows], "s--", label=f"upper bound ({g['confidence']:g})")
    risk_ax.axhline(g["alpha"], color="tab:red", lw=1, label=f"alpha {g['alpha']:g}")
    layer_ax.plot(deltas, [r["layer_share"] for r in rows], "o-", color="tab:green")
    if result["delta_m"] is not None:
        for ax in (risk_ax, layer_ax):
            ax.axvline(result["delta_m"], color="grey", ls=":", label=f"chosen {result['delta_m']:g} m")
    risk_ax.set(title=f"P(L2 at {g['at_s']:g} s vs {g['against']} > {g['eps_m']:g} m)", xlabel="delta (m)",
                ylabel="risk")
    layer_ax.set(title="share of layers run", xlabel="delta (m)", ylabel="layers run / layers", ylim=(0, 1.02))
    risk_ax.legend()
    layer_ax.legend()
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------
# The split test: does the guarantee hold on held-out frames?






# --------------------------------------------------------------------------------------------------------------


def measure_latency(job: RecordJob, bag: Path, delta_m: float, frames: int, replayed_exits: np.ndarray) -> dict:
    """Direct Runner runs at delta_m and at full depth on the bag's first `frames` frames (back to back per frame).

    Also compares the exit layers with the replay's (the same frames, the same order).
    """
    runner = job.setup()
    settings = delta_settings(runner, [delta_m])
    rows = evaluate(runner, source_frames(runner, bag), settings, frames)
    summary = summarise(rows)
    name = f"delta_{delta_m:g}"
    direct = np.array([r["exit_layer"] for r in rows if r["setting"] == name])
    mismatches = int((direct != replayed_exits[: len(direct)]).sum())
    s, full = summary[name], summary["full"]
    return {"frames": int(len(direct)), "latency_p50_ms": s["latency_p50_ms"], "latency_p95_ms": s["latency_p95_ms"],
            "full_latency_p50_ms": full["latency_p50_ms"], "full_latency_p95_ms": full["latency_p95_ms"],
            "latency_mean_ms": s["latency_mean_ms"], "full_latency_mean_ms": full["latency_mean_ms"],
            "latency_ratio_vs_full": s["latency_ratio_vs_full"], "layer_sparsity": s["layer_sparsity"],
            "mean_exit_layer": s["mean_exit_layer"], "replay_exit_mismatches": mismatches,
            "load_average": round(os.getloadavg()[0], 1)}     # ONNX Runtime on one thread: ratios hold better than ms


def calibrate(records: list[BagRecords], base: ExitSettings, limits: ValidationLimits, deltas_m: Sequence[float],
              eps_m: float, alpha: float, confidence: float, against: str, at_s: float, unit: str,
              block_s: float, unit_bound: str = "betting") -> tuple[dict, Replayed, np.ndarray, np.ndarray, np.ndarray]:
    """Replay every delta over the records and run LTT; returns (result, replayed, losses, drive keys, stamps)."""
    replayed = replay(records, base, deltas_m, limits, at_s)
    l2 = replayed.l2_vs_truth_m if against == "truth" else replayed.l2_vs_full_m
    losses = l2 > eps_m
    drive_keys = np.concatenate([rec.drive + 1_000_000 * i for i, rec in enumerate(records)])
    stamps = np.concatenate([rec.stamps_s for rec in records])
    units = units_of(drive_keys, stamps, unit, block_s)
    guarantee = {"eps_m": eps_m, "alpha": alpha, "confidence": confidence, "against": against, "at_s": at_s,
                 "unit": unit, "block_s": block_s if unit == "block" else None,
                 "unit_bound": "binomial" if unit == "frame" else unit_bound,
                 "statement": guarantee_statement(eps_m, alpha, confidence, against, at_s, unit)}
    try:
        ltt = learn_then_test(losses, units, deltas_m, alpha, confidence, unit_bound=unit_bound)
    except CalibrationError as err:
        ltt = {"rows": [], "certified": 0, "chosen_index": -1, "delta_m": None, "refused": str(err)}
    share = replayed.exit_layer.mean(axis=0) / replayed.num_layers
    for j, row in enumerate(ltt["rows"]):
        row["layer_share"] = float(share[j])
        row["mean_exit_layer"] = float(replayed.exit_layer[:, j].mean())
    if against == "truth":       # what no delta can beat: the full-depth plan's own misses
        full_vs_truth = np.array([l2_at_m(r.full_m[i], r.truth_m[i], r.dt_s, at_s) for r in records
                                  for i in range(len(r))])
        guarantee["full_depth_risk"] = float((full_vs_truth > eps_m).mean()) if len(full_vs_truth) else 0.0
    result = {"delta_m": ltt["delta_m"], "guarantee": guarantee, "ltt": ltt,
              "calibration_units": calibration_units(units, drive_keys, unit),
              "frames": int(len(losses)), "drives": int(len(np.unique(drive_keys))),
              "units": int(len(np.unique(units))), "num_layers": replayed.num_layers,
              "full_depth_fallback_share": float(1 - np.concatenate([r.full_is_valid for r in records]).mean())
              if records else 0.0,
              "exit_settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(base).items()},
              "bags": [{"bag": r.bag, "frames": len(r), "drives": int(len(np.unique(r.drive))),
                        "inputs_not_used": r.inputs_not_used} for r in records]}
    return result, replayed, losses, drive_keys, stamps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_calibrate", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bags", nargs="+", help="rosbag2 folders or files, or collected episodes (ep_*.npz: one "
                        "drive each), or glob patterns (quoted)")
    parser.add_argument("--eps", type=float, default=1.0, help="tolerated L2 error, m")
    parser.add_argument("--alpha", type=float, default=0.1, help="tolerated risk P(L2 > eps)")
    parser.add_argument("--confidence", type=float, default=0.9, help="1 - d: probability that the bound holds")
    parser.add_argument("--against", choices=("full", "truth"), default="full",
                        help="full: the full-depth plan (label-free); truth: /ground_truth/trajectory")
    parser.add_argument("--at-s", type=float, default=None, help="time of the L2, s (default: the model's horizon)")
    parser.add_argument("--deltas", type=float, nargs="+", default=list(DEFAULT_DELTAS_M),
                        help="candidate exit.delta_m values, strictly increasing (tested strict to loose)")
    parser.add_argument("--unit", choices=UNITS, default="drive",
                        help="i.i.d. unit of the bound: drive (the one to trust), block, or frame (binomial: "
                             "optimistic, frames of a drive are not independent)")
    parser.add_argument("--unit-bound", choices=UNIT_BOUNDS, default="betting",
                        help="p-value over drive or block units: betting (Waudby-Smith-Ramdas) or hoeffding_bentkus")
    parser.add_argument("--block-s", type=float, default=10.0, help="--unit block: block length, s")
    parser.add_argument("--drive-gap-s", type=float, default=0.5, help="a camera-stamp gap above this starts a drive")
    parser.add_argument("--model", default="", help="manifest.json (default: the demo model installed by make setup)")
    parser.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--first-checkpoint", type=int, default=default("exit.first_checkpoint"))
    parser.add_argument("--max-checks", type=int, default=default("exit.max_checks"),
                        help="exit.max_checks replayed (looks before running straight to the last layer)")
    parser.add_argument("--max-frames", type=int, default=0, help="frames per bag (0: all)")
    parser.add_argument("--workers", type=int, default=1, help="1: this process; N: N Ray workers")
    parser.add_argument("--ray-address", default="", help="join an existing Ray cluster (e.g. auto, ray://head:10001)")
    parser.add_argument("--compare-serial", action="store_true",
                        help="with --workers N: first time the same bags serially and on N local Ray workers "
                             "(speed-up, Ray start-up, identical results) into calibration.json and scale_out.json")
    parser.add_argument("--split-test", type=int, default=0, metavar="N",
                        help="also split the drives N times (>= 100) into calibration and held-out halves")
    parser.add_argument("--latency-frames", type=int, default=0,
                        help="time the chosen delta against full depth with direct runs on this many frames of the "
                             "first bag (and check the replayed exits against them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/calibrate"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        check_settings(args.eps, args.alpha, args.confidence, args.deltas, args.at_s)
        if args.split_test and args.split_test < 100:
            raise CalibrationError(f"--split-test {args.split_test}: use at least 100 splits (0 to skip)")
        bags = expand_bags(args.bags)
    except (CalibrationError, ScaleOutError) as err:
        print(f"deead_calibrate: {err}", file=sys.stderr)
        return 2
    base = ExitSettings(first_checkpoint=args.first_checkpoint, max_checks=args.max_checks)
    job = RecordJob(args.model, args.backend, args.num_threads, base, args.against == "truth", args.drive_gap_s,
                    args.max_frames)
    comparison: dict = {}
    run: BagRun
    try:
        if args.compare_serial:
            if args.workers < 2 or args.ray_address:
                raise ScaleOutError("--compare-serial times this machine: give --workers 2 (or more), no --ray-address")
            comparison, run = compare_serial_and_ray(job, bags, args.workers)
            print(f"[calibrate] serial {comparison['serial_s']:.1f} s vs {comparison['workers']} Ray workers "
                  f"{comparison['ray_s']:.1f} s (of which ray.init {comparison['ray_startup_s']:.1f} s, engines "
                  f"{comparison['ray_setup_s']:.1f} s): speed-up {comparison['speedup']:.2f}x, "
                  f"{comparison['speedup_after_startup']:.2f}x after start-up; identical: {comparison['identical']}",
                  file=sys.stderr)
        else:
            run = run_bags(job, bags, workers=args.workers, ray_address=args.ray_address)
    except ScaleOutError as err:
        print(f"deead_calibrate: {err}", file=sys.stderr)
        return 2
    for failed in run.failed:
        print(f"deead_calibrate: bag not used: {failed.bag}: {failed.error}", file=sys.stderr)
    records = [o.result for o in run.outcomes if o.ok]
    if not records:
        print("deead_calibrate: no bag could be used (see above); nothing to calibrate on", file=sys.stderr)
        return 2
    at_s = args.at_s if args.at_s is not None else records[0].dt_s * records[0].layers_m.shape[2]
    limits = ValidationLimits()
    result, replayed, losses, drive_keys, stamps = calibrate(records, base, limits, args.deltas, args.eps, args.alpha,
                                                             args.confidence, args.against, at_s, args.unit,
                                                             args.block_s, args.unit_bound)
    result["scale_out"] = {"mode": run.mode, "workers": run.workers, "wall_s": round(run.wall_s, 2),
                           "startup_s": round(run.startup_s, 2), "setup_s": round(run.setup_s, 2),
                           "failed": [{"bag": o.bag, "error": o.error} for o in run.failed]}
    if comparison:
        result["scale_out"]["serial_vs_ray"] = comparison
    result["model"] = args.model or str(demo_manifest_path())
    result["model_version"] = load_manifest(result["model"], verify=False).model_version
    result["git_commit"] = source_commit()
    if args.split_test:
        result["split_test"] = split_test(losses, replayed.exit_layer, replayed.num_layers, drive_keys, stamps,
                                          args.deltas, args.alpha, args.confidence, args.unit, args.block_s,
                                          args.split_test, args.seed, args.unit_bound)
        if args.unit != "frame":     # the same splits with frames counted as independent: what drives correct
            result["split_test_frame_units"] = split_test(losses, replayed.exit_layer, replayed.num_layers,
                                                          drive_keys, stamps, args.deltas, args.alpha, args.confidence,
                                                          "frame", args.block_s, args.split_test, args.seed)
    if args.latency_frames and result["delta_m"] is not None:
        j = result["ltt"]["chosen_index"]
        try:
            result["latency"] = measure_latency(job, Path(records[0].bag), result["delta_m"], args.latency_frames,
                                                replayed.exit_layer[: len(records[0]), j])
        except DeeadError as err:
            print(f"deead_calibrate: latency not measured: {err}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    if comparison:
        comparison.update({"bag_paths": [str(b) for b in bags], "frames": result["frames"], "cpus": os.cpu_count(),
                           "model_version": result["model_version"], "git_commit": result["git_commit"]})
        (args.out / "scale_out.json").write_text(json.dumps(comparison, indent=2) + "\n")
    if result["ltt"]["rows"]:
        plot(result, args.out)
    _print_summary(result)
    if result["delta_m"] is None:
        reason = result["ltt"].get("refused") or (
            f"no delta certified: the strictest, {args.deltas[0]:g} m, has upper bound "
            f"{result['ltt']['rows'][0]['upper_bound']:.3f} > alpha {args.alpha:g}; keep exit.delta_m at 0 "
            "(full depth) or loosen eps / alpha, or add frames")
        if "full_depth_risk" in result["guarantee"]:
            reason += (f" (at full depth the model itself misses the ground truth by more than {args.eps:g} m in "
                       f"{result['guarantee']['full_depth_risk']:.1%} of the frames)")
        print(f"deead_calibrate: refused: {reason}; evidence in {args.out}/calibration.json", file=sys.stderr)
        return 3
    yaml_text = params_yaml(base, result, ", ".join(str(b) for b in bags))
    (args.out / "calibration.param.yaml").write_text(yaml_text)
    print(f"[calibrate] wrote {args.out}/calibration.param.yaml, calibration.json, calibration.png "
          f"in {result['seconds']:.1f} s\n{yaml_text}", end="")
    return 0


def _print_summary(result: dict) -> None:
    g = result["guarantee"]
    print(f"[calibrate] {result['frames']} frames, {result['drives']} drives, {result['units']} {g['unit']} units; "
          f"P(L2 at {g['at_s']:g} s vs {g['against']} > {g['eps_m']:g} m) <= {g['alpha']:g} at confidence "
          f"{g['confidence']:g}")
    if not result["ltt"]["rows"]:
        return
    print(f"{'delta m':>8} {'losses':>7} {'risk':>7} {'bound':>7} {'p-value':>9} {'layers':>7}  decision")
    for r in result["ltt"]["rows"]:
        print(f"{r['delta_m']:>8g} {r['losses']:>7d} {r['empirical_risk']:>7.3f} {r['upper_bound']:>7.3f} "
              f"{r['p_value']:>9.2e} {r['layer_share']:>7.1%}  {r['decision']}")
    if result["delta_m"] is not None:
        row = result["ltt"]["rows"][result["ltt"]["chosen_index"]]
        print(f"[calibrate] exit.delta_m = {result['delta_m']:g} m: risk bound {row['upper_bound']:.3f} <= "
              f"{g['alpha']:g}; {row['layer_share']:.1%} of the layers run ({1 - row['layer_share']:.1%} saved)")
    if "split_test" in result:
        s = result["split_test"]
        print(f"[calibrate] split test: {s['splits']} splits of {s['drives']} drives into {s['calibration_drives']} "
              f"to calibrate and {s['held_out_drives']} held out: held-out risk > alpha in {s['violation_share']:.1%} "
              f"(allowed {s['allowed']:.0%}): {'passed' if s['passed'] else 'FAILED'}; delta above 0 chosen in "
              f"{s['chosen_nonzero_share']:.1%}")
    if "latency" in result:
        lat = result["latency"]
        print(f"[calibrate] latency over {lat['frames']} frames: p50 {lat['latency_p50_ms']:.2f} ms vs "
              f"{lat['full_latency_p50_ms']:.2f} ms at full depth ({lat['latency_ratio_vs_full']:.2f}x); "
              f"replayed exits differing from direct runs: {lat['replay_exit_mismatches']}")


if __name__ == "__main__":
    raise SystemExit(main())
