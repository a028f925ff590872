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

Frames are not independent. The binomial bound treats the n calibration frames as i.i.d. draws from
the frames the node will see. Within a drive, neighbouring frames (10 Hz) are strongly correlated, so the
frame-level bound (`--unit frame`, the default) is optimistic: its effective sample size is closer to
the number of independent stretches of road than to the number of frames, and the stated confidence
holds only as far as frames are exchangeable. What calibrating on whole drives gives: the calibration
drives are disjoint from the drives the guarantee is meant for, so no test frame has a near-copy in the
calibration set. The block-aware option: `--unit drive` (or `--unit block --block-s S`, contiguous
stretches of at most S seconds within a drive) takes each unit's share of bad frames as a loss in
[0, 1] and uses the Hoeffding-Bentkus p-value over units (LTT, Sec. 3): valid when the drives (blocks)
are i.i.d., for the risk "expected share of bad frames in a drive (block)". It needs many units:
at alpha 0.1 and confidence 0.9, at least 22 even with no loss at all.

Cost: each frame runs once through the whole chain with the shared head read after every layer (and
the full-depth plan); each delta's exit is then replayed from those recorded trajectories by the very
controller the node runs (deead_ros.exit.run_with_exit over a chain that returns the recorded heads,
with the runner's validation), instead of re-running the model per delta. A test checks the replayed
exits and trajectories against direct Runner runs, and `--latency-frames` repeats the check on the bag.

Outputs in --out: calibration.param.yaml (the exit.* parameters, for `deead_node --ros-args --params-file`),
calibration.json (the bound and the evidence per delta), calibration.png (risk with its bound and the
layer share vs delta). `--split-test N` also re-splits the frames N times into calibration and test
halves (contiguous blocks) and reports how often the test risk of the delta chosen on the calibration half
exceeds alpha (the guarantee says at most d of the time, up to the test half's own sampling noise).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from deead_ros.engines import make_engine
from deead_ros.engines.manifest import load_manifest
from deead_ros.errors import DeeadError
from deead_ros.exit import (Checkpoint, ExitPolicy, ExitReason, ExitSettings, FrameContext, PriorSettings,
                            RecordedChain, Verdict, run_with_exit)
from deead_ros.exit.metrics import l2_at_m
from deead_ros.exit.validation import ValidationLimits, validate
from deead_ros.frame_assembly import model_image_hw
from deead_ros.parameters import SPECS, default
from deead_ros.paths import demo_manifest_path, source_commit
from deead_ros.runner import Runner
from deead_ros import bags as topics
from deead_lab.eval import EvalFrame, bag_frames, delta_settings, evaluate, summarise
from deead_lab.scale_out import BagRun, ScaleOutError, compare_serial_and_ray, expand_bags, run_bags

# Fine below 0.25 m: on a model whose depth matters, a strict eps is certified only at small deltas.
DEFAULT_DELTAS_M = (0.05, 0.1, 0.15, 0.2, *(float(d) for d in np.round(np.arange(0.25, 4.0001, 0.25), 2)))
UNITS = ("frame", "block", "drive")


class CalibrationError(DeeadError):
    """The calibration cannot give the requested guarantee (bad settings, too few frames, unusable bags)."""


# --------------------------------------------------------------------------------------------------------------
# The statistics: exact binomial tail, Clopper-Pearson, Hoeffding-Bentkus, fixed-sequence testing


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed exactly term by term in log space (no scipy)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def binomial_p_value(losses: int, n: int, alpha: float) -> float:
    """LTT's p-value for H: risk > alpha from `losses` 0/1 losses in n i.i.d. samples: P(Bin(n, alpha) <= losses)."""
    return binomial_cdf(losses, n, alpha)


def _bisect_decreasing(f: Callable[[float], float], target: float, lo: float = 0.0, hi: float = 1.0,
                       iterations: int = 60) -> float:
    """The smallest x in [lo, hi] with f(x) <= target, for f non-increasing in x (to 2^-60)."""
    if f(lo) <= target:
        return lo
    if f(hi) > target:
        return hi
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def clopper_pearson_upper(losses: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on the risk at `confidence`: risk <= it with prob >= confidence.

    The smallest r with P(Bin(n, r) <= losses) <= 1 - confidence; 1.0 when losses == n.
    """
    if losses >= n:
        return 1.0
    return _bisect_decreasing(lambda r: binomial_cdf(losses, n, r), 1.0 - confidence)


def _kl_bernoulli(a: float, b: float) -> float:
    """KL(Bernoulli(a) || Bernoulli(b)) = h1(a, b) of Hoeffding's bound."""
    def term(x: float, y: float) -> float:
        if x <= 0.0:
            return 0.0
        return math.inf if y <= 0.0 else x * math.log(x / y)     # y = 0: no risk level explains a loss share x
    return term(a, b) + term(1.0 - a, 1.0 - b)


def hoeffding_bentkus_p_value(mean_loss: float, n: int, alpha: float) -> float:
    """LTT's Hoeffding-Bentkus p-value for H: risk > alpha from the mean of n i.i.d. losses in [0, 1]."""
    hoeffding = math.exp(-n * _kl_bernoulli(min(mean_loss, alpha), alpha))
    bentkus = math.e * binomial_cdf(math.ceil(n * mean_loss - 1e-9), n, alpha)
    return min(1.0, hoeffding, bentkus)


def hoeffding_bentkus_upper(mean_loss: float, n: int, confidence: float) -> float:
    """The smallest alpha the Hoeffding-Bentkus test would certify at this confidence."""
    return _bisect_decreasing(lambda a: hoeffding_bentkus_p_value(mean_loss, n, a) if a > 0 else 1.0,
                              1.0 - confidence)


def fixed_sequence(p_values: Sequence[float], level: float) -> int:
    """How many hypotheses fixed-sequence testing rejects: the leading run of p <= level (stop at the first above)."""
    count = 0
    for p in p_values:
        if not p <= level:            # a nan p-value stops the sequence too
            break
        count += 1
    return count


def min_units(alpha: float, confidence: float) -> int:
    """The fewest i.i.d. units with which zero losses certify risk <= alpha: (1 - alpha)^n <= 1 - confidence."""
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-alpha) - 1e-12)


def check_settings(eps_m: float, alpha: float, confidence: float, deltas: Sequence[float], at_s: float | None) -> None:
    """Raise CalibrationError for a setting no calibration can use (before any work)."""
    if not (math.isfinite(eps_m) and eps_m > 0):
        raise CalibrationError(f"--eps {eps_m}: the tolerated L2 error must be a positive number of metres, e.g. 1.0")
    if not (0.0 < alpha < 1.0):
        raise CalibrationError(f"--alpha {alpha}: the tolerated risk must lie in (0, 1), e.g. 0.1")
    if not (0.0 < confidence < 1.0):
        raise CalibrationError(f"--confidence {confidence}: must lie in (0, 1), e.g. 0.9 (d = 1 - confidence)")
    if not deltas:
        raise CalibrationError("--deltas: give at least one delta (m)")
    low, high = SPECS["exit.delta_m"].range or (0.0, math.inf)
    bad = [d for d in deltas if not (math.isfinite(d) and low <= d <= high)]
    if bad:
        raise CalibrationError(f"--deltas {bad}: every delta must lie in exit.delta_m's range [{low:g}, {high:g}] m")
    if list(deltas) != sorted(set(deltas)):
        raise CalibrationError(f"--deltas {list(deltas)}: give them strictly increasing (the fixed-sequence order, "
                               "strict to loose)")
    if at_s is not None and not (math.isfinite(at_s) and at_s > 0):
        raise CalibrationError(f"--at-s {at_s}: the time of the L2 must be > 0 s (the model's horizon by default)")


# --------------------------------------------------------------------------------------------------------------
# Recording: each frame once through every layer; replay: any delta's exit from the recording


@dataclass(slots=True)
class _EveryLayer:
    """An exit policy that reads the head after every layer and never exits: records the whole chain."""

    name: str = "record_every_layer"
    max_checks: int = 0

    def first_check(self, ctx: FrameContext) -> int:
        return 1

    def judge(self, layer: int, trajectory_m: np.ndarray, previous: Checkpoint | None,
              ctx: FrameContext) -> Verdict:
        return Verdict(False, ExitReason.FULL_POLICY, float("nan"), layer + 1, "recording every layer")


@dataclass(frozen=True, slots=True)
class BagRecords:
    """One bag's frames, recorded once: the head after every layer and the full-depth plan. Arrays over N frames."""

    bag: str
    stamps_s: np.ndarray      # (N,) camera stamps
    drive: np.ndarray         # (N,) int: drive index within the bag (a camera-stamp gap > drive_gap_s starts one)
    layers_m: np.ndarray      # (N, L, T, 2) float32: the head's trajectory after layers 1..L
    prior_m: np.ndarray       # (N, T, 2) float32: the planner prior; nan where the frame had none
    speed_mps: np.ndarray     # (N,) the ego speed validation saw; nan where ego motion was unknown
    full_m: np.ndarray        # (N, T, 2): what the runner publishes at full depth (its fallback when not valid)
    full_is_valid: np.ndarray  # (N,) bool
    truth_m: np.ndarray       # (N, T, 2): ground truth; nan where the bag has none
    dt_s: float
    num_layers: int
    inputs_not_used: dict = field(default_factory=dict)   # topic -> count of messages refused

    def __len__(self) -> int:
        return len(self.stamps_s)

    def __eq__(self, other: object) -> bool:      # arrays compared exactly (nan == nan): serial vs Ray
        if not isinstance(other, BagRecords):
            return NotImplemented
        return all(np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind == "f") if isinstance(a, np.ndarray)
                   else a == b for a, b in zip(_fields(self), _fields(other)))


def _fields(records: BagRecords) -> list[Any]:
    return [getattr(records, name) for name in BagRecords.__slots__]


def drives_from_stamps(stamps_s: np.ndarray, gap_s: float) -> np.ndarray:
    """Drive index per frame: a new drive where the camera stamp jumps by more than gap_s (or goes back)."""
    if len(stamps_s) == 0:
        return np.zeros(0, dtype=np.int64)
    steps = np.diff(stamps_s)
    return np.concatenate([[0], np.cumsum((steps > gap_s) | (steps <= 0))]).astype(np.int64)


def bag_topics(bag: Path) -> set[str]:
    """The topics a rosbag2 folder (or file) holds; CalibrationError naming the file when it cannot be read."""
    from rosbags.highlevel import AnyReaderError
    if not bag.exists():
        raise CalibrationError(f"{bag}: no such bag (a rosbag2 folder with metadata.yaml, or an .mcap / .db3 file)")
    try:
        return set(topics.bag_topics(bag))
    except (AnyReaderError, OSError, ValueError, KeyError) as err:    # a missing metadata file, bad magic, ...
        raise CalibrationError(f"{bag}: cannot be read as a rosbag2 ({type(err).__name__}: {err})") from err


def check_bag_topics(bag: Path, need_truth: bool) -> None:
    """Raise CalibrationError naming the bag and the topics it lacks for calibration."""
    have = bag_topics(bag)
    missing = []
    if not have & {topics.CAMERA_COMPRESSED, topics.CAMERA_RAW}:
        missing.append(f"a camera ({topics.CAMERA_COMPRESSED} or {topics.CAMERA_RAW})")
    if topics.ODOMETRY not in have:
        missing.append(f"{topics.ODOMETRY} (without the ego's motion there is no prior and no early exit)")
    if need_truth and topics.GROUND_TRUTH not in have:
        missing.append(f"{topics.GROUND_TRUTH} (needed by --against truth)")
    if missing:
        raise CalibrationError(f"{bag}: missing {'; '.join(missing)}; it has {sorted(have) or 'no topics'}")


def record_frames(runner: Runner, frames: Iterable[EvalFrame], bag: str = "", drive_gap_s: float = 0.5,
                  max_frames: int = 0) -> BagRecords:
    """Run every frame (deead_lab.eval.EvalFrame) once through all layers, reading the head after each."""
    recorder = _EveryLayer()
    n_layers = runner.num_layers
    stamps, layers, priors, speeds, fulls, valid, truths = [], [], [], [], [], [], []
    for index, frame in enumerate(frames):
        if max_frames and index >= max_frames:
            break
        result = runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known, policy=recorder,
                             external_ego_m=frame.external_ego_m, ground_truth_m=frame.truth_m)
        trace = result.trace
        if [c.layer for c in trace.checkpoints] != list(range(1, n_layers + 1)):     # internal invariant
            raise RuntimeError(f"recording read layers {[c.layer for c in trace.checkpoints]}, not 1..{n_layers}")
        stamps.append(frame.camera_stamp_s)
        layers.append(np.stack([c.trajectory_m for c in trace.checkpoints]))
        nan = np.full(layers[-1].shape[1:], np.nan)
        priors.append(result.prior.trajectory_m if result.prior.trajectory_m is not None else nan)
        speeds.append(frame.inputs.speed_mps if frame.ego_motion_known else np.nan)
        fulls.append(result.trajectory_m)
        valid.append(result.is_valid)
        truths.append(frame.truth_m if frame.truth_m is not None else nan)
    stamps_s = np.asarray(stamps, dtype=np.float64)
    horizon = len(runner.times_s)

    def stacked(arrays: list, shape: tuple[int, ...]) -> np.ndarray:
        return np.asarray(arrays, dtype=np.float32) if arrays else np.zeros((0, *shape), np.float32)

    return BagRecords(bag, stamps_s, drives_from_stamps(stamps_s, drive_gap_s),
                      stacked(layers, (n_layers, horizon, 2)), stacked(priors, (horizon, 2)),
                      np.asarray(speeds, dtype=np.float64), stacked(fulls, (horizon, 2)),
                      np.asarray(valid, dtype=bool), stacked(truths, (horizon, 2)), runner.dt_s, n_layers)


def replay_frame(records: BagRecords, index: int, policy: ExitPolicy,
                 limits: ValidationLimits) -> tuple[int, np.ndarray]:
    """(exit layer, published trajectory) of frame `index` under `policy`, from the recording; no model run.

    The runner's controller and validation decide as they would live: an early exit is refused when its
    plan fails validation (the frame goes deeper); at the last layer the runner publishes the full-depth plan
    (or its fallback), which the recording holds.
    """
    prior = records.prior_m[index]
    truth = records.truth_m[index]
    ctx = FrameContext(records.num_layers, None if np.isnan(prior).all() else prior, records.dt_s,
                       None if np.isnan(truth).all() else truth)
    speed = float(records.speed_mps[index])
    speed_or_none = None if math.isnan(speed) else speed
    dt_s = records.dt_s
    trace = run_with_exit(RecordedChain(records.layers_m[index]), 0, policy, ctx,
                          lambda t: validate(t, dt_s, speed_or_none, limits))
    if trace.exit_layer >= records.num_layers:
        return trace.exit_layer, records.full_m[index]
    return trace.exit_layer, trace.trajectory_m


@dataclass(frozen=True, slots=True)
class Replayed:
    """Every frame under every delta: exit layers and L2s at `at_s`. Arrays (N, D) over frames and deltas."""

    deltas_m: np.ndarray      # (D,)
    exit_layer: np.ndarray    # (N, D) int
    l2_vs_full_m: np.ndarray  # (N, D): published at delta vs published at full depth, at at_s
    l2_vs_truth_m: np.ndarray  # (N, D): published at delta vs ground truth (nan without)
    num_layers: int
    at_s: float


def replay(records: Sequence[BagRecords], base: ExitSettings, deltas_m: Sequence[float],
           limits: ValidationLimits, at_s: float) -> Replayed:
    """Replay each delta's policy (base with delta_m replaced) over every recorded frame."""
    policies = [replace(base, delta_m=float(d)).build_policy() for d in deltas_m]
    exits, vs_full, vs_truth = [], [], []
    for rec in records:
        for i in range(len(rec)):
            row_exit, row_full, row_truth = [], [], []
            for policy in policies:
                layer, published = replay_frame(rec, i, policy, limits)
                row_exit.append(layer)
                row_full.append(l2_at_m(published, rec.full_m[i], rec.dt_s, at_s))
                truth = rec.truth_m[i]
                row_truth.append(np.nan if np.isnan(truth).all() else l2_at_m(published, truth, rec.dt_s, at_s))
            exits.append(row_exit)
            vs_full.append(row_full)
            vs_truth.append(row_truth)
    num_layers = records[0].num_layers if records else 0
    shape = (len(exits), len(policies))
    return Replayed(np.asarray(deltas_m, dtype=np.float64), np.asarray(exits, dtype=np.int64).reshape(shape),
                    np.asarray(vs_full, dtype=np.float64).reshape(shape),
                    np.asarray(vs_truth, dtype=np.float64).reshape(shape), num_layers, at_s)


# --------------------------------------------------------------------------------------------------------------
# Learn then Test over units (frames, blocks or drives)


def units_of(drive_keys: np.ndarray, stamps_s: np.ndarray, unit: str, block_s: float) -> np.ndarray:
    """A unit id per frame: the frame itself, its drive, or its contiguous block of <= block_s within the drive.

    drive_keys: (N,) a drive id unique across bags.
    """
    n = len(drive_keys)
    if unit == "frame":
        return np.arange(n)
    if unit == "drive":
        return np.unique(drive_keys, return_inverse=True)[1]
    ids = np.zeros(n, dtype=np.int64)
    current, block_start = -1, None
    for i in range(n):
        new_drive = i == 0 or drive_keys[i] != drive_keys[i - 1]
        if new_drive or stamps_s[i] - block_start >= block_s:
            current += 1
            block_start = stamps_s[i]
        ids[i] = current
    return ids


def learn_then_test(losses: np.ndarray, units: np.ndarray, deltas_m: Sequence[float], alpha: float,
                    confidence: float, bounds: bool = True) -> dict:
    """Fixed-sequence LTT over the deltas (strict to loose) on 0/1 losses (N, D); units (N,) group frames.

    Frames as units: exact binomial p-value and Clopper-Pearson bound. Blocks or drives as units: each
    unit's share of bad frames is its loss in [0, 1], Hoeffding-Bentkus p-value and bound over units.
    bounds=False skips the upper bounds (nan; the decisions need only the p-values).
    Raises CalibrationError when there are too few units for even zero losses to certify alpha.
    """
    d = 1.0 - confidence
    unit_ids, inverse = np.unique(units, return_inverse=True)
    n_units, n_frames = len(unit_ids), len(units)
    per_frame = n_units == n_frames
    needed = min_units(alpha, confidence)
    if n_units < needed:
        what = "frames" if per_frame else "units (drives or blocks)"
        raise CalibrationError(
            f"{n_units} {what} cannot certify risk <= {alpha:g} at confidence {confidence:g}: even with no loss at "
            f"all the p-value is (1 - {alpha:g})^{n_units} = {(1 - alpha) ** n_units:.3g} > {d:.3g}; "
            f"needs at least {needed} {what}: add bags, or loosen --alpha or --confidence")
    rows: list[dict[str, Any]] = []
    for j, delta in enumerate(deltas_m):
        column = losses[:, j].astype(np.float64)
        k = int(column.sum())
        upper = float("nan")
        if per_frame:
            p = binomial_p_value(k, n_frames, alpha)
            if bounds:
                upper = clopper_pearson_upper(k, n_frames, confidence)
        else:
            unit_means = np.bincount(inverse, weights=column) / np.bincount(inverse)
            mean = float(unit_means.mean())
            p = hoeffding_bentkus_p_value(mean, n_units, alpha)
            if bounds:
                upper = hoeffding_bentkus_upper(mean, n_units, confidence)
        rows.append({"delta_m": float(delta), "n": n_units, "frames": n_frames, "losses": k,
                     "empirical_risk": k / n_frames, "upper_bound": upper, "p_value": p})
    certified = fixed_sequence([r["p_value"] for r in rows], d)
    for j, row in enumerate(rows):
        row["decision"] = ("certified" if j < certified else "not certified" if j == certified
                           else "not tested (the sequence stopped)")
    risks = [r["empirical_risk"] for r in rows]
    return {"rows": rows, "certified": certified, "chosen_index": certified - 1,
            "delta_m": rows[certified - 1]["delta_m"] if certified else None,
            "risk_monotone_in_delta": bool(all(a <= b for a, b in zip(risks, risks[1:]))),
            "min_units": needed}


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
        check_bag_topics(bag, self.need_truth)
        rejected: dict[str, int] = {}

        def count(topic: str, reason: str) -> None:
            rejected[topic] = rejected.get(topic, 0) + 1

        frames = bag_frames(bag, runner.encoder.accel_window_s, model_image_hw(runner.encoder), on_rejected=count)
        records = record_frames(runner, frames, str(bag), self.drive_gap_s, self.max_frames)
        if len(records) == 0:
            raise CalibrationError(f"{bag}: no camera frame could be assembled (inputs not used: {rejected or 'none'})")
        if self.need_truth and np.isnan(records.truth_m).all(axis=(1, 2)).any():
            missing = int(np.isnan(records.truth_m).all(axis=(1, 2)).sum())
            raise CalibrationError(f"{bag}: {missing} of {len(records)} frames have no {topics.GROUND_TRUTH} message "
                                   "at their camera stamp (needed by --against truth)")
        return replace(records, inputs_not_used=rejected)


def params_yaml(settings: ExitSettings, result: dict, source: str) -> str:
    """The calibrated exit.* parameters as a ROS 2 params file (`/**: ros__parameters:`)."""
    rows = result["ltt"]["rows"]
    chosen = rows[result["ltt"]["chosen_index"]]
    guarantee = result["guarantee"]
    table = ", ".join(f"{v:g}" for v in settings.stride_table)
    return (f"# Written by deead_calibrate ({source}).\n"
            f"# Guarantee: P(L2 at {guarantee['at_s']:g} s vs {guarantee['against']} > {guarantee['eps_m']:g} m) "
            f"<= {guarantee['alpha']:g} with confidence {guarantee['confidence']:g}\n"
            f"# (Learn then Test, {guarantee['unit']}s as units: {chosen['n']} units, {chosen['frames']} frames, "
            f"{chosen['losses']} losses, upper bound {chosen['upper_bound']:.4f}).\n"
            "# It holds for the model and the exit settings below; load after the node's config:\n"
            "#   deead_node --ros-args --params-file config/deead_node.param.yaml --params-file <this file>\n"
            "/**:\n  ros__parameters:\n    exit:\n"
            f"      policy: {settings.policy}\n"
            f"      delta_m: {float(result['delta_m'])!r}\n"
            f"      first_checkpoint: {settings.first_checkpoint}\n"
            f"      min_exit_layer: {settings.min_exit_layer}\n"
            f"      horizon_s: {float(settings.horizon_s)!r}\n"
            f"      stride_table: [{table}]\n")


def plot(result: dict, out: Path) -> None:
    """Risk with its upper bound vs delta, and the share of layers run vs delta."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["ltt"]["rows"]
    deltas = [r["delta_m"] for r in rows]
    g = result["guarantee"]
    fig, (risk_ax, layer_ax) = plt.subplots(1, 2, figsize=(11, 4))
    risk_ax.plot(deltas, [r["empirical_risk"] for r in rows], "o-", label="empirical risk")
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


def split_blocks(drive_keys: np.ndarray, stamps_s: np.ndarray, block_s: float) -> np.ndarray:
    """Contiguous blocks of <= block_s within drives: the pieces the split test shuffles."""
    return units_of(drive_keys, stamps_s, "block", block_s)


def split_test(losses: np.ndarray, exit_layer: np.ndarray, num_layers: int, blocks: np.ndarray,
               drive_keys: np.ndarray, stamps_s: np.ndarray, deltas_m: Sequence[float], alpha: float,
               confidence: float, unit: str, unit_block_s: float, splits: int, seed: int = 0) -> dict:
    """Split the blocks at random into calibration and test halves `splits` times; calibrate, then test.

    Returns the share of splits whose test risk (frame-level, at the delta chosen on the calibration half;
    full depth, risk 0, when nothing was certified) exceeds alpha, with the chosen deltas and test risks.
    """
    rng = np.random.default_rng(seed)
    block_ids = np.unique(blocks)
    chosen, test_risks, shares, refused = [], [], [], 0
    for _ in range(splits):
        calib_blocks = rng.permutation(block_ids)[: len(block_ids) // 2]
        calib = np.isin(blocks, calib_blocks)
        test = ~calib
        units = units_of(drive_keys[calib], stamps_s[calib], unit, unit_block_s)
        try:
            ltt = learn_then_test(losses[calib], units, deltas_m, alpha, confidence, bounds=False)
        except CalibrationError:
            ltt = {"chosen_index": -1}
            refused += 1
        j = ltt["chosen_index"]
        if j < 0:
            chosen.append(0.0)
            test_risks.append(0.0)
            shares.append(1.0)
            continue
        chosen.append(float(deltas_m[j]))
        test_risks.append(float(losses[test, j].mean()))
        shares.append(float(exit_layer[test, j].mean() / num_layers))
    test_risks_a = np.asarray(test_risks)
    chosen_a = np.asarray(chosen)
    values, counts = np.unique(chosen_a, return_counts=True)
    return {"splits": splits, "frames": int(len(blocks)), "blocks": int(len(block_ids)), "seed": seed,
            "violation_share": float((test_risks_a > alpha).mean()), "allowed": round(1.0 - confidence, 12),
            "passed": bool((test_risks_a > alpha).mean() <= 1.0 - confidence),
            "test_risk_mean": float(test_risks_a.mean()), "test_risk_max": float(test_risks_a.max()),
            "test_risk_p90": float(np.percentile(test_risks_a, 90)),
            "chosen_delta_m": {"min": float(chosen_a.min()), "median": float(np.median(chosen_a)),
                               "max": float(chosen_a.max()),
                               "counts": {f"{v:g}": int(c) for v, c in zip(values, counts)}},
            "layer_share_on_test_mean": float(np.mean(shares)), "splits_refused_too_small": refused}


# --------------------------------------------------------------------------------------------------------------


def measure_latency(job: RecordJob, bag: Path, delta_m: float, frames: int, replayed_exits: np.ndarray) -> dict:
    """Direct Runner runs at delta_m and at full depth on the bag's first `frames` frames (back to back per frame).

    Also compares the exit layers with the replay's (the same frames, the same order).
    """
    runner = job.setup()
    settings = delta_settings(runner, [delta_m])
    stream = bag_frames(bag, runner.encoder.accel_window_s, model_image_hw(runner.encoder))
    rows = evaluate(runner, stream, settings, frames)
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
              block_s: float) -> tuple[dict, Replayed, np.ndarray, np.ndarray, np.ndarray]:
    """Replay every delta over the records and run LTT; returns (result, replayed, losses, drive keys, stamps)."""
    replayed = replay(records, base, deltas_m, limits, at_s)
    l2 = replayed.l2_vs_truth_m if against == "truth" else replayed.l2_vs_full_m
    losses = l2 > eps_m
    drive_keys = np.concatenate([rec.drive + 1_000_000 * i for i, rec in enumerate(records)])
    stamps = np.concatenate([rec.stamps_s for rec in records])
    units = units_of(drive_keys, stamps, unit, block_s)
    guarantee = {"eps_m": eps_m, "alpha": alpha, "confidence": confidence, "against": against, "at_s": at_s,
                 "unit": unit, "block_s": block_s if unit == "block" else None,
                 "statement": (f"P(L2 at {at_s:g} s between the published trajectory and "
                               f"{'the ground truth' if against == 'truth' else 'the full-depth one'} > {eps_m:g} m) "
                               f"<= {alpha:g}, with probability >= {confidence:g} over the calibration set, if its "
                               f"{unit}s are i.i.d. draws from the frames the node will see")}
    try:
        ltt = learn_then_test(losses, units, deltas_m, alpha, confidence)
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
    parser.add_argument("bags", nargs="+", help="rosbag2 folders or files, or glob patterns (quoted)")
    parser.add_argument("--eps", type=float, default=1.0, help="tolerated L2 error, m")
    parser.add_argument("--alpha", type=float, default=0.1, help="tolerated risk P(L2 > eps)")
    parser.add_argument("--confidence", type=float, default=0.9, help="1 - d: probability that the bound holds")
    parser.add_argument("--against", choices=("full", "truth"), default="full",
                        help="full: the full-depth plan (label-free); truth: /ground_truth/trajectory")
    parser.add_argument("--at-s", type=float, default=None, help="time of the L2, s (default: the model's horizon)")
    parser.add_argument("--deltas", type=float, nargs="+", default=list(DEFAULT_DELTAS_M),
                        help="candidate exit.delta_m values, strictly increasing (tested strict to loose)")
    parser.add_argument("--unit", choices=UNITS, default="frame",
                        help="i.i.d. unit of the bound: frame (binomial), block or drive (Hoeffding-Bentkus)")
    parser.add_argument("--block-s", type=float, default=10.0, help="--unit block: block length, s")
    parser.add_argument("--drive-gap-s", type=float, default=0.5, help="a camera-stamp gap above this starts a drive")
    parser.add_argument("--model", default="", help="manifest.json (default: the demo model installed by make setup)")
    parser.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--first-checkpoint", type=int, default=default("exit.first_checkpoint"))
    parser.add_argument("--max-frames", type=int, default=0, help="frames per bag (0: all)")
    parser.add_argument("--workers", type=int, default=1, help="1: this process; N: N Ray workers")
    parser.add_argument("--ray-address", default="", help="join an existing Ray cluster (e.g. auto, ray://head:10001)")
    parser.add_argument("--compare-serial", action="store_true",
                        help="with --workers N: first time the same bags serially and on N local Ray workers "
                             "(speed-up, Ray start-up, identical results) into calibration.json and scale_out.json")
    parser.add_argument("--split-test", type=int, default=0, metavar="N",
                        help="also split the frames N times (>= 100) into calibration and test halves")
    parser.add_argument("--split-block-s", type=float, default=5.0, help="split test: block length, s")
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
    base = ExitSettings(first_checkpoint=args.first_checkpoint)
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
                                                             args.block_s)
    result["scale_out"] = {"mode": run.mode, "workers": run.workers, "wall_s": round(run.wall_s, 2),
                           "startup_s": round(run.startup_s, 2), "setup_s": round(run.setup_s, 2),
                           "failed": [{"bag": o.bag, "error": o.error} for o in run.failed]}
    if comparison:
        result["scale_out"]["serial_vs_ray"] = comparison
    result["model"] = args.model or str(demo_manifest_path())
    result["model_version"] = load_manifest(result["model"], verify=False).model_version
    result["git_commit"] = source_commit()
    if args.split_test:
        blocks = split_blocks(drive_keys, stamps, args.split_block_s)
        result["split_test"] = split_test(losses, replayed.exit_layer, replayed.num_layers, blocks, drive_keys, stamps,
                                          args.deltas, args.alpha, args.confidence, args.unit, args.block_s,
                                          args.split_test, args.seed)
        result["split_test"]["block_s"] = args.split_block_s
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
        print(f"[calibrate] split test: {s['splits']} splits of {s['blocks']} blocks: test risk > alpha in "
              f"{s['violation_share']:.1%} (allowed {s['allowed']:.0%}): {'passed' if s['passed'] else 'FAILED'}")
    if "latency" in result:
        lat = result["latency"]
        print(f"[calibrate] latency over {lat['frames']} frames: p50 {lat['latency_p50_ms']:.2f} ms vs "
              f"{lat['full_latency_p50_ms']:.2f} ms at full depth ({lat['latency_ratio_vs_full']:.2f}x); "
              f"replayed exits differing from direct runs: {lat['replay_exit_mismatches']}")


if __name__ == "__main__":
    raise SystemExit(main())
