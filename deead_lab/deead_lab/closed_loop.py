"""Closed-loop driving in MetaDrive, the protocol's side: settings, episode records, resuming, the paired comparison.

The protocol is docs/closed_loop_protocol.md (its version is PROTOCOL_VERSION, stored with every
episode). Each episode is one map seed and one setting (the yielding IDM expert, or the model with
an exit policy) and drives the whole route: it ends on arrival, a crash, leaving the road or the
step cap from the route length. This module holds what the protocol declares (settings, seeds,
splits, margins), the episode record, the resume bookkeeping over the episode log, and the paired
comparison and summary (its statistics: deead_lab.stats). The drive itself is deead_lab.driving:
the tracker (pure pursuit on the planned trajectory), the written rules (step cap, completion,
score, at-fault, spawn check) and the drive loop, which plans every camera frame with `Runner.plan`,
the node's code path. Map, traffic and initial speed come from the seed (`sim.scenario.episode_config`),
so every setting meets the same episodes. Runs in the MetaDrive venv too (numpy 1.23), which also
holds onnxruntime.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deead_lab.stats import (bootstrap_mean_interval, mcnemar_exact, paired_bootstrap, paired_rate_interval,
                             wilson_interval)
from deead_lab.sim import scenario

PROTOCOL_VERSION = 2                       # docs/closed_loop_protocol.md; a new version starts the log over
EXPERT = "expert"
FULL = "full"
# the confirmation (protocol 3, declared in docs/closed_loop_protocol.md before its first episode): the setting
# chosen on protocol 2's 200 seeds, with the bounded tail, against full depth and the fixed exit at its depth,
# on fresh seeds, each seed's settings in an order drawn from the seed
CONFIRMATION_PROTOCOL = 3
CONFIRMATION_FIRST_SEED = 4000
CONFIRMED_SETTING = "deead_0.5"            # the fastest setting non-inferior on all four metrics in protocol 2
CONFIRMATION_FIXED = "fixed_23"            # its protocol-2 mean depth 21.9 + the bounded tail's +1.3 layers open loop
CONFIRMATION_SETTINGS = (EXPERT, FULL, CONFIRMED_SETTING, CONFIRMATION_FIXED)
# end reasons that are no driving outcome: the seed is not scored for any setting
SPAWN_BLOCKED = "spawn_blocked"            # the spawn-clear check failed (decided before anyone drove)
SIM_ERROR = "sim_error"                    # one failed attempt (crash or hang); retried once
SIM_FAILURE = "sim_failure"                # failed twice: recorded for every setting on the seed
FILLED_NOTE = "recorded for every setting of the seed"   # a not-scored seed's record for the other settings
NOT_SCORED = (SPAWN_BLOCKED, SIM_FAILURE)

# step cap: twice the route at the expert's target speed, plus slack for the start and waiting
# spawn-clear check
# at-fault rule (docs/closed_loop_protocol.md)
# driving score factors (CARLA leaderboard's collision penalties; out of road 0.7)
# non-inferiority margins, declared before the run: (metric, margin, higher_is_worse)
MARGINS = (("collision", 0.05, True), ("at_fault", 0.05, True), ("completion", 0.05, False),
           ("score", 0.05, False))
# The headline names the four endpoints as the issue and the README do (the comparisons keep the metric names).
HEADLINE_METRICS = {"collision": "collisions", "at_fault": "at_fault", "completion": "completion", "score": "score"}
MIN_SEEDS_FOR_VERDICT = 30                 # no non-inferiority verdict on fewer paired seeds
PROTOCOL_SEEDS = 200                       # paired seeds per setting the protocol asks for
DENSE_SPLIT_SEEDS = 30                     # ... and its secondary dense split (declared in the protocol)


def is_main_split(density: float) -> bool:
    """Whether a run at this traffic density is the protocol's main split (MetaDrive's default density)."""
    return density == scenario.TRAFFIC_DENSITY


def split_seeds(density: float) -> int:
    """The paired seeds the protocol asks of a split: the main one's, or the denser split's."""
    return PROTOCOL_SEEDS if is_main_split(density) else DENSE_SPLIT_SEEDS


def split_file_name(stem: str, density: float, suffix: str) -> str:
    """A split's file: `stem + suffix` for the main split, a denser split's beside it with its density in the name."""
    return f"{stem}{suffix}" if is_main_split(density) else f"{stem}_density_{density:g}{suffix}"


def report_name(density: float, suffix: str = ".json") -> str:
    """The report's file name in docs/ (suffix ".png": its figure)."""
    return split_file_name("closed_loop", density, suffix)








# --------------------------------------------------------------------------- pure episode rules










# --------------------------------------------------------------------------- one episode in the simulator


















def max_checks_of(protocol: int) -> int:
    """The bound on deead's looks a protocol drives with: none in protocol 2 (before the bounded tail existed)."""
    from deead_ros.parameters import default
    return 0 if protocol <= PROTOCOL_VERSION else int(default("exit.max_checks"))












@dataclass
class EpisodeResult:
    """One episode's outcome: what the simulator said, how far the ego got, and how the model ran."""

    seed: int
    setting: str
    steps: int
    max_steps: int
    end_reason: str                        # arrive_dest | crash_vehicle | crash_object | out_of_road | max_steps | ...
    arrived: bool
    crash_vehicle: bool
    crash_object: bool                     # objects and buildings
    out_of_road: bool                      # MetaDrive's `not on_lane`, or the sidewalk
    left_lane: bool                        # touched a solid line (does not end the episode)
    at_fault: bool                         # the collision is the ego's under the written rule
    fault_reason: str
    progress_m: float                      # along the route from the start
    route_length_m: float
    completion: float
    score: float
    mean_exit_layer: float                 # nan for the expert (layers run = exit layer)
    plan_ms_p50: float
    plan_ms_p95: float
    wall_s: float
    protocol: int = PROTOCOL_VERSION
    plan_ms_mean: float = float("nan")     # the runner's time per planned frame, mean over the episode

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed(seed: int, setting: str, reason: str, wall_s: float, note: str = "") -> dict[str, Any]:
    """The record of an episode the simulator did not finish: SIM_ERROR (first attempt) or SIM_FAILURE."""
    nan = float("nan")
    record = EpisodeResult(seed=seed, setting=setting, steps=0, max_steps=0, end_reason=reason, arrived=False,
                           crash_vehicle=False, crash_object=False, out_of_road=False, left_lane=False,
                           at_fault=False, fault_reason="", progress_m=0.0, route_length_m=0.0, completion=nan,
                           score=nan, mean_exit_layer=nan, plan_ms_p50=nan, plan_ms_p95=nan,
                           wall_s=round(wall_s, 1)).as_dict()
    record["note"] = note
    return record


# --------------------------------------------------------------------------- resume bookkeeping
def seed_status(records: list[dict[str, Any]], seed: int) -> str | None:
    """NOT_SCORED reason of a seed (any setting blocked or failed on it), or None."""
    reasons = {r["end_reason"] for r in records if r["seed"] == seed}
    return next((reason for reason in NOT_SCORED if reason in reasons), None)


def seed_order(seed: int, settings: list[str]) -> list[str]:
    """The settings in an order drawn from the seed: a simulator hang or a slow machine then falls on no
    setting more than another (protocol 3), and a resumed run drives them in the same order."""
    return [settings[i] for i in np.random.default_rng(seed).permutation(len(settings))]


def next_job(records: list[dict[str, Any]], seed: int, settings: list[str],
             running: Collection[tuple[int, str]] = (), shuffle: bool = False) -> tuple[str, int] | None:
    """The next (setting, attempt) to run on a seed, attempt 1 or 2; None when nothing is left to start.

    The settings go in their given order, or in `seed_order` with shuffle.

    A (seed, setting) is finished once it has a record other than SIM_ERROR; one SIM_ERROR record
    means the next run is its second (last) attempt; one in `running` (being driven by a worker) is
    not handed out again. A seed that is not scored (spawn blocked, simulator failure) needs no more
    driving: `fill_not_scored` records it for the other settings.
    """
    if seed_status(records, seed) is not None:
        return None
    for setting in seed_order(seed, settings) if shuffle else settings:
        if (seed, setting) in running:
            continue
        mine = [r["end_reason"] for r in records if r["seed"] == seed and r["setting"] == setting]
        if any(reason != SIM_ERROR for reason in mine):
            continue
        return setting, len(mine) + 1
    return None


def fill_not_scored(records: list[dict[str, Any]], seed: int, settings: list[str]) -> list[dict[str, Any]]:
    """Records for the settings a not-scored seed has none for yet (the same reason for every setting)."""
    reason = seed_status(records, seed)
    if reason is None:
        return []
    have = {r["setting"] for r in records if r["seed"] == seed and r["end_reason"] != SIM_ERROR}
    return [failed(seed, s, reason, 0.0, note=FILLED_NOTE) for s in settings if s not in have]


def failures_by_setting(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """The seeds on which each setting's own episode failed twice in the simulator: a hang can depend on
    the trajectory, so a setting that hangs more often loses its seeds for every setting."""
    out: dict[str, list[int]] = {}
    for r in records:
        if r["end_reason"] == SIM_FAILURE and r.get("note") != FILLED_NOTE:
            out.setdefault(r["setting"], []).append(r["seed"])
    return {setting: sorted(seeds) for setting, seeds in sorted(out.items())}


def scored_seeds(records: list[dict[str, Any]], settings: list[str]) -> list[int]:
    """Seeds with a driving outcome for every setting (not blocked, no simulator failure)."""
    final: dict[int, set[str]] = {}
    for r in records:
        if r["end_reason"] not in (SIM_ERROR,) + NOT_SCORED:
            final.setdefault(r["seed"], set()).add(r["setting"])
    return sorted(seed for seed, have in final.items()
                  if set(settings) <= have and seed_status(records, seed) is None)


# --------------------------------------------------------------------------- statistics










def non_inferior(boot: dict[str, Any], margin: float, higher_is_worse: bool) -> str:
    """Verdict against a margin from the 90% interval (one-sided 95%): non-inferior, inferior or inconclusive.

    Fewer than MIN_SEEDS_FOR_VERDICT seeds give "too few seeds" whatever the interval says.
    """
    if boot.get("seeds", MIN_SEEDS_FOR_VERDICT) < MIN_SEEDS_FOR_VERDICT:
        return "too few seeds"
    lo, hi = boot["ci90"]
    if higher_is_worse:
        return "non-inferior" if hi < margin else "inferior" if lo > margin else "inconclusive"
    return "non-inferior" if lo > -margin else "inferior" if hi < -margin else "inconclusive"


def _outcomes(r: dict[str, Any]) -> dict[str, float]:
    return {"collision": float(r["crash_vehicle"] or r["crash_object"]), "at_fault": float(r["at_fault"]),
            "completion": float(r["completion"]), "score": float(r["score"])}


def compare(setting_rows: list[dict[str, Any]], full_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A setting against full depth on the same seeds (rows in the same seed order): tests and verdicts."""
    out: dict[str, Any] = {"seeds": len(setting_rows)}
    a = [_outcomes(r) for r in setting_rows]
    b = [_outcomes(r) for r in full_rows]
    for metric, margin, higher_is_worse in MARGINS:
        x = np.array([o[metric] for o in a])
        y = np.array([o[metric] for o in b])
        boot: dict[str, Any] = {**paired_bootstrap(x, y), "seeds": len(x)}
        if metric in ("collision", "at_fault"):      # rates: Newcombe's paired interval, not the bootstrap
            boot.update(ci90=paired_rate_interval(x > 0, y > 0, 1.645), ci95=paired_rate_interval(x > 0, y > 0, 1.96),
                        interval="newcombe")
        else:
            boot["interval"] = "paired bootstrap"
        row = {**boot, "margin": margin, "verdict": non_inferior(boot, margin, higher_is_worse)}
        if metric in ("collision", "at_fault"):
            only_setting, only_full = int(np.sum((x > 0) & (y == 0))), int(np.sum((x == 0) & (y > 0)))
            row.update(only_setting=only_setting, only_full=only_full,
                       mcnemar_p=mcnemar_exact(only_setting, only_full))
        out[metric] = row
    collision, score = out["collision"], out["score"]
    enough = len(setting_rows) >= MIN_SEEDS_FOR_VERDICT
    out["worse_because"] = [reason for reason, fired in (
        ("it collides more", collision["mcnemar_p"] < 0.05 and collision["diff"] > 0),
        ("its driving score is lower", score["ci95"][1] < 0.0)) if enough and fired]
    out["worse_than_full"] = bool(out["worse_because"])
    return out


def summarise(records: list[dict[str, Any]], settings: list[str]) -> dict[str, Any]:
    """Per setting, over the seeds every setting has a driving outcome for; comparisons against full depth.

    Returns {"seeds": [...], "not_scored": {reason: [seeds]}, "sim_failure_by_setting": {setting: [seeds]},
    "settings": {...}, "comparisons": {...}}.
    """
    seeds = scored_seeds(records, settings)
    by_key: dict[tuple[int, str], dict[str, Any]] = {}
    for r in records:
        if r["end_reason"] in (SIM_ERROR,) + NOT_SCORED:
            continue
        episode = (r["seed"], r["setting"])
        if episode in by_key:
            raise ValueError(f"two driving outcomes for seed {episode[0]}, setting {episode[1]}: two runs wrote one "
                             "log? Keep one record per seed and setting (the earlier one) and report again.")
        by_key[episode] = r
    not_scored: dict[str, list[int]] = {}
    for seed in sorted({r["seed"] for r in records}):
        reason = seed_status(records, seed)
        if reason is not None:
            not_scored.setdefault(reason, []).append(seed)
    out: dict[str, Any] = {"seeds": seeds, "not_scored": not_scored,
                           "sim_failure_by_setting": failures_by_setting(records), "settings": {}, "comparisons": {}}
    for setting in settings:
        rows = [by_key[(seed, setting)] for seed in seeds]
        n = len(rows)
        row: dict[str, Any] = {"episodes": n}
        for key, hits in (("success", [r["arrived"] for r in rows]),
                          ("collision", [r["crash_vehicle"] or r["crash_object"] for r in rows]),
                          ("vehicle_collision", [r["crash_vehicle"] for r in rows]),
                          ("object_collision", [r["crash_object"] for r in rows]),
                          ("at_fault", [r["at_fault"] for r in rows]),
                          ("out_of_road", [r["out_of_road"] for r in rows]),
                          ("left_lane", [r["left_lane"] for r in rows]),
                          ("timeout", [r["end_reason"] == "max_steps" for r in rows])):
            k = int(np.sum(hits))
            row[f"{key}_rate"] = k / n if n else float("nan")
            row[f"{key}_ci"] = list(wilson_interval(k, n))
        for key in ("completion", "score"):
            values = np.array([r[key] for r in rows], dtype=np.float64)
            row[key] = float(values.mean()) if n else float("nan")
            row[f"{key}_ci"] = bootstrap_mean_interval(values)
        exits = [r["mean_exit_layer"] for r in rows if not math.isnan(r["mean_exit_layer"])]
        row["mean_exit_layer"] = float(np.mean(exits)) if exits else float("nan")
        row["plan_ms_p50"] = float(np.nanmedian([r["plan_ms_p50"] for r in rows])) if exits else float("nan")
        for key in ("plan_ms_mean", "plan_ms_p95"):        # the mean over episodes of each episode's mean / p95
            times = np.array([r.get(key, float("nan")) for r in rows], dtype=np.float64)
            row[key] = float(np.nanmean(times)) if exits and not np.all(np.isnan(times)) else float("nan")
        out["settings"][setting] = row
        if setting not in (FULL, EXPERT) and FULL in settings and n:
            out["comparisons"][setting] = compare(rows, [by_key[(seed, FULL)] for seed in seeds])
    return out


def confirmation_headline(summary: dict[str, Any], setting: str = CONFIRMED_SETTING,
                          fixed: str = CONFIRMATION_FIXED) -> dict[str, Any]:
    """The confirmation's answer in one record: planning time against full depth (the mean and the p95 of each
    episode's planning times, averaged over the paired seeds), the four non-inferiority verdicts, and whether the
    fixed exit at the same depth drives worse on the score."""
    rows, full = summary["settings"][setting], summary["settings"][FULL]
    verdicts = summary["comparisons"][setting]
    worse = summary["comparisons"].get(fixed, {})
    return {"setting": setting, "seeds": len(summary["seeds"]),
            "mean_exit_layer": rows["mean_exit_layer"],
            "plan_ms_mean_ratio": rows["plan_ms_mean"] / full["plan_ms_mean"],
            "plan_ms_p95_ratio": rows["plan_ms_p95"] / full["plan_ms_p95"],
            "non_inferior": {HEADLINE_METRICS[metric]: verdicts[metric]["verdict"] == "non-inferior"
                             for metric, _, _ in MARGINS},
            "verdicts": {HEADLINE_METRICS[metric]: verdicts[metric]["verdict"] for metric, _, _ in MARGINS},
            "matched_fixed_setting": fixed,
            "matched_fixed_worse": "its driving score is lower" in worse.get("worse_because", [])}
