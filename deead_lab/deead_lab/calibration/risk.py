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

from deead_lab.stats import (betting_p_value, betting_upper, binomial_p_value, clopper_pearson_upper,
                             hoeffding_bentkus_p_value, hoeffding_bentkus_upper)


UNIT_BOUNDS = ("betting", "hoeffding_bentkus")      # p-values for unit losses in [0, 1]


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


def betting_min_units(alpha: float, confidence: float) -> int:
    """The fewest units with which zero losses pass the betting test (the bets start cautious: a few more than
    the binomial's min_units)."""
    n = min_units(alpha, confidence)
    while betting_p_value([0.0] * n, alpha, confidence) > 1.0 - confidence:
        n += 1
    return n


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
                    confidence: float, bounds: bool = True, unit_bound: str = "betting") -> dict:
    """Fixed-sequence LTT over the deltas (strict to loose) on 0/1 losses (N, D); units (N,) group frames.

    Frames as units: exact binomial p-value and Clopper-Pearson bound. Blocks or drives as units: each
    unit's share of bad frames is its loss in [0, 1], and `unit_bound` gives the p-value and bound over units
    (betting: Waudby-Smith-Ramdas, in the order of the unit ids; hoeffding_bentkus). The risk so bounded is
    the mean of the units' shares: the chance that a frame of a random unit is bad.
    bounds=False skips the upper bounds (nan; the decisions need only the p-values).
    Raises CalibrationError when there are too few units for even zero losses to certify alpha.
    """
    if unit_bound not in UNIT_BOUNDS:
        raise CalibrationError(f"unit bound {unit_bound!r}: use one of {', '.join(UNIT_BOUNDS)}")
    d = 1.0 - confidence
    unit_ids, inverse = np.unique(units, return_inverse=True)
    n_units, n_frames = len(unit_ids), len(units)
    per_frame = n_units == n_frames
    betting = not per_frame and unit_bound == "betting"
    needed = betting_min_units(alpha, confidence) if betting else min_units(alpha, confidence)
    if n_units < needed:
        what = "frames" if per_frame else "units (drives or blocks)"
        zero_p = betting_p_value([0.0] * n_units, alpha, confidence) if betting else (1 - alpha) ** n_units
        raise CalibrationError(
            f"{n_units} {what} cannot certify risk <= {alpha:g} at confidence {confidence:g}: even with no loss at "
            f"all the p-value is {zero_p:.3g} > {d:.3g}; needs at least {needed} {what}: add "
            "bags or drives, or loosen --alpha or --confidence")
    frames_per_unit = np.bincount(inverse)
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
            unit_means = np.bincount(inverse, weights=column) / frames_per_unit
            mean = float(unit_means.mean())
            if betting:
                p = betting_p_value(unit_means.tolist(), alpha, confidence)
                if bounds:
                    upper = betting_upper(unit_means.tolist(), confidence)
            else:
                p = hoeffding_bentkus_p_value(mean, n_units, alpha)
                if bounds:
                    upper = hoeffding_bentkus_upper(mean, n_units, confidence)
        rows.append({"delta_m": float(delta), "n": n_units, "frames": n_frames, "losses": k,
                     "empirical_risk": k / n_frames if per_frame else mean, "frame_risk": k / n_frames,
                     "upper_bound": upper, "p_value": p})
    certified = fixed_sequence([r["p_value"] for r in rows], d)
    for j, row in enumerate(rows):
        row["decision"] = ("certified" if j < certified else "not certified" if j == certified
                           else "not tested (the sequence stopped)")
    risks = [r["empirical_risk"] for r in rows]
    return {"rows": rows, "certified": certified, "chosen_index": certified - 1,
            "delta_m": rows[certified - 1]["delta_m"] if certified else None,
            "risk_monotone_in_delta": bool(all(a <= b for a, b in zip(risks, risks[1:]))),
            "min_units": needed, "unit_bound": "binomial" if per_frame else unit_bound}


def per_drive_means(values: np.ndarray, drive_keys: np.ndarray) -> np.ndarray:
    """(drives, D): each drive's mean of the per-frame values (N, D), drives in the order of their sorted keys."""
    _, inverse = np.unique(drive_keys, return_inverse=True)
    counts = np.bincount(inverse)
    return np.stack([np.bincount(inverse, weights=values[:, j].astype(np.float64)) / counts
                     for j in range(values.shape[1])], axis=1)


def split_test(losses: np.ndarray, exit_layer: np.ndarray, num_layers: int, drive_keys: np.ndarray,
               stamps_s: np.ndarray, deltas_m: Sequence[float], alpha: float, confidence: float, unit: str,
               unit_block_s: float, splits: int, seed: int = 0, unit_bound: str = "betting") -> dict:
    """Split the drives at random into calibration and held-out halves `splits` times; calibrate, then test.

    On each split the calibration half goes through learn_then_test with the units asked for; the held-out
    risk is the mean over the held-out drives of each drive's share of bad frames at the chosen delta (the risk
    the drive-level guarantee is about; full depth, risk 0, when nothing was certified). Returns the share of
    splits whose held-out risk exceeds alpha (the guarantee allows 1 - confidence of them, up to the held-out
    half's own sampling noise) and the share that chose a delta above 0 (a guarantee that only ever picks full
    depth is true and useless).
    """
    rng = np.random.default_rng(seed)
    drive_ids, inverse = np.unique(drive_keys, return_inverse=True)
    drive_risk = per_drive_means(losses, drive_keys)
    drive_layers = per_drive_means(exit_layer / num_layers, drive_keys)
    n_calib = len(drive_ids) // 2
    chosen, held_risks, frame_risks, shares, refused = [], [], [], [], 0
    for _ in range(splits):
        order = rng.permutation(len(drive_ids))
        calib_drives, held = np.sort(order[:n_calib]), order[n_calib:]
        calib = np.isin(inverse, calib_drives)
        units = units_of(drive_keys[calib], stamps_s[calib], unit, unit_block_s)
        try:
            j = learn_then_test(losses[calib], units, deltas_m, alpha, confidence, bounds=False,
                                unit_bound=unit_bound)["chosen_index"]
        except CalibrationError:
            j = -1
            refused += 1
        if j < 0:
            chosen.append(0.0)
            held_risks.append(0.0)
            frame_risks.append(0.0)
            shares.append(1.0)
            continue
        chosen.append(float(deltas_m[j]))
        held_risks.append(float(drive_risk[held, j].mean()))
        frame_risks.append(float(losses[~calib, j].mean()))
        shares.append(float(drive_layers[held, j].mean()))
    held_a, chosen_a = np.asarray(held_risks), np.asarray(chosen)
    values, counts = np.unique(chosen_a, return_counts=True)
    violation = float((held_a > alpha).mean())
    return {"splits": splits, "drives": int(len(drive_ids)), "calibration_drives": n_calib,
            "held_out_drives": int(len(drive_ids) - n_calib), "unit": unit, "seed": seed, "alpha": alpha,
            "confidence": confidence, "violation_share": violation, "allowed": round(1.0 - confidence, 12),
            "passed": bool(violation <= 1.0 - confidence),
            "chosen_nonzero_share": float((chosen_a > 0).mean()),
            "held_out_risk": {"mean": float(held_a.mean()), "p90": float(np.percentile(held_a, 90)),
                              "max": float(held_a.max())},
            "held_out_frame_risk_mean": float(np.mean(frame_risks)),
            "chosen_delta_m": {"min": float(chosen_a.min()), "median": float(np.median(chosen_a)),
                               "max": float(chosen_a.max()),
                               "counts": {f"{v:g}": int(c) for v, c in zip(values, counts)}},
            "layer_share_on_held_out_mean": float(np.mean(shares)), "splits_refused_too_small": refused}


def guarantee_statement(eps_m: float, alpha: float, confidence: float, against: str, at_s: float, unit: str) -> str:
    """What the certified delta guarantees, and under which assumption, in one sentence."""
    reference = "the ground truth" if against == "truth" else "the full-depth plan"
    if unit == "frame":
        return (f"P(L2 at {at_s:g} s between the published plan and {reference} > {eps_m:g} m) <= {alpha:g} for a "
                f"new frame, with probability >= {confidence:g} over the calibration frames, if frames are i.i.d. "
                "draws from the frames the node will see (frames of one drive are not: optimistic)")
    return (f"On a new {unit}, the expected share of its frames whose published plan lies more than {eps_m:g} m "
            f"from {reference} at {at_s:g} s is <= {alpha:g}, with probability >= {confidence:g} over the draw of "
            f"the calibration {unit}s, if they and the node's {unit}s are i.i.d. draws from one population "
            "(exchangeable: same model, exit settings, sensors, roads and traffic)")


def calibration_units(units: np.ndarray, drive_keys: np.ndarray, unit: str) -> dict:
    """The units the bound counts: how many, and how many frames each holds."""
    _, per_unit = np.unique(units, return_counts=True)
    spread = ({"min": int(per_unit.min()), "median": float(np.median(per_unit)), "max": int(per_unit.max())}
              if len(per_unit) else {"min": 0, "median": 0.0, "max": 0})
    return {"unit": unit, "count": int(len(per_unit)), "drives": int(len(np.unique(drive_keys))),
            "frames": int(len(units)), "frames_per_unit": spread}
