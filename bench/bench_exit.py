"""Open-loop sweep of the exit policies on the held-out test maps, with the multi-hop ablation.

Every setting plans the same frames with the same runner (ONNX Runtime, one thread), back to back,
so latency ratios come from one run; the bounded tail (exit.max_checks) is on, and the same deltas without
it (`unbounded_deead_*`) and with a per-frame budget (`deead_*_budget`) are measured beside it. Then every test
frame is recorded once through all layers and replayed by the node's controller to compare the rule with the
final-plan oracle (exit at the first layer whose plan lies within eps of the final plan): the layers each
needs for +2% L2 at 3 s over full depth. Prints the tables, writes docs/bench_exit.json and
docs/bench_exit.png, and ends with the headline as one JSON line.

    python bench/bench_exit.py [--frames 400] [--model MANIFEST] [--data data/metadrive]

Without --data it reads the collected data set (data/metadrive) where there is one, else the
compact test split committed beside this script (bench/test_split, deead_compact_split), so the
table regenerates on a fresh clone.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deead_ros"))    # measure this checkout
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "deead_lab"))    # and its lab package

from deead_ros.engines import make_engine  # noqa: E402
from deead_ros.exit import (ExitPolicy, ExitSettings, OraclePolicy, PriorSettings,  # noqa: E402
                            matched_fixed_setting, named_settings, parse_setting_name, setting_name)
from deead_ros.exit.validation import ValidationLimits  # noqa: E402
from deead_ros.parameters import default  # noqa: E402
from deead_ros.paths import demo_manifest_path  # noqa: E402
from deead_ros.runner import Runner  # noqa: E402
from deead_ros.exit.metrics import l2_at_m  # noqa: E402
from deead_lab.calibration.replay import BagRecords, record_frames, replay_frame  # noqa: E402
from deead_lab.eval import EvalFrame, evaluate, summarise  # noqa: E402
from deead_lab.report import test_frames  # noqa: E402

DELTAS = (0.25, 0.5, 1.0, 2.0, 4.0)
COLLECTED, COMMITTED = Path("data/metadrive"), Path(__file__).resolve().parent / "test_split"
DEEAD_2 = setting_name("deead", 2.0)      # fixes the Fixed-EE baseline's depth; the headline's setting
ABLATION_DELTAS = (0.5, 2.0)         # full scans (a check after every layer) vs multi-hop at these deltas
TAIL_DELTAS = (0.25, 0.5)            # with and without the bounded tail, and with a per-frame budget
PLUS_L2 = 0.02                       # the quality at which the rule and the final-plan oracle are compared
RULE_DELTAS = tuple(np.round(np.arange(0.05, 1.501, 0.05), 3))      # the rule's sweep (m)
ORACLE_EPS = tuple(np.round(np.arange(0.0, 0.801, 0.025), 3))       # the final-plan oracle's sweep (m)
HORIZON_S = 3.0                      # L2 at 3 s (the mean over the waypoints up to 3 s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="manifest.json (default: the installed demo model)")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"data set root with test/ (default: {COLLECTED} if collected, else {COMMITTED})")
    parser.add_argument("--frames", type=int, default=400, help="test frames (evenly spaced over the test set)")
    parser.add_argument("--first-checkpoint", type=int, default=default("exit.first_checkpoint"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    if args.data is None:
        args.data = COLLECTED if any((COLLECTED / "test").glob("ep_*.npz")) else COMMITTED
    print(f"test frames from {args.data}/test", flush=True)
    runner = Runner(make_engine("onnxruntime", args.model or demo_manifest_path(), num_threads=1),
                    ExitSettings(first_checkpoint=args.first_checkpoint), PriorSettings())
    test = test_frames(sorted((args.data / "test").glob("ep_*.npz")), runner.encoder.accel_window_s)
    frames, truth = test.frames, test.truth
    if not frames:
        print(f"bench_exit: no test episodes under {args.data}/test; collect them first", file=sys.stderr)
        return 2
    pick = np.linspace(0, len(frames) - 1, min(args.frames, len(frames))).astype(int)
    eval_frames = [EvalFrame(frames[i], True, truth[i]) for i in pick]
    base, _ = runner.settings
    n = runner.num_layers

    # pass 1: deead at delta 2 fixes the depth of the Fixed-EE baseline
    probe = summarise(evaluate(runner, eval_frames, {DEEAD_2: named_settings(DEEAD_2, base).build_policy()}))
    fixed = matched_fixed_setting(probe[DEEAD_2]["mean_exit_layer"])
    names = ["full", fixed, "patience"]
    settings: dict[str, ExitPolicy] = {name: named_settings(name, base).build_policy() for name in names}
    for d in sorted({*DELTAS, base.delta_m}):                   # the sweep and the recommended delta
        for policy in ("deead", "deead_or_patience"):
            name = setting_name(policy, d)
            settings[name] = named_settings(name, base).build_policy()
        settings[setting_name("oracle", d)] = OraclePolicy(delta_m=d, first_checkpoint=args.first_checkpoint)
    ablation = {}
    for d in TAIL_DELTAS:
        settings[f"unbounded_{setting_name('deead', d)}"] = replace(base, delta_m=d, max_checks=0).build_policy()
    for d in ABLATION_DELTAS:
        scan = replace(base, delta_m=d, stride_table=(1.0,), max_checks=0)   # check every layer
        ablation[f"scan_from_layer_1_{d:g}"] = replace(scan, first_checkpoint=1).build_policy()
        ablation[f"scan_from_layer_{args.first_checkpoint}_{d:g}"] = scan.build_policy()
    settings.update(ablation)
    for _ in range(2):                                              # warm-up of every engine
        runner.plan(frames[0])
    rows = evaluate(runner, eval_frames, settings)
    # the per-frame budget: full depth's median time, a deadline a controller could plan for
    budget_ms = float(np.median([r["total_ms"] for r in rows if r["setting"] == "full"]))
    runner.configure(replace(base, budget_ms=budget_ms), runner.settings[1])
    budgeted = {f"{setting_name('deead', d)}_budget": named_settings(setting_name("deead", d), base).build_policy()
                for d in TAIL_DELTAS}
    rows += evaluate(runner, eval_frames, budgeted)
    runner.configure(base, runner.settings[1])
    summary = summarise(rows)
    for name in budgeted:
        summary[name]["budget_ms"] = budget_ms
        summary[name]["over_budget_share"] = float(np.mean([r["reason"] == "budget" for r in rows
                                                            if r["setting"] == name]))
    full = summary["full"]
    for name, s in summary.items():
        s["l2_3s_change_vs_full"] = s["l2_3s_m"] / full["l2_3s_m"] - 1.0
        histogram = np.bincount([r["exit_layer"] for r in rows if r["setting"] == name], minlength=n + 1)[1:]
        s["exit_histogram"] = histogram.tolist()

    print(f"{len(eval_frames)} test frames, {n} layers, onnxruntime 1 thread; fixed exit {fixed} "
          f"= deead@2 m mean depth")
    header = ("setting", "exit", "sparsity", "checks", "p50 ms", "p95 ms", "vs full", "check %", "L2 1s", "L2 2s",
              "L2 3s", "dL2 3s")
    print(" ".join(f"{h:>22}" if i == 0 else f"{h:>8}" for i, h in enumerate(header)))
    for name, s in summary.items():
        values = (s["mean_exit_layer"], s["layer_sparsity"] * 100, s["checks_per_frame"], s["latency_p50_ms"],
                  s["latency_p95_ms"], s["latency_ratio_vs_full"], s["check_time_share"] * 100, s["l2_1s_m"],
                  s["l2_2s_m"], s["l2_3s_m"], s["l2_3s_change_vs_full"] * 100)
        print(f"{name:>22} " + " ".join(f"{v:>8.2f}" for v in values))
    oracle_layers = summary[setting_name("oracle", 2.0)]["mean_exit_layer"]
    recommended = summary[setting_name("deead", base.delta_m)]
    print(f"recording all {len(frames)} test frames through every layer for the rule vs the final-plan oracle",
          flush=True)
    records = record_frames(runner, (EvalFrame(f, True, t) for f, t in zip(frames, truth)), "test split")
    curves = saving_curves(records, base, runner.validation_limits)
    headline = {"latency_ratio_delta2": round(summary[DEEAD_2]["latency_ratio_vs_full"], 3),
                "l2_3s_change_delta2": round(summary[DEEAD_2]["l2_3s_change_vs_full"], 4),
                "check_time_share": round(summary[DEEAD_2]["check_time_share"], 4),
                "layers_over_oracle": round(summary[DEEAD_2]["mean_exit_layer"] / oracle_layers, 3),
                "latency_p95_ratio_recommended": round(recommended["latency_p95_ms"] / full["latency_p95_ms"], 3),
                "latency_p50_ratio_recommended": round(recommended["latency_ratio_vs_full"], 3),
                "layers_at_plus2pct": curves["layers_at_plus2pct"],
                "saving_share_of_final_oracle": curves["saving_share_of_final_oracle"]}
    print(f"layers needed for +{PLUS_L2:.0%} L2 at 3 s on {len(frames)} frames: rule "
          f"{curves['layers_at_plus2pct']['rule']}, final-plan oracle {curves['layers_at_plus2pct']['final_oracle']} "
          f"(the rule gets {curves['saving_share_of_final_oracle']:.0%} of the oracle's saving)")
    print("multi-hop ablation (latency ms / checks per frame / sparsity):")
    for d in ABLATION_DELTAS:
        for name in (*(k for k in ablation if k.endswith(f"_{d:g}")), setting_name("deead", d)):
            s = summary[name]
            print(f"  {name:>22}: {s['latency_p50_ms']:.2f} ms, {s['checks_per_frame']:.2f} checks, "
                  f"{s['layer_sparsity']:.1%} sparsity, check time {s['check_time_share']:.1%}")
    args.out.mkdir(parents=True, exist_ok=True)
    about = {"model_version": runner.chain.manifest.model_version, "data": str(args.data),
             "recommended_delta_m": base.delta_m, "first_checkpoint": args.first_checkpoint, "num_layers": n,
             "max_checks": base.max_checks, "budget_ms": budget_ms}
    (args.out / "bench_exit.json").write_text(json.dumps({"headline": headline, **about, "settings": summary,
                                                          "rule_vs_final_oracle": curves}, indent=1))
    plot_tradeoff(summary, curves, args.out / "bench_exit.png")
    print(json.dumps(headline))
    return 0


def saving_curves(records: BagRecords, base: ExitSettings, limits: ValidationLimits) -> dict:
    """Mean exit layer and L2 at 3 s over a sweep of the rule (deead, base's other settings) and of the
    final-plan oracle, on every recorded frame, and the layers each needs for +PLUS_L2 L2 over full depth."""
    n, dt = records.num_layers, records.dt_s
    truth = records.truth_m

    def l2(published: np.ndarray) -> float:
        return float(np.mean([l2_at_m(p, t, dt, HORIZON_S) for p, t in zip(published, truth)]))

    full_l2 = l2(records.full_m)
    rule = []
    for d in RULE_DELTAS:
        policy = replace(base, policy="deead", delta_m=float(d)).build_policy()
        exits, published = zip(*(replay_frame(records, i, policy, limits) for i in range(len(records))))
        rule.append({"delta_m": float(d), "mean_exit_layer": float(np.mean(exits)),
                     "l2_change": l2(np.stack(published)) / full_l2 - 1.0})
    # the oracle knows the final plan: exit at the first layer whose plan is within eps of it
    to_final = np.array([[l2_at_m(layer, f, dt, HORIZON_S) for layer in frame] for frame, f in
                         zip(records.layers_m, records.full_m)])                              # (N, L)
    oracle = []
    for eps in ORACLE_EPS:
        within = to_final < eps
        within[:, -1] = True
        exits = within.argmax(axis=1) + 1
        published = np.stack([records.full_m[i] if e == n else records.layers_m[i, e - 1]
                              for i, e in enumerate(exits)])
        oracle.append({"eps_m": float(eps), "mean_exit_layer": float(exits.mean()),
                       "l2_change": l2(published) / full_l2 - 1.0})
    layers = {"rule": layers_at(rule, PLUS_L2), "final_oracle": layers_at(oracle, PLUS_L2)}
    share = (n - layers["rule"]) / (n - layers["final_oracle"]) if layers["final_oracle"] < n else float("nan")
    return {"frames": len(records), "full_l2_3s_m": full_l2, "max_checks": base.max_checks, "plus_l2": PLUS_L2,
            "layers_at_plus2pct": {k: round(v, 2) for k, v in layers.items()},
            "saving_share_of_final_oracle": round(share, 3), "rule": rule, "final_oracle": oracle}


def layers_at(curve: list[dict], plus_l2: float) -> float:
    """The mean exit layer at which a sweep (ordered from deep to shallow) first costs `plus_l2` more L2, by linear
    interpolation between its neighbouring points; the deepest point's layers when even that costs more."""
    for deeper, shallower in zip(curve, curve[1:]):
        if deeper["l2_change"] <= plus_l2 < shallower["l2_change"]:
            t = (plus_l2 - deeper["l2_change"]) / (shallower["l2_change"] - deeper["l2_change"])
            return float(deeper["mean_exit_layer"] + t * (shallower["mean_exit_layer"] - deeper["mean_exit_layer"]))
    within = [p["mean_exit_layer"] for p in curve if p["l2_change"] <= plus_l2]
    return float(min(within)) if within else float(curve[0]["mean_exit_layer"])


def plot_tradeoff(summary: dict, curves: dict, path: Path) -> None:
    """Sparsity vs latency ratio vs L2: one curve per policy family over delta; the rule vs the final-plan oracle."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for family in ("deead", "deead_or_patience", "oracle"):
        names = [setting_name(family, d) for d in DELTAS]
        for ax, key in ((axes[0], "latency_ratio_vs_full"), (axes[1], "l2_3s_m")):
            ax.plot([summary[n]["layer_sparsity"] for n in names], [summary[n][key] for n in names], "o-",
                    label=family)
    for name in summary:
        if parse_setting_name(name)[0] in ("fixed", "patience", "full"):
            for ax, key in ((axes[0], "latency_ratio_vs_full"), (axes[1], "l2_3s_m")):
                ax.plot(summary[name]["layer_sparsity"], summary[name][key], "s", label=name)
    axes[0].set(xlabel="layer sparsity", ylabel="latency / full depth", title="latency (points: delta 0.25 .. 4 m)")
    axes[1].set(xlabel="layer sparsity", ylabel="L2 at 3 s (m)", title="accuracy")
    axes[1].legend(fontsize=8)
    for key, label in (("rule", f"deead rule (max_checks {curves['max_checks']})"), ("final_oracle",
                                                                                    "final-plan oracle")):
        axes[2].plot([p["mean_exit_layer"] for p in curves[key]], [p["l2_change"] * 100 for p in curves[key]], "o-",
                     ms=3, label=f"{label}: {curves['layers_at_plus2pct'][key]:.1f} layers at +2%")
    axes[2].axhline(curves["plus_l2"] * 100, color="grey", lw=0.8, ls="--")
    axes[2].set(xlabel="mean exit layer", ylabel="L2 at 3 s vs full depth (%)", ylim=(-2, 25),
                title=f"rule vs final-plan oracle ({curves['frames']} test frames)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
