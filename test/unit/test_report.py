"""deead_report: the depth figures and their targets, and the report end to end on a real simulator episode."""
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from deead_ros.exit.metrics import l2_at_m
from deead_ros.model.encoding import InputSpec
from deead_lab.model.vla import DeeadVLA, VLAConfig
from deead_lab.model.weights import save_pretrained
from deead_lab.report import SHALLOW_LAYER, depth_matters, main

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metadrive_episode.npz"
DT_S, STEPS = 0.5, 6


def straight(n: int, speed: float) -> np.ndarray:
    """(n, T, 2) trajectories along x at `speed` m/s."""
    x = speed * DT_S * np.arange(1, STEPS + 1)
    return np.repeat(np.stack([x, np.zeros(STEPS)], -1)[None], n, 0)


def test_depth_matters_reads_the_layers_and_judges_each_target():
    n, layers = 10, 32
    truth = straight(n, 10.2)
    per_layer = np.stack([straight(n, 10.0 - 3.0 * (layers - i) / layers) for i in range(1, layers + 1)], 1)
    l2 = [float(np.mean([l2_at_m(p, g, DT_S, 3) for p, g in zip(per_layer[:, i], truth)])) for i in range(layers)]
    table = {"model (full depth)": {"l2_3s": l2[-1]}, "route prior": {"l2_3s": 2.0},
             "model on frames with a route": {"l2_3s": l2[-1]}}
    exits = {2.0: {"mean_exit_layer": 20.4, "l2_3s": l2[19]}, 1.0: {"mean_exit_layer": 30.0, "l2_3s": l2[-1]}}
    got = depth_matters(per_layer, truth, DT_S, exits, 1.0, table)
    assert got["l2_3s_layer8"] == l2[SHALLOW_LAYER - 1] and got["fixed_exit_layer"] == 20
    assert got["l2_3s_fixed_at_deead2_mean_exit"] == l2[19]
    assert got["layer_share_deead_recommended"] == 30.0 / 32
    met = got["depth_targets_met"]
    assert met["layer 8 >= 25% worse than the final layer"]                 # 0.2 m/s off at the last layer
    assert met["deead at the recommended delta within +2% of full depth"]
    assert not met["deead at the recommended delta runs <= 70% of the layers"]   # 94% of them
    assert met["full depth beats the route prior by >= 20% (frames with a route)"]


def test_report_on_a_simulator_episode_writes_the_figures_and_the_page(tmp_path):
    torch.manual_seed(0)
    weights = save_pretrained(DeeadVLA(VLAConfig(n_layer=6)), InputSpec(), tmp_path / "weights").parent
    (tmp_path / "data" / "test").mkdir(parents=True)
    shutil.copy(FIXTURE, tmp_path / "data" / "test" / "ep_00001.npz")
    assert main(["--weights", str(weights), "--ablation-weights", str(weights), "--data", str(tmp_path / "data"),
                 "--first-checkpoint", "2", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "model_report.json").read_text())
    assert report["num_layers"] == 6 and report["test_frames"] > 0 and report["first_checkpoint"] == 2
    for key in ("l2_3s_layer8", "l2_3s_final", "l2_3s_fixed_at_deead2_mean_exit", "l2_3s_full",
                "l2_3s_deead_recommended", "layer_share_deead_recommended", "l2_3s_route_prior"):
        assert np.isfinite(report[key]), key
    assert set(report["per_layer"]) == {"early-exit loss (shipped)", "final layer only"}
    page = (tmp_path / "out" / "model_report.md").read_text()
    assert "Does the model need its depth?" in page and f"--data {tmp_path / 'data'}" in page
    assert (tmp_path / "out" / "per_layer.png").stat().st_size > 0


def test_report_on_the_validation_split_names_the_largest_delta_within_two_percent(tmp_path):
    torch.manual_seed(0)
    weights = save_pretrained(DeeadVLA(VLAConfig(n_layer=6)), InputSpec(), tmp_path / "weights").parent
    (tmp_path / "data" / "val").mkdir(parents=True)
    shutil.copy(FIXTURE, tmp_path / "data" / "val" / "ep_00001.npz")
    assert main(["--weights", str(weights), "--data", str(tmp_path / "data"), "--split", "val",
                 "--first-checkpoint", "2", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "model_report.json").read_text())
    assert report["split"] == "val"
    change = {float(d): e["l2_3s"] / report["l2_3s_full"] - 1 for d, e in report["exits"].items()}
    assert len(change) >= 6, "a sweep fine enough to choose from"
    chosen = report["largest_delta_within_2pct_m"]
    assert all(c > 0.02 for d, c in change.items() if chosen is None or d > chosen)
    assert chosen is None or change[chosen] <= 0.02
    assert all(np.isfinite(e["l2_3s_fixed_at_mean_exit"]) for e in report["exits"].values())
    assert "`val` split" in (tmp_path / "out" / "model_report.md").read_text()


def test_report_says_what_to_do_without_test_episodes(tmp_path, capsys):
    torch.manual_seed(0)
    weights = save_pretrained(DeeadVLA(VLAConfig(n_layer=2)), InputSpec(), tmp_path / "weights").parent
    assert main(["--weights", str(weights), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert "no episodes under" in capsys.readouterr().out
