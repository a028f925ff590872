"""Write docs/results.md from the benchmarks' JSON files in docs/ (run the benchmarks first).

    python bench/bench_chain.py --out docs                      # docs/bench_chain_deead_vla.json (demo model)
    python bench/bench_chain.py --model build/models/llama_vla/manifest.json --out docs   # ..._llama_vla.json
    python bench/bench_exit.py --frames 400                     # docs/bench_exit.json, .png
    make closed-loop                                            # docs/closed_loop.json, .png
    python bench/bench_ros.py --before 03d2581 --out docs   # docs/bench_ros.json, the node before issue 38 beside
    python bench/bench_ros.py --overload --seconds 60 --out docs  # docs/bench_overload.json
    python bench/bench_ros.py --stress --out docs               # docs/bench_stress.json
    python bench/soak.py --minutes 30 --out docs                # docs/soak.json, .png
    python bench/results.py                                     # docs/results.md

A section whose JSON is missing says which command makes it. Numbers come from the files only, so
the report always matches the last runs.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # this checkout's naming of the settings
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "deead_lab"))    # and its lab package
from deead_ros.exit.settings import matched_fixed_setting, parse_setting_name, setting_name  # noqa: E402
from deead_lab.closed_loop import (MIN_SEEDS_FOR_VERDICT, PROTOCOL_SEEDS, is_main_split, report_name,  # noqa: E402
                                   split_seeds)
from deead_lab.driving.rules import SCORE_OBJECT, SCORE_OUT_OF_ROAD, SCORE_VEHICLE  # noqa: E402
from deead_lab.sim.scenario import DENSE_TRAFFIC_DENSITY, TRAFFIC_DENSITY  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
DEEAD_2 = setting_name("deead", 2.0)          # the paper's headline delta
# Earlier models driven through the closed loop's first protocol (20 s episodes, MetaDrive's IDM as the
# expert; bench/closed_loop.py --model ... --docs <dir>, the closed_loop.json copied here under this name).
PROTOCOL1_RUNS = (("earlier demo model (24 layers)", "closed_loop_protocol1_demo.json"),
                  ("first model", "closed_loop_previous_model.json"),
                  ("acceleration input", "closed_loop_acceleration_input.json"),
                  ("acceleration input, dropout 0.5", "closed_loop_accel_dropout.json"),
                  ("no acceleration input, trial run", "closed_loop_no_accel.json"))
# bench/closed_loop.py --trace 3001 full: the model with the acceleration input, then the current one.
TRACE_FIGURES = ("closed_loop_trace_3001_full_acceleration_input.png", "closed_loop_trace_3001_full.png")

PAPER = ("DeeAD (arXiv 2511.20720; ../shared/papers/deead_2511.20720_summary.md) on ORION (32 layers, Bench2Drive, an "
         "L20 GPU): up to 28% layer sparsity and 29% lower latency at delta 2 m (21.3% and 15% at 0.5 m), planning "
         "quality preserved, collision rate 0.06% with early exit vs 0.03% at full depth; Fixed-EE at similar "
         "sparsity doubles the collision rate; valid exits almost never before layer 13 (its first checkpoint); a "
         "full scan from layer 1 costs 520 ms and a layer-by-layer scan from layer 13 366 ms, against 311 ms with "
         "multi-hop.")
PAPER_SPARSITY = {"2": 0.28, "0.5": 0.213}          # delta (m) -> the paper's layer sparsity and latency reduction
PAPER_LATENCY_CUT = {"2": 0.29, "0.5": 0.15}
PAPER_SCAN_RATIOS = (520 / 311, 366 / 311)           # full scan from layer 1, layer by layer from L13, over multi-hop


# Measured with the bundled model on bags/demo; each records the model_version it measured.
ON_THE_DEMO_MODEL = ("calibration.json", "scale_out.json", "bench_stress.json", "soak.json")


def previous_model_note(model_version: str | None) -> str:
    """Which sections still hold another model's figures than `model_version` (bench_exit's model)."""
    old = [name for name in ON_THE_DEMO_MODEL
           if (data := load(name)) is not None and data.get("model_version") != model_version]
    return (f" Not yet re-run on this model (they hold an earlier model's figures): {', '.join(old)}."
            if old else "")


def load(name: str) -> dict | None:
    path = DOCS / name
    return json.loads(path.read_text()) if path.exists() else None


def missing(name: str, command: str) -> str:
    return f"_No `docs/{name}` yet: run `{command}`._\n"


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    return "\n".join("| " + " | ".join(row) + " |" for row in [cells[0], ["---"] * len(header), *cells[1:]]) + "\n"


CHAIN_MODELS = (("shipped demo model (trained Llama VLA)", "demo", "python bench/bench_chain.py --out docs"),
                ("first demo model (deead_vla, 24 layers)", "deead_vla",
                 "python bench/bench_chain.py --model <its manifest.json> --out docs"),
                ("ORION-shaped Llama VLA (random weights, default size)", "llama_vla",
                 "deead_export --arch llama_vla --out build/models/llama_vla && "
                 "python bench/bench_chain.py --model build/models/llama_vla/manifest.json --out docs"))


def chain() -> str:
    rows, notes = [], []
    for label, arch, command in CHAIN_MODELS:
        result = load(f"bench_chain_{arch}.json")
        if result is None:
            notes.append(missing(f"bench_chain_{arch}.json", command))
            continue
        rows.append([label, result["num_layers"], result["full_depth_ms"], result["fused_ms"], result["chain_ms"],
                     f"{result['chain_over_fused']:.3f}", result["boundary_us"], f"{result['head_over_layer']:.3f}"])
    text = ("ONNX Runtime, one thread: the per-layer chain (what early exit needs) against one fused graph of "
            "the same layers (`bench/bench_chain.py`, medians, interleaved; target chain / fused <= 1.05).\n\n")
    if rows:
        text += table(["model", "layers", "full depth ms", "fused layers ms", "chain ms", "chain / fused",
                       "per boundary us", "head / layer"], rows)
    return text + "".join(notes)


def open_loop(bench: dict | None) -> str:
    if bench is None:
        return missing("bench_exit.json", "python bench/bench_exit.py")
    head, settings = bench["headline"], bench["settings"]
    rows = [[name, s["mean_exit_layer"], f"{s['layer_sparsity']:.0%}", s["checks_per_frame"], s["latency_p50_ms"],
             s["latency_p95_ms"], s["latency_ratio_vs_full"], f"{s['check_time_share']:.1%}", s["l2_1s_m"],
             s["l2_2s_m"], s["l2_3s_m"], f"{s['l2_3s_change_vs_full']:+.1%}"]
            for name, s in settings.items() if not name.startswith("scan_")]
    frames = settings["full"]["frames"]
    text = (f"{frames} frames of the held-out test maps, ONNX Runtime on one thread, every setting on the same "
            "frames back to back (`python bench/bench_exit.py`). Latency ratio = median latency / median latency "
            "at full depth in the same run. Check share = time in the head, the deviation and the controller "
            "over total time.\n\n")
    text += table(["setting", "mean exit", "sparsity", "checks", "p50 ms", "p95 ms", "vs full", "checks %",
                   "L2 1 s", "L2 2 s", "L2 3 s", "dL2 3 s"], rows)
    targets = [("latency ratio at delta 2 m", head["latency_ratio_delta2"], "<= 0.65",
                head["latency_ratio_delta2"] <= 0.65),
               ("L2 at 3 s vs full depth", f"{head['l2_3s_change_delta2']:+.1%}", "<= +5%",
                head["l2_3s_change_delta2"] <= 0.05),
               ("check time share", f"{head['check_time_share']:.1%}", "<= 5%", head["check_time_share"] <= 0.05),
               ("layers run / oracle layers", head["layers_over_oracle"], "<= 1.15",
                head["layers_over_oracle"] <= 1.15)]
    text += "\nTargets at delta 2 m:\n\n" + table(["figure", "measured", "target", "met"],
                                                 [[a, b, c, "yes" if d else "no"] for a, b, c, d in targets])
    text += bounded_tail(bench)
    text += "\n![trade-off](bench_exit.png)\n"
    deltas = sorted({parse_setting_name(name)[1] for name in settings if name.startswith("scan_")})
    names = [name for d in deltas for name in settings
             if name.startswith("scan_") and parse_setting_name(name)[1] == d or name == setting_name("deead", d)]
    rows = [[name, settings[name]["mean_exit_layer"], settings[name]["latency_p50_ms"],
             settings[name]["checks_per_frame"], f"{settings[name]['layer_sparsity']:.0%}",
             f"{settings[name]['check_time_share']:.1%}"] for name in names]
    text += ("\n### Multi-hop ablation\n\nA full scan checks after every layer (from layer 1, or from the first "
             "checkpoint); multi-hop (deead) checks at the first checkpoint and then jumps 8/4/2/1 layers by how "
             "far the trajectory still is from the prior (the suffix is delta in m).\n\n"
             + table(["controller", "mean exit", "p50 ms", "checks / frame", "sparsity", "check time"], rows))
    return text


def headline(loop: dict | None, bench: dict | None) -> str:
    """What the package buys in the closed loop, first: planning time (mean, p95) against full depth beside DeeAD's
    29%, and the driving verdicts, from the confirmation on fresh seeds (docs/closed_loop.json `headline`), then
    every setting of the confirmation run (its report) as the other closed-loop splits are shown."""
    head = (loop or {}).get("headline")
    if head is None:
        return missing("closed_loop.json with a confirmation headline",
                       ".venv-metadrive/bin/python bench/closed_loop.py --confirm --report-only")
    confirmation = load(Path(head["report"]).name)              # the confirmation run's own report, in docs/
    seeds, target = head["seeds"], PROTOCOL_SEEDS
    status = "complete" if seeds >= target else f"**provisional: {seeds} of {target} seeds so far**, the run goes on"
    verdicts = head["non_inferior"]
    rows = [["mean planning time / full depth", f"{head['plan_ms_mean_ratio']:.2f}", "<= 0.70",
             f"{1 - PAPER_LATENCY_CUT['2']:.2f} (DeeAD: -29%)", "yes" if head["plan_ms_mean_ratio"] <= 0.70 else "no"],
            ["p95 planning time / full depth", f"{head['plan_ms_p95_ratio']:.2f}", "<= 1.00", "-",
             "yes" if head["plan_ms_p95_ratio"] <= 1.0 else "no"],
            *[[f"non-inferior to full depth: {metric.replace('_', '-')}",
               "yes" if ok else head.get("verdicts", {}).get(metric, "not shown"), "non-inferior", "-",
               "yes" if ok else "no"] for metric, ok in verdicts.items()],
            [f"{head['matched_fixed_setting']} (its depth) worse on the score",
             "yes" if head["matched_fixed_worse"] else
             "too few seeds" if seeds < MIN_SEEDS_FOR_VERDICT else "not shown",
             "worse", "similar sparsity, 2x the collisions", "yes" if head["matched_fixed_worse"] else "no"]]
    text = (f"Closed loop, confirmation on fresh seeds (protocol {head['protocol']}, declared before its first "
            f"episode; `{head['report']}`): `{head['setting']}` with the bounded tail against full depth, {seeds} "
            f"paired seeds from 4000 ({status}); mean exit layer {head['mean_exit_layer']:.1f}. Planning time = "
            "the runner's time per frame on one CPU core (ONNX Runtime), averaged per episode, then over seeds.\n\n")
    text += table(["figure", "measured", "target", "DeeAD (ORION, GPU)", "met"], rows)
    if bench and "layers_at_plus2pct" in bench.get("headline", {}):
        h, rec = bench["headline"], bench["settings"][setting_name("deead", bench["recommended_delta_m"])]
        text += (f"\nOpen loop (test split, `bench/bench_exit.py`): the node's default delta "
                 f"{bench['recommended_delta_m']:g} m with the bounded tail runs {rec['mean_exit_layer']:.1f} of "
                 f"{bench['num_layers']} layers at {rec['l2_3s_change_vs_full']:+.1%} L2 at 3 s "
                 f"({'within' if rec['l2_3s_change_vs_full'] <= 0.02 else 'missing'} the +2% target), median latency "
                 f"{rec['latency_ratio_vs_full']:.2f}x and p95 {h['latency_p95_ratio_recommended']:.2f}x full "
                 f"depth; for +2% L2 the rule needs {h['layers_at_plus2pct']['rule']:.1f} layers, the final-plan "
                 f"oracle {h['layers_at_plus2pct']['final_oracle']:.1f}.\n")
        confirmed = bench["settings"].get(head["setting"])
        if confirmed is not None:
            share = head["mean_exit_layer"] / bench["num_layers"]
            text += (f"\nWhy the mean misses 0.70: planning time follows the layers run. `{head['setting']}` runs "
                     f"{confirmed['mean_exit_layer']:.1f} layers on the open-loop test split (expert-driven frames) "
                     f"but {head['mean_exit_layer']:.1f} in the closed loop, where the model drives: "
                     f"{share:.2f} of the layers, {head['plan_ms_mean_ratio']:.2f} of the time (the rest is the "
                     f"checks). A mean of 0.70 needs fewer than {0.70 * bench['num_layers']:.0f} layers in the loop.\n"
                     if head["plan_ms_mean_ratio"] > 0.70 else "")
    if confirmation is not None and not head["matched_fixed_worse"]:
        s, fixed = confirmation["settings"], head["matched_fixed_setting"]
        full, rule, matched = s["full"], s[head["setting"]], s[fixed]
        score = confirmation["comparisons"][fixed]["score"]
        text += (f"\nWhy `{fixed}` is not shown worse: at the same depth without the rule, it collides less than "
                 f"full depth ({matched['collision_rate']:.0%} against {full['collision_rate']:.0%}) but arrives "
                 f"less often: it arrives on {matched['success_rate']:.0%} of the seeds (full depth "
                 f"{full['success_rate']:.0%}, `{head['setting']}` {rule['success_rate']:.0%}) and runs out of time "
                 f"on {matched['timeout_rate']:.0%} (full depth {full['timeout_rate']:.0%}). The score multiplies "
                 f"the completion by {SCORE_VEHICLE:g} for a collision and charges an unfinished route only its "
                 f"remaining share, so its score is {score['diff']:+.3f} against full depth, inside the protocol's "
                 f"-{score['margin']:.2f} margin: not worse by the declared test.\n")
    if confirmation is not None:
        text += ("\n### The confirmation run, setting by setting\n\n"
                 + closed_loop_protocol(confirmation, Path(head["report"]).with_suffix(".png").name))
    return text


def bounded_tail(bench: dict) -> str:
    """The tail before and after the bound on looks, with a per-frame budget, and the rule against the final-plan
    oracle (bench_exit, one run)."""
    settings, head = bench["settings"], bench["headline"]
    if "layers_at_plus2pct" not in head:
        return "\n" + missing("bench_exit.json with the bounded tail", "python bench/bench_exit.py")
    full = settings["full"]
    names = [name for d in (0.25, 0.5) for name in (f"unbounded_{setting_name('deead', d)}", setting_name("deead", d),
                                                     f"{setting_name('deead', d)}_budget") if name in settings]
    rows = [[name, s["mean_exit_layer"], s["checks_per_frame"], s["latency_p50_ms"], s["latency_p95_ms"],
             s["latency_p95_ms"] / full["latency_p95_ms"], f"{s['l2_3s_change_vs_full']:+.1%}",
             f"{s['over_budget_share']:.1%}" if "over_budget_share" in s else "-"] for name, s in
            ((n, settings[n]) for n in names)]
    layers, share = head["layers_at_plus2pct"], head["saving_share_of_final_oracle"]
    n = bench["num_layers"]
    targets = [("p95 latency / full depth's, recommended delta", head["latency_p95_ratio_recommended"], "<= 1.00",
                head["latency_p95_ratio_recommended"] <= 1.0),
               ("share of the final-plan oracle's layer saving at +2% L2", f"{share:.0%}", ">= 90%", share >= 0.9)]
    return (f"\n### Bounded tail\n\nAfter `exit.max_checks` = {bench.get('max_checks', '?')} looks through the head "
            "that did not exit, the chain runs straight to the last layer (`unbounded_*`: the same delta without the "
            "bound, looking at every stride of the table until the last layer). `*_budget`: with `exit.budget_ms` "
            f"= {bench.get('budget_ms', float('nan')):.1f} ms, full depth's median in this run: a frame whose next "
            "layer would end after it publishes the deepest plan reached, flagged `over_budget`. p95 ratio = the "
            "setting's p95 latency / full depth's p95 in the same run.\n\n"
            + table(["setting", "mean exit", "checks", "p50 ms", "p95 ms", "p95 / full", "dL2 3 s", "over budget"],
                    rows)
            + f"\nThe rule against the final-plan oracle (exit at the first layer whose plan lies within eps of the "
            "final plan, which only an oracle knows), both swept on all "
            f"{bench['rule_vs_final_oracle']['frames']} test frames and replayed by the node's controller: for +2% L2 "
            f"at 3 s the rule needs {layers['rule']:.1f} of "
            f"{n} layers and the oracle {layers['final_oracle']:.1f}, so the rule gets {share:.0%} of the saving any "
            "agreement rule could get on this model: the model (its late layers still move the plan), not the rule, "
            "limits the saving. The bound on looks was chosen on these test frames (max_checks 2 against 3, 4, 6 "
            "and none; fewer looks both cost less and exit less often late, where an exit that barely meets delta "
            "is a worse plan), so this share is not a held-out figure; the closed-loop confirmation runs on fresh "
            "seeds.\n\n"
            + table(["figure", "measured", "target", "met"],
                    [[a, b, c, "yes" if d else "no"] for a, b, c, d in targets]))


def closed_loop_protocol(result: dict, figure: str | None = None) -> str:
    """The closed-loop section of one split under docs/closed_loop_protocol.md (protocol >= 2): full routes,
    paired tests, the split's figure (figure: another file in docs/) and seed target."""
    settings, comparisons = result["settings"], result["comparisons"]
    n = len(result["seeds"])
    def pct(s: dict, k: str) -> str:
        return f"{s[k + '_rate']:.0%} [{s[k + '_ci'][0]:.0%}, {s[k + '_ci'][1]:.0%}]"

    def num(v: float | None) -> str:
        return "-" if v is None or math.isnan(v) else f"{v:.1f}"

    text = (f"MetaDrive 0.2.6, protocol {result['protocol']} (docs/closed_loop_protocol.md, declared before the run): "
            f"{n} held-out map seeds (from {result['seeds_from']}) driven by every setting, whole routes ending on "
            f"arrival, crash, out of road or a cap of twice the route at the expert's speed + 10 s; traffic density "
            f"{result['density']} in trigger mode, reactive (yielding) traffic; expert = the yielding IDM that "
            f"records the data set. Model `{result.get('model_version', '?')}` (sha256 "
            f"{str(result.get('model_sha256', '?'))[:12]}). Rates with 95% Wilson intervals, completion and "
            "score with 95% seed-bootstrap intervals; at fault under the protocol's written rule; score = "
            f"completion x {SCORE_VEHICLE:g} (vehicle collision) x {SCORE_OBJECT:g} (object) x "
            f"{SCORE_OUT_OF_ROAD:g} (out of road).\n\n")
    skipped = result.get("not_scored") or {}
    if skipped:
        text += ("Not scored, for every setting: " + "; ".join(
            f"{reason} on seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
            for reason, seeds in skipped.items()) + ".")
        hung = result.get("sim_failure_by_setting") or {}
        if hung:
            text += (" The simulator failed (twice) on the episode of " + "; ".join(
                f"{setting} on seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                for setting, seeds in hung.items()) + " (a hang depends on the trajectory, so on the setting).")
        text += "\n\n"
    rows = [[name, pct(s, "success"), pct(s, "collision"), pct(s, "at_fault"), pct(s, "out_of_road"),
             pct(s, "left_lane"), f"{s['completion']:.2f}",
             f"{s['score']:.2f} [{s['score_ci'][0]:.2f}, {s['score_ci'][1]:.2f}]",
             num(s["mean_exit_layer"]), num(s["plan_ms_p50"])] for name, s in settings.items()]
    text += table(["setting", "arrived", "collision", "at fault", "out of road", "left the lane", "completion",
                   "driving score", "mean exit", "plan ms p50"], rows)
    text += f"\n![closed loop]({figure or report_name(result['density'], '.png')})\n"
    if comparisons:
        text += ("\nEach setting against full depth on the same seeds: difference (setting - full) with its 90% "
                 "interval (one-sided 95%; Newcombe's paired interval for rates, a seed bootstrap for completion and "
                 "score), McNemar's exact p on the discordant seeds, the verdict against the declared margin "
                 "(collision and at fault +0.05, completion and score -0.05; none under 30 seeds).\n\n")
        def cell(c: dict, k: str) -> str:
            return f"{c[k]['diff']:+.3f} [{c[k]['ci90'][0]:+.3f}, {c[k]['ci90'][1]:+.3f}] {c[k]['verdict']}"

        crow = [[name, cell(c, "collision") + f", p={c['collision']['mcnemar_p']:.2f}",
                 cell(c, "at_fault") + f", p={c['at_fault']['mcnemar_p']:.2f}", cell(c, "completion"),
                 cell(c, "score"), "yes" if c["worse_than_full"] else "no"] for name, c in comparisons.items()]
        text += table(["setting", "collision", "at fault", "completion", "driving score", "worse than full"], crow)
        text += closed_loop_verdicts(comparisons)
    target_seeds = split_seeds(result["density"])
    if n < target_seeds:
        text += (f"\n**{n} paired seeds, short of the protocol's {target_seeds}**: the run resumes where it "
                 f"stopped (`{resume_command(result['density'])}`); verdicts at this size are provisional.\n")
    return text


def resume_command(density: float) -> str:
    """The command that goes on with a split's run."""
    if is_main_split(density):
        return "make closed-loop"
    return f".venv-metadrive/bin/python bench/closed_loop.py --density {density:g}"


def closed_loop_verdicts(comparisons: dict) -> str:
    """The comparison table in words: which settings are as safe as full depth, and whether a fixed exit is worse."""
    if any(c[m]["verdict"] == "too few seeds" for c in comparisons.values() for m in ("collision", "score")):
        return "\nNo verdicts yet: the protocol gives none under 30 paired seeds.\n"

    def named(names: list[str]) -> str:
        return ", ".join(f"`{n}`" for n in names) if names else "none"

    def by_verdict(metric: str, verdict: str) -> list[str]:
        return [name for name, c in comparisons.items() if c[metric]["verdict"] == verdict]

    everywhere = [name for name, c in comparisons.items()
                  if all(c[m]["verdict"] == "non-inferior" for m in ("collision", "at_fault", "completion", "score"))]
    text = (f"\n**What the tests say.** Non-inferior to full depth on collisions (the primary endpoint): "
            f"{named(by_verdict('collision', 'non-inferior'))}; inconclusive: "
            f"{named(by_verdict('collision', 'inconclusive'))}; "
            f"inferior: {named(by_verdict('collision', 'inferior'))}. "
            f"Non-inferior on all four metrics (collisions, at-fault collisions, completion, driving score): "
            f"{named(everywhere)} (a setting that leaves the road early meets fewer vehicles: its collisions are "
            "read beside its completion).")
    for name, c in comparisons.items():
        if parse_setting_name(name)[0] != "fixed":
            continue
        score, collision = c["score"], c["collision"]
        why = " and ".join(c["worse_because"])
        verdict = f"worse than full depth ({why})" if c["worse_than_full"] else "not shown worse than full depth"
        text += (f" The fixed exit `{name}` is {verdict}: "
                 f"collisions {collision['diff']:+.3f} (McNemar p={collision['mcnemar_p']:.3f}), "
                 f"driving score {score['diff']:+.3f}, 95% [{score['ci95'][0]:+.3f}, {score['ci95'][1]:+.3f}].")
    return text + "\n"


def closed_loop(result: dict | None, dense: dict | None, earlier: list[tuple[str, str, dict]]) -> str:
    """The closed-loop section: the shipped model under the protocol (its dense split apart), then earlier models
    under the first one."""
    text = closed_loop_protocol(result) if result is not None else missing("closed_loop.json", "make closed-loop")
    if dense is not None:
        text += (f"\n### Denser traffic (density {dense['density']:g}), a secondary split\n\n"
                 "Declared in the protocol before its model-driven episodes; never pooled with the main split "
                 f"(`{resume_command(dense['density'])}`).\n\n"
                 + closed_loop_protocol(dense))
    text += ("\nThe shipped model's episodes step by step, one per way an episode ends "
             "(`.venv-metadrive/bin/python bench/closed_loop.py --trace SEED SETTING`): "
             "[closed_loop_traces/README.md](closed_loop_traces/README.md).\n")
    if earlier:
        text += protocol1_history(earlier)
    return text + acceleration_trace()


def protocol1_history(earlier: list[tuple[str, str, dict]]) -> str:
    """Earlier models under the first protocol: (label, file name, result), full depth and deead at 2 m."""
    ci = lambda s, k: f"{s[k + '_rate']:.0%} [{s[k + '_ci'][0]:.0%}, {s[k + '_ci'][1]:.0%}]"  # noqa: E731
    text = ("\n### Earlier models, under the first protocol\n\nBefore docs/closed_loop_protocol.md: episodes of 20 s "
            "(200 steps), MetaDrive's own IDM as the expert (it collided in a quarter of the episodes), completion "
            "against the expert's progress, the same held-out seeds from 3000, each model its own run. Not "
            "comparable with the table above; kept for the decisions they informed:\n\n")
    text += "".join(f"- {label}: `{run['model_version']}` (docs/{name})\n" for label, name, run in earlier)
    rows = [[f"{setting}, {label}", s["episodes"], ci(s, "collision"), ci(s, "off_road"), ci(s, "success"),
             s["route_completion"], f"{s['driving_score']:.2f}"]
            for setting in ("full", DEEAD_2) for label, _, run in earlier
            for s in [run["settings"].get(setting)] if s]
    text += "\n" + table(["setting, model", "episodes", "collision", "off road", "success", "completion",
                          "driving score"], rows)
    return text + ("\nThe earlier demo model and the trial run without the acceleration input differ only in the "
                   "training run (the same data, loss and inputs; the trial was picked on validation with its "
                   "untrained acceleration weights still in use): the gap between them is how much one training "
                   "run alone moved these rates with 41 training maps.\n")


def acceleration_trace() -> str:
    """Why no shipped model sees its own acceleration: one episode traced with and without that input."""
    if not all((DOCS / figure).exists() for figure in TRACE_FIGURES):
        return ""
    with_input, without = TRACE_FIGURES
    return ("\n### Why the model does not see its own acceleration\n\n"
            "One episode step by step (`.venv-metadrive/bin/python bench/closed_loop.py --trace 3001 full`, first "
            "protocol), first with a model trained with the acceleration input (`deead_train --acceleration-input`):"
            f"\n\n![trace, acceleration input]({with_input})\n\n"
            "Approaching a right turn the plan slows down, the tracker brakes, the acceleration input reads the "
            "braking (down to -5.6 m/s^2, more than the expert brakes in the data) and the next plans slow "
            "down further: the car crawls into the junction at 2 m/s, where the plan turns more sharply than "
            "the route and the car leaves the road. This is the copycat problem of behaviour cloning: the "
            "input that tells braking from cruising in the data also lets the model continue whatever the car "
            "did. Hiding it on half of the training frames (`--acceleration-input --accel-dropout 0.5`, "
            "ChauffeurNet's remedy) left the road less often but collided more (table above); a model that "
            "never sees it (the demo model of the time; `deead_train` leaves the input out unless told otherwise, "
            "and the shipped model does not see it either) drives the same seed like this:\n\n"
            f"![trace, without the input]({without})\n\n"
            "It slows to 5.7 m/s for the right turn, speeds up again once through it and stays within 1 m of "
            "the lane centre to the end of the episode (147 m in 20 s). What the model gives up without the "
            "input shows in the open loop: behind stopped traffic its L2 at 3 s is worse than the route "
            "prior's (docs/model_report.md).\n")


ROS_COMMAND = "python bench/bench_ros.py --out docs"
ROS_GOALS = {"overhead_ms": 0.5, "node_over_runner": 1.10, "decode_1080p_ms": 3.0}


SEVERAL_CAMERAS_COMMAND = ("python bench/bench_ros.py --cameras 6 --sizes 640x360 1600x900 --formats jpeg "
                           "--decode-threads 1 4 --out docs")


def several_cameras(part: dict | None) -> str:
    """The --cameras N rows of bench_ros.json: the node's overhead per view beside the floor, per decode_threads."""
    if part is None:
        return "\n" + missing("bench_ros.json's six-camera rows", SEVERAL_CAMERAS_COMMAND)
    text = (f"\n{part['cameras']} cameras (issue 39; `{SEVERAL_CAMERAS_COMMAND}`, {part.get('seconds', 20):g} s per "
            "run): the publisher sends every view of one exposure with its CameraInfo, an IMU sample and odometry; "
            "the node runs the six-camera, stateful test model (32 layers, random weights) and decodes the views on "
            "`decode_threads` threads; the floor is the echo node publishing once the last view of an exposure "
            "has arrived. Overhead beyond the floor = latency - runner - floor, also per view.\n\n")
    keys = ("latency_p50_ms", "runner_p50_ms", "floor_ms", "overhead_ms", "overhead_per_view_ms", "decode_p50_ms",
            "decode_per_view_ms", "node_over_runner")
    rows = [[name, *(c[k] for k in keys)] for name, c in part["by_camera"].items()]
    text += table(["cameras", "latency p50 ms", "runner ms", "floor ms", "overhead beyond floor ms",
                   "overhead per view ms", "decode ms (all views)", "decode per view ms", "node / runner"], rows)
    return text + (f"\n{part['note']}\n" if part.get("note") else "")


def ros(bench: dict | None, overload: dict | None) -> str:
    text = ""
    keys = ["size", "format", "sent", "planned", "unaccounted", "latency_p50_ms", "latency_p95_ms", "runner_p50_ms",
            "node_over_runner", "floor_p50_ms", "overhead_ms", "wait_p50_ms", "decode_p50_ms", "assembly_p50_ms",
            "messages_p50_ms", "delivery_p50_ms", "node_cpu_cores"]
    header = ["camera", "format", "sent", "planned", "unaccounted", "p50 ms", "p95 ms", "runner ms", "node / runner",
              "floor ms", "overhead beyond floor ms", "wait ms", "decode ms", "assembly ms", "messages ms",
              "delivery ms", "node CPU cores"]
    if bench is None or "by_camera" not in bench:
        text += missing("bench_ros.json", ROS_COMMAND)
    else:
        text += ("Camera publisher and `deead_node` in separate processes on loopback (Fast DDS, shared memory), "
                 "the demo model with the default parameters, the camera at 10 Hz in three sizes, as JPEG "
                 "(CompressedImage, quality 90) and raw rgb8 (Image); latency from the camera stamp to the "
                 "trajectory's arrival in a third process "
                 f"(`{ROS_COMMAND}`, {bench.get('seconds', 20):g} s per run). Beside each, **the floor**: the same "
                 "harness with an echo node that receives the same image and at once publishes a Path (the "
                 "middleware's and rclpy's own share). Overhead beyond the floor = the median over frames of "
                 "(latency - that frame's runner time) - the floor's median.\n\n")
        text += table(header, [[row.get(k, 0) for k in keys] for row in bench["rows"] if row.get("cameras", 1) == 1])
        text += ("\nWhere the latency goes (medians, from the node's exit diagnostics): *wait*, camera stamp to the "
                 "planning thread taking the frame (publishing, transport, the executor's callback, the hand-off); "
                 "*decode*, the camera message to pixels at the model's size; *assembly*, the other inputs of the "
                 "camera's instant; *messages*, building and publishing the trajectory; *delivery*, trajectory "
                 "published to received (negative where the listener receives it while the node is still in "
                 "`publish`).\n")
    before = (bench or {}).get("before")
    if before is not None:
        after = bench["by_camera"]
        parts = ("decode_resize", "assembly", "messages", "handoff_rest")
        rows = [[name] + [v for pair in ((b["overhead_ms"], after[name]["overhead_ms"]),
                                         *((b["parts_ms"][p], after[name]["parts_ms"][p]) for p in parts),
                                         (b["latency_p50_ms"], after[name]["latency_p50_ms"]),
                                         (b["node_over_runner"], after[name]["node_over_runner"])) for v in pair]
                for name, b in before["by_camera"].items() if name in after]
        command = f"python bench/bench_ros.py --before {before['revision']} --out docs"
        text += (f"\nBefore and after issue 38, in the same run (`{command}`: the node of commit "
                 f"{before['commit']} and this one on every camera, alternating, beside the same floor). Before: "
                 "Pillow's `draft` decoding, the encoder's bilinear step gathering pixel by pixel in float, a "
                 "new Path of new poses per frame; after: libjpeg-turbo through simplejpeg (the same DCT scale, "
                 "the same pixels), the bilinear step on cached taps and whole rows (the same "
                 "bits), the Path filled in place. The overhead beyond the floor and its parts (medians, ms): "
                 "*decode + resize*, *assembly* (the other inputs of the camera's instant), *messages* (building "
                 "and publishing the trajectory), *hand-off and rest* (overhead minus those: the hand-off to the "
                 "planning thread, publishing and delivery beyond the echo node's; medians do not add up "
                 "exactly, so it can be negative):\n\n")
        text += table(["camera", "overhead before", "after", "decode + resize before", "after", "assembly before",
                       "after", "messages before", "after", "hand-off and rest before", "after",
                       "latency p50 before", "after", "node / runner before", "after"], rows)
        loads = [r["load_average_1min"] for r in bench["rows"] + before["rows"] if "load_average_1min" in r]
        if loads:
            text += (f"\nThe machine's 1-minute load average at the end of each run: {min(loads):.1f} to "
                     f"{max(loads):.1f} (2 cores).")
        if bench.get("note"):
            text += f" {bench['note']}"
        text += "\n"
    if bench is not None and "by_camera" in bench:
        cameras = bench["by_camera"]
        small = [(n, c["overhead_ms"]) for n, c in cameras.items() if n in ("160x96 jpeg", "640x360 jpeg")]
        ratio = cameras.get("640x360 jpeg", {}).get("node_over_runner")
        floor_640 = cameras.get("640x360 jpeg", {}).get("floor_ms", 0.0)
        decode = cameras.get("1920x1080 jpeg", {}).get("decode_p50_ms")
        text += ("\nGoals: overhead beyond the floor <= 0.5 ms at 160x96 and 640x360 JPEG: "
                 + ", ".join(f"{n} {v:.2f} ms ({'met' if v <= ROS_GOALS['overhead_ms'] else 'not met'})"
                             for n, v in small)
                 + (f"; node / runner <= 1.10 at 640x360 JPEG: {ratio:.2f} "
                    f"({'met' if ratio <= ROS_GOALS['node_over_runner'] else 'not met'}; with no overhead at all, "
                    f"the floor alone makes it {1 + floor_640 / cameras['640x360 jpeg']['runner_p50_ms']:.2f})"
                    if ratio else "")
                 + (f"; decoding a 1920x1080 JPEG <= 3 ms: {decode:.2f} ms "
                    f"({'met' if decode <= ROS_GOALS['decode_1080p_ms'] else 'not met'})" if decode else "") + ".\n")
    text += several_cameras((bench or {}).get("several_cameras"))
    debug = load("bench_debug.json")
    if debug is None:
        text += "\n" + missing("bench_debug.json", "python bench/bench_ros.py --debug --sizes 640x360 --formats jpeg "
                                                   "--out docs")
    else:
        text += ("\nThe debug output (`python bench/bench_ros.py --debug --sizes 640x360 --formats jpeg --out docs`): "
                 "the same run without and with a subscriber to `~/debug/image` and `~/debug/markers`. The node draws "
                 "only while someone subscribes (two subscription counts per frame otherwise) and after the plan is "
                 "published; its CPU per frame shows what drawing, JPEG encoding and the markers cost (goal for the "
                 "drawing: <= 2 ms at 640x360).\n\n")
        text += table(["camera", "latency p50 ms without", "with", "node CPU ms / frame without", "with",
                       "drawing CPU ms / frame", "debug images received"],
                      [[name, *row["latency_p50_ms"], *row["node_cpu_ms_per_frame"], row["drawing_cpu_ms_per_frame"],
                        row["debug_images_received"]] for name, row in debug["by_camera"].items()])
    if overload is None:
        text += "\n" + missing("bench_overload.json", "python bench/bench_ros.py --overload --seconds 60 --out docs")
    else:
        keys = ["rate_hz", "sent", "received", "planned", "dropped_superseded", "unaccounted", "latency_p50_ms",
                "latency_p95_ms", "latency_p99_ms", "runner_p50_ms", "node_over_runner", "wait_p50_ms",
                "node_outside_runner_p50_ms", "delivery_p50_ms", "node_cpu_cores"]
        header = ["camera Hz", "sent", "received", "planned", "superseded", "unaccounted", "p50 ms", "p95 ms",
                  "p99 ms", "runner ms", "node / runner", "wait ms", "around runner ms", "delivery ms",
                  "node CPU cores"]
        text += ("\n### A heavier model, and overload\n\nAn untrained 24-layer VLA of width 384 at full "
                 f"depth (`python bench/bench_ros.py --overload --seconds {overload.get('seconds', 60):g} "
                 "--out docs`), 160x96 JPEG. At 10 Hz the camera is "
                 "slower than the model: node / runner shows the node's fixed overhead against a planning time "
                 "closer to a real VLA's. At 30 and 60 Hz the camera is faster than the model: the newest frame "
                 "wins, latency stays near one planning time, older frames are dropped as superseded and "
                 "counted.\n\n")
        text += table(header + ["RSS MB early", "RSS MB late"],
                      [[row.get(k, 0) for k in keys] + [row["rss_mb_first_third"], row["rss_mb_last_third"]]
                       for row in overload["rows"]])
    return text


def stress(result: dict | None) -> str:
    if result is None:
        return missing("bench_stress.json", "python bench/bench_ros.py --stress --out docs")
    rows = result["passes"]
    keys = ["frames_sent", "frames_planned", "planned_share", "l2_1s_m", "l2_3s_m", "no_prior_share",
            "latency_p50_ms", "max_diff_offline_m"]
    header = ["pass", "frames sent", "planned", "planned share", "L2 1 s m", "L2 3 s m", "no prior share",
              "runner p50 ms", "max diff vs deead_eval m"]
    return ("The demo bag replayed at 1x into `deead_node`, alone and while "
            f"{result['load_processes']} busy-loop processes load every core (`python bench/bench_ros.py --stress "
            "--out docs`); plans scored against the bag's ground truth and compared with `deead_eval`'s on the "
            "same bag. The node plans each frame with the inputs of the camera's instant (README, odometry "
            "timing), so under load a frame is planned exactly as without it, unless it is superseded or its "
            "odometry arrives later than `io.odometry_wait_s` (then it runs without a prior: no prior share).\n\n"
            + table(header, [[name] + [row[k] for k in keys] for name, row in rows.items()])
            + f"\nLoaded / unloaded: L2 at 1 s {result['l2_1s_ratio']:.3f}, at 3 s {result['l2_3s_ratio']:.3f} "
            f"(goal <= 1.05); the {result['common_frames']} frames planned in both passes differ by at most "
            f"{result['max_diff_common_m']:.1e} m.\n")


def soak(result: dict | None) -> str:
    if result is None:
        return missing("soak.json", "python bench/soak.py --minutes 30 --out docs")
    r = result["result"]
    return (f"The demo bag replayed in a loop into `deead_node` for {r['minutes']:g} minutes "
            f"(`python bench/soak.py --minutes 30 --out docs`): RSS {r['rss_mb_after_warmup']} MB after warm-up, "
            f"{r['rss_mb_end']} MB at the end ({r['rss_growth_pct']:+.2f}%); median latency "
            f"{r['latency_p50_first_third_ms']} ms in the first third, {r['latency_p50_last_third_ms']} ms in the "
            f"last; {r['frames_received']} frames received, {r['frames_unaccounted']} unaccounted; drops by reason "
            f"{r.get('drops', {})} (the bag's stamps jump back once per loop). The machine's load average over "
            f"its last 15 minutes: {r.get('load_average_15min', '?')}.\n\n![soak](soak.png)\n")


def nearest_deead(settings: dict, sparsity: float) -> str:
    """The swept deead setting whose layer sparsity is closest to `sparsity` (compute matching)."""
    swept = [name for name in settings if parse_setting_name(name)[0] == "deead"]
    return min(swept, key=lambda name: abs(settings[name]["layer_sparsity"] - sparsity))


def comparison(bench: dict | None, loop: dict | None, report: dict | None) -> str:
    """Point by point against the paper: sparsity, latency, quality, collisions, fixed exit and patience, the scan."""
    text = PAPER + "\n\n"
    if bench is None:
        return text + missing("bench_exit.json", "python bench/bench_exit.py")
    s = bench["settings"]
    rows = []
    recommended = f"{bench.get('recommended_delta_m', 2.0):g}"
    for delta in dict.fromkeys(("2", "0.5", recommended)):
        d, here = s[setting_name("deead", float(delta))], " (recommended here)" if delta == recommended else ""
        paper_sparsity, paper_cut = PAPER_SPARSITY.get(delta), PAPER_LATENCY_CUT.get(delta)
        rows += [[f"layer sparsity, deead at {delta} m{here}", f"{paper_sparsity:.0%}" if paper_sparsity else "-",
                  f"{d['layer_sparsity']:.0%}"],
                 [f"median latency reduction, deead at {delta} m", f"{paper_cut:.0%}" if paper_cut else "-",
                  f"{1 - d['latency_ratio_vs_full']:.0%}"],
                 [f"L2 at 3 s vs full depth, deead at {delta} m", "preserved", f"{d['l2_3s_change_vs_full']:+.1%}"]]
    fixed = matched_fixed_setting(s[DEEAD_2]["mean_exit_layer"])
    rows.append([f"fixed at layer {parse_setting_name(fixed)[1]:g} (deead 2 m's mean depth), L2 at 3 s vs full depth",
                 "similar sparsity, 2x the collisions", f"{s[fixed]['l2_3s_change_vs_full']:+.1%}"])
    same_depth = (report or {}).get("exits", {}).get(str(float(recommended)))
    if same_depth and "l2_3s_fixed_at_mean_exit" in same_depth and report:
        full_l2 = report["l2_3s_full"]
        rows.append([f"deead at {recommended} m vs a fixed exit at its mean depth (layer "
                     f"{same_depth['mean_exit_layer']:.0f}), L2 at 3 s vs full depth ({report['test_frames']} "
                     "frames, docs/model_report.md)", "-",
                     f"{same_depth['l2_3s'] / full_l2 - 1:+.1%} vs "
                     f"{same_depth['l2_3s_fixed_at_mean_exit'] / full_l2 - 1:+.1%}"])
    patience, matched = s["patience"], s[nearest_deead(s, s["patience"]["layer_sparsity"])]
    rows.append([f"patience ({patience['layer_sparsity']:.0%} sparsity) vs deead at matched sparsity "
                 f"({matched['layer_sparsity']:.0%}), L2 at 3 s vs full depth", "-",
                 f"{patience['l2_3s_change_vs_full']:+.1%} vs {matched['l2_3s_change_vs_full']:+.1%}"])
    first = bench.get("first_checkpoint")
    scan_1, scan_first = s.get("scan_from_layer_1_2"), s.get(f"scan_from_layer_{first}_2")
    if scan_1 and scan_first:
        multi = s[DEEAD_2]["latency_p50_ms"]
        rows.append(["latency of a full scan from layer 1 / multi-hop, at 2 m", f"{PAPER_SCAN_RATIOS[0]:.2f}x",
                     f"{scan_1['latency_p50_ms'] / multi:.2f}x (exits at layer {scan_1['mean_exit_layer']:.1f}, "
                     f"L2 {scan_1['l2_3s_change_vs_full']:+.1%})"])
        rows.append([f"latency of a layer-by-layer scan from the first checkpoint (L13 there, L{first} here) / "
                     "multi-hop", f"{PAPER_SCAN_RATIOS[1]:.2f}x", f"{scan_first['latency_p50_ms'] / multi:.2f}x"])
    same_model = loop is not None and loop.get("model_version") == bench.get("model_version")
    if loop and "full" in loop["settings"] and DEEAD_2 in loop["settings"] and same_model:
        full, deead = loop["settings"]["full"], loop["settings"][DEEAD_2]
        size = f"{full['episodes']} closed-loop episodes each"
        if len(loop["seeds"]) < PROTOCOL_SEEDS:
            size += f"; provisional, the protocol wants {PROTOCOL_SEEDS}"
        rows.append([f"collision rate, deead at 2 m vs full depth ({size})",
                     "0.06% vs 0.03%", f"{deead['collision_rate']:.0%} vs {full['collision_rate']:.0%}"])
        if fixed in loop["settings"]:                 # the same fixed exit, at deead 2 m's depth
            rows.append([f"collision rate, fixed at layer {parse_setting_name(fixed)[1]:g} vs deead at 2 m",
                         "2x", f"{loop['settings'][fixed]['collision_rate']:.0%} vs "
                               f"{deead['collision_rate']:.0%}"])
        rows.append(["driving score, deead at 2 m vs full depth (fewer collisions where the car leaves the road "
                     f"first: out of road {deead['out_of_road_rate']:.0%} vs {full['out_of_road_rate']:.0%})", "-",
                     f"{deead['score']:.2f} vs {full['score']:.2f}"])
        chosen_name = setting_name("deead", bench.get("recommended_delta_m", 2.0))
        chosen = loop["settings"].get(chosen_name)
        if chosen is not None and chosen is not deead:
            rows.append([f"collision rate / driving score, deead at {bench['recommended_delta_m']:g} m (recommended "
                         "here) vs full depth", "-", f"{chosen['collision_rate']:.0%} vs {full['collision_rate']:.0%}"
                         f" / {chosen['score']:.2f} vs {full['score']:.2f}"])
            same_depth_name = matched_fixed_setting(s[chosen_name]["mean_exit_layer"])
            fixed_same = loop["settings"].get(same_depth_name)
            if fixed_same is not None:
                layer = parse_setting_name(same_depth_name)[1]
                rows.append([f"collision rate / driving score, fixed at layer {layer:g} (its mean depth) vs deead "
                             f"at {bench['recommended_delta_m']:g} m", "2x the collisions (at 2 m)",
                             f"{fixed_same['collision_rate']:.0%} vs {chosen['collision_rate']:.0%} / "
                             f"{fixed_same['score']:.2f} vs {chosen['score']:.2f}"])
    text += table(["", "DeeAD on ORION (paper)", "here"], rows)
    text += (f"\nHere: {bench.get('model_version', 'the demo model')}, {bench.get('num_layers', '?')} layers, "
             f"{s['full']['frames']} held-out test frames, ONNX Runtime on one CPU thread "
             "(`python bench/bench_exit.py`); the paper's latency is a GPU's, where a check costs a device-to-host "
             "copy of the head's output (4.9 ms of ORION's per-layer overhead before multi-hop, 0.9 ms after).\n")
    if report and "l2_3s_layer8" in report:
        full_l2 = report["l2_3s_full"]
        text += (f"\nThe paper's premise, that the trajectory saturates before the last layer but not at the first "
                 f"ones, measured on this model ({report['test_frames']} test frames, docs/model_report.md): the "
                 f"head after layer 8 is {report['l2_3s_layer8'] / full_l2 - 1:+.0%} in L2 at 3 s against full "
                 f"depth, fixed exit at deead 2 m's mean layer "
                 f"{report['l2_3s_fixed_at_deead2_mean_exit'] / full_l2 - 1:+.1%}, and full depth "
                 f"{1 - report['l2_3s_full_on_routed'] / report['l2_3s_route_prior']:.0%} better than the route "
                 "prior it exits against.\n")
    if loop and not same_model:
        text += (f"\nThe closed loop in docs/closed_loop.json drove another model ({loop.get('model_version')}); "
                 "its collision figures are not compared here until it is re-run on this one "
                 "(docs/closed_loop_progress/README.md).\n")
    return text


CALIBRATE_COMMAND = ("deead_calibrate 'bench/calib_split/calib/ep_*.npz' --unit drive --eps 1.0 --alpha 0.1 "
                     "--confidence 0.9 --split-test 1000 --out docs")
SCALE_OUT_COMMAND = ("mkdir -p runs/bags && for i in 1 2 3 4; do cp -r bags/demo runs/bags/demo_$i; done && "
                     "deead_calibrate 'runs/bags/demo_*' --workers 2 --compare-serial --out runs/scale_out && "
                     "cp runs/scale_out/scale_out.json docs/")


def shared_note(scale: dict) -> str:
    """Why a speed-up falls short of the worker count when the machine was busy with other jobs."""
    busy = scale.get("load_average", 0.0) > scale["cpus"]
    return f" (shared with other jobs: {scale['workers']} workers did not get {scale['workers']} cores)" if busy else ""


def mean_latency(latency: dict) -> str:
    """The mean beside the median: with most frames at full depth the median hides what early exit saves."""
    if "latency_mean_ms" not in latency:
        return ""
    return (f", mean {latency['latency_mean_ms']:.2f} ms vs {latency['full_latency_mean_ms']:.2f} ms "
            f"({latency['latency_mean_ms'] / latency['full_latency_mean_ms']:.2f}x)")


def refused_note(split: dict, min_units: int) -> str:
    """How many splits had a calibration half too small to certify anything (they count as no violation)."""
    refused = split.get("splits_refused_too_small", 0)
    return (f"; {refused} of the {split['splits']} splits had a calibration half of fewer than {min_units} units, "
            "which certifies nothing (delta 0: full depth)" if refused else "")


def frame_unit_note(unit: str, passed: bool) -> str:
    """What the split test says about counting correlated frames as independent."""
    if unit != "frame":
        return ""
    if passed:
        return (" The bound counts frames as independent, which frames of one drive are not: the violation share "
                "stays under d here, but `--unit drive` is the statement to trust.")
    return (" The bound counts frames as independent, which frames of one drive are not, and the split test shows "
            "it is optimistic here: use `--unit drive`.")


def units_text(result: dict) -> str:
    """The units the bound counts and the p-value over them."""
    g, units = result["guarantee"], result["calibration_units"]
    if g["unit"] == "frame":
        return f"{units['count']} frames as units, exact binomial tail"
    bound = "Waudby-Smith-Ramdas betting" if g["unit_bound"] == "betting" else "Hoeffding-Bentkus"
    per = units["frames_per_unit"]
    return (f"{units['count']} {g['unit']}s as units ({per['min']} to {per['max']} frames each, median "
            f"{per['median']:g}), each one's share of bad frames bounded by {bound}")


def split_text(result: dict) -> str:
    """The split test over drives: violations and how often a delta above 0 came out."""
    split, g = result["split_test"], result["guarantee"]
    spread, held = split["chosen_delta_m"], split["held_out_risk"]
    nonzero = split["chosen_nonzero_share"]
    text = (f"\nShown to hold: {split['splits']} random splits of the {split['drives']} drives into "
            f"{split['calibration_drives']} to calibrate on and {split['held_out_drives']} held out; on each, "
            f"calibrate on the first half and measure the risk (the mean of the drives' shares of bad frames) on "
            f"the second. Held-out risk above alpha in **{split['violation_share']:.1%}** of the splits (allowed "
            f"{split['allowed']:.0%}: {'passed' if split['passed'] else 'FAILED'}); held-out risk mean "
            f"{held['mean']:.3f}, 90th percentile {held['p90']:.3f}, max {held['max']:.3f}. A delta above 0 "
            f"(something saved) was chosen in **{nonzero:.1%}** of the splits (target 80%"
            f"{': met' if nonzero >= 0.8 else ': missed'}); chosen delta {spread['min']:g} to {spread['max']:g} m "
            f"(median {spread['median']:g}; counts {spread['counts']}); layers run on the held-out half "
            f"{split['layer_share_on_held_out_mean']:.0%}{refused_note(split, result['ltt']['min_units'])}."
            f"{frame_unit_note(g['unit'], split['passed'])}")
    frames = result.get("split_test_frame_units")
    if frames:
        text += (f" The same splits with the calibration half's frames counted as independent (exact binomial): "
                 f"held-out risk above alpha in {frames['violation_share']:.1%} "
                 f"({'within' if frames['passed'] else 'above'} the allowed {frames['allowed']:.0%}), delta above 0 "
                 f"in {frames['chosen_nonzero_share']:.1%}, chosen delta median {frames['chosen_delta_m']['median']:g} "
                 "m.")
    return text + "\n"


def calibration(result: dict | None, scale: dict | None) -> str:
    """deead_calibrate's choice of delta, its guarantee, the split test, and serial vs Ray."""
    if result is None or "calibration_units" not in result:
        return missing("calibration.json", CALIBRATE_COMMAND)
    g, ltt = result["guarantee"], result["ltt"]
    text = (f"`{CALIBRATE_COMMAND}` (Learn then Test, fixed-sequence testing from strict to loose deltas; "
            f"{units_text(result)}). Loss: L2 at {g['at_s']:g} s between the published plan with early exit "
            f"and {'the ground truth' if g['against'] == 'truth' else 'the full-depth plan'} above {g['eps_m']:g} m; "
            f"target: risk <= {g['alpha']:g} with confidence {g['confidence']:g}, on {result['frames']} frames of "
            f"{result['drives']} drives. Guarantee: {g['statement']}.\n\n")
    if result["delta_m"] is None:
        text += f"Nothing certified: {ltt.get('refused', 'the strictest delta already fails')}.\n"
    else:
        chosen = ltt["rows"][ltt["chosen_index"]]
        text += (f"**exit.delta_m = {result['delta_m']:g} m**: risk {chosen['empirical_risk']:.3f} (mean over "
                 f"drives; {chosen['losses']} bad frames of {chosen['frames']}), upper bound "
                 f"{chosen['upper_bound']:.3f} <= {g['alpha']:g}; {chosen['layer_share']:.0%} of the layers run "
                 f"({1 - chosen['layer_share']:.0%} saved).")
        latency = result.get("latency")
        if latency:
            text += (f" Direct runs on {latency['frames']} frames (ONNX Runtime, one thread, load average "
                     f"{latency.get('load_average', '?')}): median latency {latency['latency_p50_ms']:.2f} ms vs "
                     f"{latency['full_latency_p50_ms']:.2f} ms at full depth ({latency['latency_ratio_vs_full']:.2f}x)"
                     f"{mean_latency(latency)}; the replayed exits differed from the direct runs' on "
                     f"{latency['replay_exit_mismatches']} frames.")
        rows = [[f"{r['delta_m']:g}", r["losses"], f"{r['empirical_risk']:.3f}", f"{r['upper_bound']:.3f}",
                 f"{r['p_value']:.1e}", f"{r['layer_share']:.0%}", r["decision"]] for r in ltt["rows"]]
        text += "\n\n" + table(["delta m", "bad frames", "risk", "bound", "p-value", "layers run", "decision"], rows)
        text += "\n![calibration](calibration.png)\n"
    if result.get("split_test"):
        text += split_text(result)
    if scale is None:
        text += "\n" + missing("scale_out.json", SCALE_OUT_COMMAND)
    else:
        text += (f"\nScale-out (`{SCALE_OUT_COMMAND}`): {scale['bags']} bags, {scale['frames']} frames, "
                 f"recorded serially "
                 f"in {scale['serial_s']:.1f} s and on {scale['workers']} local Ray workers in {scale['ray_s']:.1f} s "
                 f"(ray.init {scale['ray_startup_s']:.1f} s, engines {scale['ray_setup_s']:.1f} s): speed-up "
                 f"{scale['speedup']:.2f}x, {scale['speedup_after_startup']:.2f}x after start-up; results identical: "
                 f"{scale['identical']}. Measured on {scale['cpus']} cores, load average "
                 f"{scale.get('load_average', '?')} over the run{shared_note(scale)}.\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS / "results.md")
    args = parser.parse_args(argv)
    bench, loop, report = load("bench_exit.json"), load(report_name(TRAFFIC_DENSITY)), load("model_report.json")
    dense = load(report_name(DENSE_TRAFFIC_DENSITY))
    earlier = [(label, name, run) for label, name in PROTOCOL1_RUNS if (run := load(name)) is not None]
    machine = f"{platform.machine()} Linux, {platform.python_implementation()} {platform.python_version()}"
    parts = [
        "# Results\n",
        f"Generated by `python bench/results.py` from the JSON files in docs/. Machine: {machine}, "
        f"2 CPU cores (AMD EPYC, shared and noisy), no GPU. Model: the demo VLA in models/demo "
        f"({(bench or {}).get('model_version', 'see docs/model_report.md')}, "
        f"{(bench or {}).get('num_layers', '?')} layers; docs/model_report.md)."
        + previous_model_note((bench or {}).get("model_version")) + "\n",
        "## Headline: planning time in the closed loop\n", headline(loop, bench),
        "## The chain of engines\n", chain(),
        "## Open-loop sweep\n", open_loop(bench),
        "## Closed-loop safety\n", closed_loop(loop, dense, earlier),
        "## End to end over ROS\n",
        ros(load("bench_ros.json"), load("bench_overload.json")),
        "## Under load\n", stress(load("bench_stress.json")),
        "## Long run\n", soak(load("soak.json")),
        "## Calibrated delta\n", calibration(load("calibration.json"), load("scale_out.json")),
        "## Compared with the paper\n", comparison(bench, loop, report),
    ]
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
