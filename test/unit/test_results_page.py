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


def test_the_calibration_section_states_the_guarantee_and_the_split_test_over_drives():
    import numpy as np

    from deead_lab.calibration.risk import calibration_units, guarantee_statement, learn_then_test, split_test
    drive_keys = np.repeat(np.arange(60), 20)
    bad = (drive_keys % 20 == 0) & (np.arange(1200) % 4 == 0)          # a quarter of 3 of the 60 drives at 1 m
    losses = np.stack([np.zeros(1200, bool), bad], axis=1)
    exit_layer = np.tile([28, 20], (1200, 1))
    ltt = learn_then_test(losses, drive_keys, [0.5, 1.0], 0.1, 0.9)
    for j, row in enumerate(ltt["rows"]):
        row["layer_share"] = exit_layer[:, j].mean() / 32
    guarantee = {"eps_m": 1.0, "alpha": 0.1, "confidence": 0.9, "against": "full", "at_s": 3.0, "unit": "drive",
                 "unit_bound": "betting", "statement": guarantee_statement(1.0, 0.1, 0.9, "full", 3.0, "drive")}
    result = {"delta_m": ltt["delta_m"], "guarantee": guarantee, "ltt": ltt, "frames": 1200, "drives": 60,
              "calibration_units": calibration_units(drive_keys, drive_keys, "drive"),
              "split_test": split_test(losses, exit_layer, 32, drive_keys, np.zeros(1200), [0.5, 1.0], 0.1, 0.9,
                                       "drive", 2.0, 100)}
    text = _results_page().calibration(result, None)
    assert "60 drives as units (20 to 20 frames each, median 20), each one's share of bad frames bounded by " \
           "Waudby-Smith-Ramdas betting" in text
    assert "if they and the node's drives are i.i.d. draws from one population" in text
    assert "**exit.delta_m = 1 m**: risk 0.013 (mean over drives; 15 bad frames of 1200)" in text
    assert "100 random splits of the 60 drives into 30 to calibrate on and 30 held out" in text
    split = result["split_test"]
    assert f"chosen in **{split['chosen_nonzero_share']:.1%}** of the splits (target 80%: met)" in text
    assert f"Held-out risk above alpha in **{split['violation_share']:.1%}**" in text
