"""Risk control for delta (Learn then Test): which deltas keep the rate of frames whose early plan differs from
the full-depth plan by more than eps below alpha, with the stated confidence, over exchangeable units (frames,
time blocks or drives); and the held-out split test that checks the guarantee. The tail bounds are in
deead_lab.stats."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from deead_ros.errors import DeeadError

from deead_ros.parameters import SPECS

from deead_lab.stats import (binomial_p_value, clopper_pearson_upper, hoeffding_bentkus_p_value,
                             hoeffding_bentkus_upper)


class CalibrationError(DeeadError):
    """The calibration cannot give the requested guarantee (bad settings, too few frames, unusable bags)."""


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
