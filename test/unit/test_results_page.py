"""bench/results.py: the closed-loop verdicts it writes in words follow the report's paired tests."""
from __future__ import annotations

import importlib.util

from deead_lab.closed_loop import FULL, summarise
from test.conftest import REPO_ROOT, episode


def _results_page():
    spec = importlib.util.spec_from_file_location("results_page", REPO_ROOT / "bench" / "results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdicts_name_the_safe_settings_and_say_whether_the_fixed_exit_is_worse():
    records = []
    for seed in range(60):
        records += [episode(seed, FULL, crash=seed < 6),
                    episode(seed, "deead_0.5", crash=seed < 6),                           # as full depth
                    episode(seed, "fixed_13", crash=seed < 20),                            # 14 more crashes
                    episode(seed, "deead_2", arrived=False, completion=0.4)]               # never crashes, stops short
    comparisons = summarise(records, [FULL, "deead_0.5", "fixed_13", "deead_2"])["comparisons"]
    text = _results_page().closed_loop_verdicts(comparisons)
    assert ("on collisions (the primary endpoint): `deead_0.5`, `deead_2`; inconclusive: none; "
            "inferior: `fixed_13`") in text
    assert "on all four metrics" in text and "completion, driving score): `deead_0.5` (" in text
    assert ("The fixed exit `fixed_13` is worse than full depth (it collides more and its driving score is lower): "
            "collisions +0.233 (McNemar p=0.000)") in text


def test_no_verdicts_are_written_under_30_seeds():
    records = [r for seed in range(10) for r in (episode(seed, FULL), episode(seed, "fixed_13", crash=True))]
    text = _results_page().closed_loop_verdicts(summarise(records, [FULL, "fixed_13"])["comparisons"])
    assert text.strip() == "No verdicts yet: the protocol gives none under 30 paired seeds."


def test_the_dense_split_is_reported_apart_with_its_own_figure_and_seed_target():
    def report(density: float, seeds: int) -> dict:
        records = [r for seed in range(seeds) for r in (episode(seed, FULL), episode(seed, "deead_0.25"))]
        return {**summarise(records, [FULL, "deead_0.25"]), "protocol": 2, "seeds_from": 3000, "density": density}

    text = _results_page().closed_loop(report(0.1, 40), report(0.2, 12), [])
    main, dense = text.split("### Denser traffic (density 0.2), a secondary split")
    assert "![closed loop](closed_loop.png)" in main and "short of the protocol's 200" in main
    assert "![closed loop](closed_loop_density_0.2.png)" in dense
    assert "**12 paired seeds, short of the protocol's 30**" in dense
    assert "`.venv-metadrive/bin/python bench/closed_loop.py --density 0.2`" in dense
