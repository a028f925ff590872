"""The README's headline figures are the committed JSON's: each figure the README states for the closed-loop
confirmation, for `make demo` and for the open-loop benchmark is formatted here from docs/closed_loop.json's
headline (what bench/closed_loop.py --confirm wrote), docs/demo.json (what `make demo` wrote) and
docs/bench_exit.json (what bench/bench_exit.py wrote) and must appear in the README's paragraph on it."""
import json

import pytest

from deead_lab.closed_loop import PROTOCOL_SEEDS
from test.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def paragraph(start: str) -> str:
    """The README's bullet that starts with `start`, up to the next bullet."""
    begin = README.index(start)
    end = README.find("\n- ", begin)
    return " ".join(README[begin:end].split())


@pytest.fixture(scope="module")
def demo() -> dict:
    return json.loads((REPO_ROOT / "docs" / "demo.json").read_text())


def demo_figures(demo: dict) -> list[str]:
    full, early, summary = demo["passes"]["full"], demo["passes"]["deead"], demo["summary"]
    return [f"{demo['frames_in_bag']} frames",
            f"full depth p50 {full['latency_p50_ms']:.1f} ms per frame",
            f"L2 at 3 s to the expert {full['l2_3s_m']:.2f} m",
            f"delta {demo['delta_m']:g} m",
            f"mean exit layer {early['mean_exit_layer']:.1f} of {early['num_layers']}",
            f"({early['layer_sparsity']:.0%} layer sparsity)",
            f"median latency {summary['latency_ratio_vs_full']:.2f}x full depth",
            f"L2 {early['l2_3s_m']:.2f} m (+{early['l2_3s_m'] / full['l2_3s_m'] - 1:.0%}",
            f"{early['early_exits']} of {early['frames_planned']} frames exit early",
            f"{full['frames_planned']} + {early['frames_planned']} frames planned",
            f"{demo['node_drop_counters']['rejected_odometry_reset']} resets"]


def test_the_readme_states_the_demo_figures_of_docs_demo_json(demo):
    text = paragraph("- `make demo` (")
    missing = [figure for figure in demo_figures(demo) if figure not in text]
    assert not missing, (f"the README's `make demo` figures differ from docs/demo.json: {missing} not in:\n{text}\n"
                         "re-run `make demo` and copy its figures, or restore the JSON they came from")


def test_the_summary_line_is_the_early_exit_pass(demo):
    early, summary = demo["passes"]["deead"], demo["summary"]
    assert summary["frames_planned"] == early["frames_planned"]
    assert summary["mean_exit_layer"] == pytest.approx(early["mean_exit_layer"], abs=1e-3)
    ratio = early["latency_p50_ms"] / demo["passes"]["full"]["latency_p50_ms"]
    assert summary["latency_ratio_vs_full"] == pytest.approx(ratio, abs=1e-3)


def test_the_readme_states_the_open_loop_figures_of_docs_bench_exit_json():
    bench = json.loads((REPO_ROOT / "docs" / "bench_exit.json").read_text())
    s, head = bench["settings"], bench["headline"]
    delta = f"{bench['recommended_delta_m']:g}"
    deead, paper, oracle = s[f"deead_{delta}"], s["deead_2"], s[f"oracle_{delta}"]
    figures = [f"{s['full']['frames']} frames",
               f"full depth p50 {s['full']['latency_p50_ms']:.1f} ms",
               f"deead at {delta} m exits at layer {deead['mean_exit_layer']:.1f} on average",
               f"({deead['layer_sparsity']:.0%} sparsity)",
               f"median latency {deead['latency_ratio_vs_full']:.2f}x full depth",
               f"L2 at 3 s {deead['l2_3s_change_vs_full']:+.1%}",
               f"p95 latency {head['latency_p95_ratio_recommended']:.2f}x full depth's",
               f"layer {paper['mean_exit_layer']:.1f}, {head['latency_ratio_delta2']:.2f}x",
               f"{head['l2_3s_change_delta2']:+.0%}",
               f"fixed exit at layer 13 {s['fixed_13']['l2_3s_change_vs_full']:+.0%}",
               f"patience {s['patience']['l2_3s_change_vs_full']:+.0%}",
               f"at {delta} m: layer {oracle['mean_exit_layer']:.1f}",
               f"finds {head['layers_over_oracle']:.0%} of the oracle's"]
    text = paragraph("- Open loop on the committed test split")
    missing = [figure for figure in figures if figure not in text]
    assert not missing, (f"the README's open-loop figures differ from docs/bench_exit.json: {missing} not in:\n{text}\n"
                         "re-run bench/bench_exit.py and copy its figures")


ENDPOINT_NAMES = {"collisions": "collisions", "at_fault": "at-fault collisions", "completion": "completion",
                  "score": "score"}


def verdict_sentence(head: dict) -> str:
    """The README's sentence on the four driving verdicts and the matched fixed exit, as the headline has them."""
    verdicts = ", ".join(f"{ENDPOINT_NAMES[metric]} {verdict}" for metric, verdict in head["verdicts"].items())
    return (f"Driving against full depth at {head['seeds']} seeds: {verdicts}; `{head['matched_fixed_setting']}` "
            f"worse on the score: {'yes' if head['matched_fixed_worse'] else 'not shown'}.")


def test_the_readme_states_the_closed_loop_headline_of_docs_closed_loop_json():
    head = json.loads((REPO_ROOT / "docs" / "closed_loop.json").read_text())["headline"]
    layers = json.loads((REPO_ROOT / "docs" / "bench_exit.json").read_text())["num_layers"]
    mean, p95, seeds = head["plan_ms_mean_ratio"], head["plan_ms_p95_ratio"], head["seeds"]
    figures = [f"mean planning time {mean:.2f}x full depth",
               f"(target <= 0.70: {'met' if mean <= 0.70 else 'missed'}",
               f"p95 {p95:.2f}x (target <= 1.00: {'met' if p95 <= 1.0 else 'missed'}",
               f"mean exit layer {head['mean_exit_layer']:.1f} of {layers}",
               f"`{head['setting']}`", verdict_sentence(head)]
    figures.append(f"provisional at {seeds} of {PROTOCOL_SEEDS} seeds" if seeds < PROTOCOL_SEEDS else f"{seeds} seeds")
    text = paragraph("- **Closed loop, planning time (the headline).**")
    missing = [figure for figure in figures if figure not in text]
    assert not missing, (f"the README's closed-loop headline differs from docs/closed_loop.json: {missing} not in:\n"
                         f"{text}\nrun `bench/closed_loop.py --confirm --report-only` and copy its figures")
