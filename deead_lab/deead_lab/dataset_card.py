"""Write docs/dataset_card.md for the MetaDrive data set (numpy only; runs in either venv).

    python -m deead_lab.dataset_card --data data/metadrive --out docs/dataset_card.md

Reports, per split: frames, episodes, maps, image size, speeds, commands, scenario labels, episode
end reasons, the frames left out and why, and the share of frames where the expert's 3 s plan
differs from the route prior (the node's own, deead_ros.exit.prior) by more than 1 m (mean L2 over the
horizon), by scenario.
That share bounds how often an early exit against a route prior can be right.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from deead_ros.exit.prior import route_prior
from deead_lab import dataset_format as fmt
from deead_ros.geometry import world_to_ego

DEVIATION_M = 1.0
TIMES_S = np.asarray(fmt.FUTURE_TIMES_S)


def episode_stats(ep: dict[str, Any]) -> dict[str, Any]:
    """Compute the per-frame deviation of the expert from the route prior, with the labels."""
    n = len(ep["pose"])
    dev = np.zeros(n)
    for t in range(n):
        route = world_to_ego(ep["route_world"][t, : int(ep["route_valid"][t])], ep["pose"][t])
        prior = route_prior(route, float(ep["speed"][t]), TIMES_S, max_offset_m=np.inf)
        dev[t] = float(np.linalg.norm(ep["future_ego"][t] - prior.trajectory_m, axis=1).mean()) \
            if prior.is_valid else np.nan
    return {"dev": dev, "scenario": ep["scenario"].tolist(), "command": ep["command"].tolist(),
            "speed": ep["speed"].astype(np.float64), "clean": ep["future_clean"].astype(bool)}


def scan(data: Path) -> dict[str, Any]:
    """Read every episode (without images) and aggregate per split."""
    splits: dict[str, Any] = {}
    for split in fmt.SPLITS:
        files = sorted((data / split).glob("ep_*.npz"))
        agg: dict[str, Any] = {
            "episodes": 0, "empty_episodes": 0, "frames": 0, "maps": set(), "block_sequences": set(),
            "command": Counter(), "scenario": Counter(), "end_reason": Counter(), "dropped_tail": 0,
            "steps_simulated": 0, "not_clean": 0, "crash_frames": 0, "speed": [], "image_hw": None,
            "dev_by_scenario": defaultdict(list), "dev_by_command": defaultdict(list), "dev_all": [],
            "traffic_density": [], "lane_change_maps": 0, "lane_changes_made": 0, "experts": set(),
        }
        for f in files:
            ep = fmt.load_episode(f, images=False)
            meta = ep["meta"]
            with np.load(f, allow_pickle=False) as z:
                if agg["image_hw"] is None and z["images"].shape[0] > 0:
                    agg["image_hw"] = tuple(int(x) for x in z["images"].shape[1:3])
            agg["episodes"] += 1
            agg["maps"].add(ep["map_seed"])
            agg["block_sequences"].add(meta["episode"]["blocks"])
            agg["traffic_density"].append(meta["episode"]["traffic_density"])
            agg["lane_change_maps"] += int("lane_changes" in meta["episode"])
            agg["lane_changes_made"] += int(meta["episode"].get("lane_changes_made", 0))
            agg["experts"].add(meta.get("expert", "IDMPolicy"))
            agg["end_reason"][meta["end_reason"]] += 1
            agg["dropped_tail"] += meta["steps_dropped_tail"]
            agg["steps_simulated"] += meta["steps_simulated"]
            n = len(ep["pose"])
            if n == 0:
                agg["empty_episodes"] += 1
                continue
            st = episode_stats(ep)
            agg["frames"] += n
            agg["command"].update(st["command"])
            agg["scenario"].update(st["scenario"])
            agg["not_clean"] += int((~st["clean"]).sum())
            agg["crash_frames"] += int((ep["crash_vehicle"] | ep["crash_object"] | ep["out_of_road"]).sum())
            agg["speed"].append(st["speed"])
            agg["dev_all"].append(st["dev"])
            for sc, cm, d in zip(st["scenario"], st["command"], st["dev"]):
                agg["dev_by_scenario"][sc].append(d)
                agg["dev_by_command"][cm].append(d)
        splits[split] = agg
    return splits


def _defined(values) -> np.ndarray:
    """The deviations of frames that have a route prior (NaN where the route was unusable)."""
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def _share(values: list[float] | np.ndarray) -> str:
    v = _defined(values)
    return f"{100.0 * np.mean(v > DEVIATION_M):.1f}%" if v.size else "n/a"


def _median(values: list[float] | np.ndarray) -> str:
    v = _defined(values)
    return f"{np.median(v):.2f}" if v.size else "n/a"


def render(splits: dict[str, Any], data: Path) -> str:
    """Render the card as markdown (splits without episodes are left out)."""
    splits = {name: a for name, a in splits.items() if a["episodes"]}
    experts = ", ".join(sorted(set().union(*[a["experts"] for a in splits.values()])))
    lines = [
        "# Data set card: MetaDrive expert driving (DeeAD training / evaluation data)",
        "",
        f"Generated by `python -m deead_lab.dataset_card --data {data}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Do not edit by hand.",
        "",
        "**Source.** MetaDrive 0.2.6.0 procedural maps (one map seed = one episode) driven by the expert "
        f"({experts}: MetaDrive's IDM that slows for curves and gives way at conflict points, in reactive "
        "traffic; on the maps marked below it is also commanded to change lanes, `LaneChangeCommander`), "
        "recorded by `deead_lab/deead_lab/collect_metadrive.py` at 10 Hz: front RGB "
        "camera, ego pose/speed/yaw rate, the route (centre line of the ego's own navigation lanes, "
        "2 m spacing, 80 m), a command derived from the route, a scenario label, and the expert's "
        "future positions at 0.5-3.0 s in the ego frame. Format: `deead_lab/deead_lab/dataset_format.py`. "
        "Splits are disjoint by map seed.",
        "",
        "## Size",
        "",
        "| split | episodes | maps (seeds) | distinct block sequences | frames | hours | image (HxW) "
        "| speed mean / p90 [m/s] | traffic density |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split, a in splits.items():
        sp = np.concatenate(a["speed"]) if a["speed"] else np.zeros(0)
        hw = "x".join(map(str, a["image_hw"])) if a["image_hw"] else "n/a"
        td = a["traffic_density"]
        lines.append(
            f"| {split} | {a['episodes']} | {len(a['maps'])} | {len(a['block_sequences'])} | {a['frames']} "
            f"| {a['frames'] * fmt.DT_S / 3600:.2f} | {hw} | "
            + (f"{sp.mean():.1f} / {np.percentile(sp, 90):.1f}" if sp.size else "n/a")
            + (f" | {min(td):.2f}-{max(td):.2f} |" if td else " | n/a |"))
    lines += ["", "Commanded lane changes: " + "; ".join(
        f"{name} {a['lane_change_maps']} maps, {a['lane_changes_made']} changes made" for name, a in splits.items())
        + "."]
    lines += ["", "## Commands (frames)", "", "| command | " + " | ".join(splits) + " |",
              "|---|" + "---|" * len(splits)]
    for c in fmt.COMMANDS:
        lines.append(f"| {c} | " + " | ".join(str(a["command"].get(c, 0)) for a in splits.values()) + " |")
    lines += ["", "## Scenario labels (frames)", "",
              "Priority when several apply: stopped (< 0.5 m/s) > following_traffic (a vehicle within 20 m "
              "ahead in the ego's route lane) > roundabout > junction_left/right/straight (a junction within "
              "20 m, turn from the route) > lane_change (the expert changes lane within 3 s, or the route "
              "jumps lanes within 20 m) > curve (route heading changes > 10 deg over 30 m) > straight.", "",
              "| scenario | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for s in fmt.SCENARIOS:
        lines.append(f"| {s} | " + " | ".join(str(a["scenario"].get(s, 0)) for a in splits.values()) + " |")
    lines += ["", "## Episode ends", "", "| end reason | " + " | ".join(splits) + " |",
              "|---|" + "---|" * len(splits)]
    reasons = sorted(set().union(*[a["end_reason"].keys() for a in splits.values()]))
    for r in reasons:
        lines.append(f"| {r} | " + " | ".join(str(a["end_reason"].get(r, 0)) for a in splits.values()) + " |")
    lines += ["", "## Excluded and flagged frames", "",
              "| split | simulated steps | dropped: no full 3 s future (episode tail) | empty episodes "
              "(ended within 3 s) | kept frames | flagged `future_clean=False` (crash / out of road within "
              "the 3 s future) | frames with a crash / out-of-road flag |", "|---|---|---|---|---|---|---|"]
    for split, a in splits.items():
        lines.append(f"| {split} | {a['steps_simulated']} | {a['dropped_tail']} | {a['empty_episodes']} "
                     f"| {a['frames']} | {a['not_clean']} | {a['crash_frames']} |")
    skipped = data / "skipped.txt"
    n_skip = len(skipped.read_text().splitlines()) if skipped.exists() else 0
    lines += ["", f"Episodes skipped because the simulator failed twice: {n_skip}"
              + (" (see `skipped.txt`)." if n_skip else "."), "",
              "Trainers should use frames with `future_clean` (the expert's own future ends in a crash or "
              "off the road otherwise).", ""]
    lines += ["## Where the expert leaves the route prior", "",
              f"Share of frames whose expert 3 s plan differs from the route prior by more than "
              f"{DEVIATION_M:.0f} m (mean L2 over the 6 waypoints, 0.5-3.0 s). The prior follows the route "
              "from its point closest to the ego at max(speed, 1 m/s) held constant. A route prior can "
              "let the early-exit controller stop early only where the two agree, so these shares bound "
              "the frames that must run deep.", "",
              "| scenario | " + " | ".join(f"{s} frames | {s} > 1 m | {s} median dev [m]" for s in splits) + " |",
              "|---|" + "---|---|---|" * len(splits)]
    for s in fmt.SCENARIOS + ("all",):
        row = []
        for a in splits.values():
            v: list[float] | np.ndarray
            if s == "all":
                v = np.concatenate(a["dev_all"]) if a["dev_all"] else []
            else:
                v = a["dev_by_scenario"].get(s, [])
            row += [str(len(v)), _share(v), _median(v)]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    lines += ["", "By command:", "",
              "| command | " + " | ".join(f"{s} > 1 m" for s in splits) + " |", "|---|" + "---|" * len(splits)]
    for c in fmt.COMMANDS:
        lines.append(f"| {c} | " + " | ".join(_share(a["dev_by_command"].get(c, [])) for a in splits.values()) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/metadrive", help="data set root (default: %(default)s)")
    p.add_argument("--out", default="docs/dataset_card.md", help="card to write (default: %(default)s)")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not data.is_dir():
        print(f"dataset_card: no data folder at {data}; run deead_lab.collect_metadrive first", file=sys.stderr)
        return 2
    card = render(scan(data), data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(card)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
