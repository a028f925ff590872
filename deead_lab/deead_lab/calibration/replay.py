"""Record once, replay for every delta: each frame's head at every layer is recorded from a bag with the runtime's
Runner, then the exit controller the node runs (deead_ros.exit.run_with_exit over a chain that returns the
recorded heads) is replayed under any delta without running the model again."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from deead_lab.calibration.risk import CalibrationError
from deead_ros.exit import (Checkpoint, ExitPolicy, ExitReason, ExitSettings, FrameContext, RecordedChain, Verdict,
                            run_with_exit)
from deead_ros.exit.metrics import l2_at_m
from deead_ros.exit.validation import ValidationLimits, validate
from deead_ros.runner import Runner
from deead_ros import bags as topics
from deead_lab.eval import EvalFrame


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
