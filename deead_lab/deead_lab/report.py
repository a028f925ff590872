"""deead_report: the shipped model's open-loop report on the held-out test maps, with plots.

Reads every layer's trajectory through the shared head (torch, batched), and shows:
- L2 at 1/2/3 s of the full-depth model vs the route prior vs constant velocity;
- the per-layer curve (L2 to ground truth and to the prior, mean and quartiles): DeeAD's
  "trajectory saturation", for the shipped model and, if given, the final-layer-only variant;
- the default controller replayed on the recorded per-layer trajectories (its decisions depend
  on nothing else) over a grid of deltas and the recommended one (the `exit.delta_m` default),
  with the largest delta that keeps L2 at 3 s within +2% of full depth: run on the validation
  split (`--split val`) it is how the default is chosen; exit-layer histograms at 0.5 / 1 / 2 m
  and the recommended delta;
- whether depth matters (`depth_matters`): the head read after layer 8 and fixed exit at deead
  2 m's mean exit layer against full depth, deead at the recommended delta, and the route prior.
Writes docs/model_report.md, docs/model_report.json and docs/*.png.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deead_ros.model.encoding import FrameInputs, encode_batch
from deead_ros.exit import ExitSettings, FrameContext, RecordedChain, run_with_exit
from deead_ros.exit.metrics import l2_at_m
from deead_ros.exit.prior import constant_turn_rate_prior
from deead_lab.model.weights import CONFIG_FILE, load_pretrained, read_config
from deead_ros.parameters import default
from deead_lab.dataset_format import load_episode
from deead_lab.stats import paired_map_bootstrap
from deead_lab.train import episode_frames, route_priors, trajectory_or_nan

DELTAS = (0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)   # the sweep the recommended delta is chosen from
HISTOGRAM_DELTAS = (0.5, 1.0, 2.0)
L2_TOLERANCE = 0.02                  # "within +2% of full depth" (the target for the recommended delta)
SHALLOW_LAYER = 8                    # "the head read after layer 8" of the depth targets


@dataclass
class TestSet:
    """The test maps' scored frames (see deead_train's episode_frames) with their futures, scenarios and maps."""

    frames: list[FrameInputs]
    truth: np.ndarray                # (N, T, 2) the expert's future, ego frame
    scenarios: np.ndarray            # (N,) scenario label
    maps: np.ndarray                 # (N,) map seed


def test_frames(files: list[Path], accel_window_s: float) -> TestSet:
    frames, futures, scenarios, maps = [], [], [], []
    for path in files:
        ep = load_episode(path)
        keep, episode = episode_frames(ep, accel_window_s)
        frames += episode
        futures.append(ep["future_ego"][keep].astype(np.float32))
        scenarios.append(ep["scenario"][keep].astype(str))
        maps.append(np.full(len(episode), int(ep["map_seed"])))
    if not frames:
        return TestSet([], np.zeros((0, 0, 2), np.float32), np.zeros(0, str), np.zeros(0, int))
    return TestSet(frames, np.concatenate(futures), np.concatenate(scenarios), np.concatenate(maps))




@torch.no_grad()
def per_layer_trajectories(weights: Path, frames: list[FrameInputs], batch: int = 128) -> np.ndarray:
    """(N, L, T, 2) trajectories read through the shared head after every layer."""
    pretrained = load_pretrained(weights)
    out = []
    for start in range(0, len(frames), batch):
        encoded = encode_batch(frames[start:start + batch], pretrained.inputs)
        tensors = [torch.from_numpy(encoded[k]) for k in ("image", "route", "ego", "command_ids")]
        out.append(pretrained.model.forward_all_layers(*tensors).numpy())
    return np.concatenate(out)


def l2_table(pred: np.ndarray, truth: np.ndarray, dt_s: float) -> dict[str, float]:
    return {f"l2_{t}s": float(np.mean([l2_at_m(p, g, dt_s, t) for p, g in zip(pred, truth)])) for t in (1, 2, 3)}


def fixed_exit_at(per_layer: np.ndarray, truth: np.ndarray, dt_s: float, mean_exit_layer: float) -> tuple[int, float]:
    """A fixed exit at an adaptive policy's mean depth (the same compute): its layer and L2 at 3 s."""
    layer = int(round(mean_exit_layer))
    return layer, l2_table(per_layer[:, layer - 1], truth, dt_s)["l2_3s"]


def quartiles(values: np.ndarray) -> dict[str, list[float]]:
    """values (N, L) -> mean and quartiles per layer."""
    return {"mean": values.mean(0).tolist(), "q25": np.percentile(values, 25, 0).tolist(),
            "median": np.median(values, 0).tolist(), "q75": np.percentile(values, 75, 0).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_report", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("deead_ros/models/demo"), help="the shipped model")
    parser.add_argument("--ablation-weights", type=Path, default=None, help="final-layer-only variant (optional)")
    parser.add_argument("--data", type=Path, default=Path("data/metadrive"))
    parser.add_argument("--split", default="test", help="the folder under --data to score (test, val, test_dense)")
    parser.add_argument("--first-checkpoint", type=int, default=default("exit.first_checkpoint"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    arch, cfg, spec, model_version = read_config(Path(args.weights) / CONFIG_FILE)
    test = test_frames(sorted((args.data / args.split).glob("ep_*.npz")), spec.accel_window_s)
    frames, truth, scenarios = test.frames, test.truth, test.scenarios
    if not frames:
        print(f"deead_report: no episodes under {args.data}/{args.split}; collect that split or pick another with "
              "--split", flush=True)
        return 2
    print(f"[report] {len(frames)} {args.split} frames", flush=True)
    dt_s = cfg.dt_s
    times = dt_s * np.arange(1, truth.shape[1] + 1)
    has_route, route_prior = route_priors(frames, times)
    cv_prior = np.stack([trajectory_or_nan(constant_turn_rate_prior(f.speed_mps, f.yaw_rate_rps, times), len(times))
                         for f in frames])

    variants = {"early-exit loss (shipped)": args.weights}
    if args.ablation_weights:
        variants["final layer only"] = args.ablation_weights
    curves, per_layer = {}, {}
    for name, weights in variants.items():
        trajectories = per_layer_trajectories(weights, frames)
        per_layer[name] = trajectories
        to_truth = np.linalg.norm(trajectories - truth[:, None], axis=-1).mean(-1)             # (N, L) ADE
        to_final = np.linalg.norm(trajectories - trajectories[:, -1:], axis=-1).mean(-1)
        to_prior = np.linalg.norm(trajectories[has_route] - route_prior[has_route][:, None], axis=-1)[..., :4].mean(-1)
        curves[name] = {"ade_to_truth": quartiles(to_truth), "ade_to_final_layer": quartiles(to_final),
                        "dev_to_route_prior_2s": quartiles(to_prior)}
        print(f"[report] {name}: ADE to truth per layer {[round(float(x), 2) for x in to_truth.mean(0)]}", flush=True)
    shipped = per_layer["early-exit loss (shipped)"]
    num_layers = shipped.shape[1]
    table = {"model (full depth)": l2_table(shipped[:, -1], truth, dt_s),
             "route prior": l2_table(route_prior[has_route], truth[has_route], dt_s),
             "model on frames with a route": l2_table(shipped[has_route, -1], truth[has_route], dt_s),
             "constant velocity": l2_table(cv_prior, truth, dt_s)}

    exits: dict[float, dict[str, Any]] = {}
    recommended = float(default("exit.delta_m"))
    for delta in sorted({*DELTAS, recommended}):
        policy = ExitSettings(delta_m=delta, first_checkpoint=args.first_checkpoint).build_policy()
        layers, preds = [], []
        for i in range(len(frames)):
            ctx = FrameContext(num_layers, route_prior[i] if has_route[i] else None, dt_s)
            trace = run_with_exit(RecordedChain(shipped[i]), 0, policy, ctx)
            layers.append(trace.exit_layer)
            preds.append(trace.trajectory_m)
        exits[delta] = {"exit_layers": layers, "mean_exit_layer": float(np.mean(layers)),
                        "layer_sparsity": float(1 - np.mean(layers) / num_layers),
                        **l2_table(np.asarray(preds), truth, dt_s),       # is adaptivity worth it at this compute?
                        "l2_3s_fixed_at_mean_exit": fixed_exit_at(shipped, truth, dt_s, float(np.mean(layers)))[1]}
    plan_differs = np.array([np.linalg.norm(route_prior[i] - truth[i], axis=-1).mean() > 1.0 if has_route[i] else True
                             for i in range(len(frames))])
    by_scenario = {s: float(plan_differs[scenarios == s].mean()) for s in sorted(set(scenarios))}
    predictions = (("model", shipped[:, -1]), ("route prior", route_prior), ("constant velocity", cv_prior))
    l2_3s = {name: np.array([l2_at_m(p, g, dt_s, 3) for p, g in zip(pred, truth)]) for name, pred in predictions}
    per_scenario = {}
    for s in sorted(set(scenarios)):
        routed = (scenarios == s) & has_route
        per_scenario[s] = {"frames": int(routed.sum()), **{name: float(v[routed].mean()) for name, v in l2_3s.items()}}

    diff = l2_3s["model"][has_route] - l2_3s["route prior"][has_route]
    versus_route = {"mean_m": float(diff.mean()), "ci95_m": paired_map_bootstrap(diff, test.maps[has_route]),
                    "maps": int(len(np.unique(test.maps))), "frames_model_better": float((diff < 0).mean())}

    depth = depth_matters(shipped, truth, dt_s, exits, recommended, table)
    args.out.mkdir(parents=True, exist_ok=True)
    weights_mb = sum(f.stat().st_size for f in Path(args.weights).glob("*.safetensors")) / 1e6
    within = [d for d, e in exits.items() if e["l2_3s"] / table["model (full depth)"]["l2_3s"] - 1 <= L2_TOLERANCE]
    summary = {"model_version": model_version, "arch": arch, "data": str(args.data), "split": args.split,
               "largest_delta_within_2pct_m": max(within, default=None),
               "first_checkpoint": args.first_checkpoint,
               "l2_3s_model": table["model (full depth)"]["l2_3s"], "l2_3s_route_prior": table["route prior"]["l2_3s"],
               "l2_3s_constant_velocity": table["constant velocity"]["l2_3s"], "test_frames": len(frames),
               "num_layers": num_layers, "weights_mb": round(weights_mb, 2),
               "frames_with_route": int(has_route.sum()), "open_loop": table,
               "l2_3s_model_minus_route_prior": versus_route,
               "exits": {str(d): {k: v for k, v in e.items() if k != "exit_layers"} for d, e in exits.items()},
               "expert_differs_from_route_prior_by_1m": by_scenario, "l2_3s_by_scenario": per_scenario,
               "per_layer": curves, **depth}
    (args.out / "model_report.json").write_text(json.dumps(summary, indent=1))
    plot(curves, exits, num_layers, args.out)
    write_markdown(summary, args.out)
    print(f"[report] wrote {args.out}/model_report.md, model_report.json, per_layer.png, exit_histogram.png")
    return 0


def depth_matters(per_layer: np.ndarray, truth: np.ndarray, dt_s: float, exits: dict, recommended: float,
                  table: dict) -> dict:
    """The figures that say whether the model needs its depth, and the targets they are held to.

    per_layer (N, L, T, 2): the head after every layer; exits: the controller replayed per delta;
    table: the open-loop L2 table. The route prior exists on the frames with a route, so full depth
    is held to it on those frames (`l2_3s_full_on_routed`).
    Full depth and the final layer are the same read of the shared head (both keys are kept: the
    first is what a user runs, the second the end of the per-layer curve).
    """
    num_layers = per_layer.shape[1]
    final = table["model (full depth)"]["l2_3s"]
    l2_3s_route_prior = table["route prior"]["l2_3s"]
    fixed_layer, fixed_l2 = fixed_exit_at(per_layer, truth, dt_s, exits[2.0]["mean_exit_layer"])
    figures = {
        "l2_3s_layer8": l2_table(per_layer[:, min(SHALLOW_LAYER, num_layers) - 1], truth, dt_s)["l2_3s"],
        "l2_3s_final": final, "l2_3s_full": final,
        "fixed_exit_layer": fixed_layer,
        "l2_3s_fixed_at_deead2_mean_exit": fixed_l2,
        "delta_recommended_m": recommended,
        "l2_3s_deead_recommended": exits[recommended]["l2_3s"],
        "layer_share_deead_recommended": exits[recommended]["mean_exit_layer"] / num_layers,
        "l2_3s_route_prior": l2_3s_route_prior,
        "l2_3s_full_on_routed": table["model on frames with a route"]["l2_3s"],
    }
    f = figures
    targets = {
        "layer 8 >= 25% worse than the final layer": f["l2_3s_layer8"] / final - 1.0 >= 0.25,
        "fixed exit at deead 2 m's mean layer >= 10% worse than full depth":
            f["l2_3s_fixed_at_deead2_mean_exit"] / final - 1.0 >= 0.10,
        "deead at the recommended delta within +2% of full depth": f["l2_3s_deead_recommended"] / final - 1.0 <= 0.02,
        "deead at the recommended delta runs <= 70% of the layers": f["layer_share_deead_recommended"] <= 0.70,
        "full depth beats the route prior by >= 20% (frames with a route)":
            f["l2_3s_full_on_routed"] <= 0.8 * l2_3s_route_prior,
    }
    return {**figures, "depth_targets_met": targets}


def plot(curves: dict, exits: dict, num_layers: int, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = np.arange(1, num_layers + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=False)
    for ax, key, title in ((axes[0], "ade_to_truth", "ADE to ground truth"),
                           (axes[1], "dev_to_route_prior_2s", "deviation from the route prior (first 2 s)")):
        for name, curve in curves.items():
            c = curve[key]
            line, = ax.plot(layers, c["mean"], label=f"{name}: mean")
            ax.fill_between(layers, c["q25"], c["q75"], alpha=0.2, color=line.get_color(), label=f"{name}: quartiles")
        ax.set(title=title, xlabel="layer read through the shared head", ylabel="m", yscale="log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "per_layer.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for delta, e in exits.items():
        if delta not in HISTOGRAM_DELTAS and delta != float(default("exit.delta_m")):
            continue
        ax.hist(e["exit_layers"], bins=np.arange(0.5, num_layers + 1.5).tolist(), alpha=0.5,
                label=f"delta {delta} m: mean {e['mean_exit_layer']:.1f}")
    ax.set(title="exit layer (route prior, multi-hop controller)", xlabel="exit layer", ylabel="test frames")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "exit_histogram.png", dpi=110)
    plt.close(fig)


def write_markdown(s: dict, out: Path) -> None:
    first_checkpoint = s["first_checkpoint"]
    rows = "\n".join(f"| {name} | {v['l2_1s']:.2f} | {v['l2_2s']:.2f} | {v['l2_3s']:.2f} |"
                     for name, v in s["open_loop"].items())
    final = s["l2_3s_final"]
    exit_rows = "\n".join(f"| {d} | {e['mean_exit_layer']:.1f} | {e['layer_sparsity']:.0%} | {e['l2_3s']:.2f} | "
                          f"{e['l2_3s'] / final - 1:+.1%} | {e['l2_3s_fixed_at_mean_exit'] / final - 1:+.1%} |"
                          for d, e in s["exits"].items())
    within = s["largest_delta_within_2pct_m"]
    within_text = f"{within:g} m" if within is not None else "none"
    scen = "\n".join(f"| {k} | {v:.0%} |" for k, v in s["expert_differs_from_route_prior_by_1m"].items())
    scen_l2 = "\n".join(f"| {k} | {v['frames']} | {v['model']:.2f} | {v['route prior']:.2f} | "
                         f"{v['constant velocity']:.2f} |" for k, v in s["l2_3s_by_scenario"].items())
    curves = s["per_layer"]
    vr = s["l2_3s_model_minus_route_prior"]
    picks = (1, 4, SHALLOW_LAYER, first_checkpoint, 16, 24)                                  # 1-based layers
    shown = sorted({i for i in picks if i < s["num_layers"]} | {s["num_layers"]})
    layer_rows = "\n".join(
        f"| {name} | " + " | ".join(f"{c['ade_to_truth']['mean'][i - 1]:.2f}" for i in shown)
        + " |" for name, c in curves.items())
    layer_head = " | ".join(f"L{i}" for i in shown)
    reads = [(f"head after layer {SHALLOW_LAYER}", s["l2_3s_layer8"]),
             (f"fixed exit at layer {s['fixed_exit_layer']} (deead 2 m's mean)", s["l2_3s_fixed_at_deead2_mean_exit"]),
             (f"deead at {s['delta_recommended_m']:g} m (recommended; {s['layer_share_deead_recommended']:.0%} of "
              "the layers)", s["l2_3s_deead_recommended"]),
             ("full depth", final), ("full depth, frames with a route", s["l2_3s_full_on_routed"]),
             ("route prior (frames with a route)", s["l2_3s_route_prior"])]
    depth_rows = "\n".join(f"| {name} | {l2:.2f} | {l2 / final - 1:+.1%} |" for name, l2 in reads)
    target_rows = "\n".join(f"| {name} | {'met' if met else 'missed'} |"
                            for name, met in s["depth_targets_met"].items())
    text = f"""# Model report

Regenerate: `python -m deead_lab.report --data {s['data']} --split {s['split']} --ablation-weights
runs/final_only/weights`
(`--data data/metadrive`: the collected data set, docs/dataset_card.md; `--data bench/test_split`: its committed
compact test split, every 6th scored frame, on a fresh clone).

Model: {s['model_version']} ({s['arch']}), {s['num_layers']} layers, {s['weights_mb']} MB of fp16 weights.
Scored on the `{s['split']}` split: {s['test_frames']} frames of
held-out maps ({s['frames_with_route']} with a usable route). L2 at t = mean displacement over the
waypoints up to t.

## Open loop (held-out test maps)

| | L2 1 s (m) | L2 2 s (m) | L2 3 s (m) |
|---|---|---|---|
{rows}

Model minus route prior, L2 at 3 s, paired per frame: {vr['mean_m']:+.2f} m, 95% interval
[{vr['ci95_m'][0]:+.2f}, {vr['ci95_m'][1]:+.2f}] m (bootstrap over the {vr['maps']} test maps); the model is closer to
the expert on {vr['frames_model_better']:.0%} of the frames.

L2 at 3 s by scenario (frames with a usable route):

| scenario | frames | model (m) | route prior (m) | constant velocity (m) |
|---|---|---|---|---|
{scen_l2}

## Trajectory saturation: the shared head read at every layer

![per layer](per_layer.png)

ADE to ground truth (m) read at layers {", ".join(map(str, shown))}:

| variant | {layer_head} |
|---|{"---|" * len(shown)}
{layer_rows}

## Does the model need its depth?

L2 at 3 s on the test frames, and the change against full depth:

| read | L2 3 s (m) | vs full depth |
|---|---|---|
{depth_rows}

| target | |
|---|---|
{target_rows}

## Early exit with the route prior (default controller, first checkpoint {first_checkpoint})

![exit histogram](exit_histogram.png)

| delta (m) | mean exit layer | layer sparsity | L2 3 s (m) | vs full depth | fixed exit at that depth, vs full |
|---|---|---|---|---|---|
{exit_rows}

Largest delta of this sweep within +{L2_TOLERANCE:.0%} of full depth: {within_text}
(on the validation split, `--split val`, this is how `exit.delta_m`'s default is chosen).

## How often the expert's plan differs from the route prior by more than 1 m

| scenario | share of frames |
|---|---|
{scen}
"""
    (out / "model_report.md").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
