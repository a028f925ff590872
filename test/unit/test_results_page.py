"""bench/results.py: the closed-loop verdicts it writes in words follow the report's paired tests."""
from __future__ import annotations

import importlib.util

from deead_ros.tools.closed_loop import FULL, summarise
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
