"""Trajectory errors in metres: used by the exit controller and by evaluation.

Trajectories are (T, 2) arrays of ego-frame waypoints (x forward, y left, metres) sampled every
`dt_s` seconds, the first waypoint at `dt_s` (not at 0).
"""
from __future__ import annotations

import math

import numpy as np


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"trajectories must both be (T, 2); got {pred.shape} and {ref.shape}")


def steps_within(horizon_s: float, dt_s: float, num_steps: int) -> int:
    """Return how many waypoints lie within `horizon_s` seconds (at least 1, at most num_steps)."""
    return int(min(num_steps, max(1, round(horizon_s / dt_s))))


def mean_deviation_m(pred: np.ndarray, ref: np.ndarray, num_steps: int) -> float:
    """Mean L2 distance over the first `num_steps` waypoints: DeeAD's dissimilarity.

    On the controller's hot path: for a handful of waypoints, float math on a list costs a few
    microseconds where numpy's reductions cost tens (measured in bench_exit's check share).
    """
    _check_pair(pred, ref)
    steps = (np.asarray(pred[:num_steps], dtype=np.float64) - ref[:num_steps]).tolist()
    return sum(math.hypot(dx, dy) for dx, dy in steps) / len(steps)


def l2_at_m(pred: np.ndarray, ref: np.ndarray, dt_s: float, at_s: float) -> float:
    """L2 at `at_s` seconds as in the nuScenes/ORION open-loop tables: the mean over waypoints up to at_s."""
    return mean_deviation_m(pred, ref, steps_within(at_s, dt_s, len(pred)))
