"""deead_eval over a bag: the same runner as the node, without the middleware."""
import csv
import json

from deead_ros.tools.eval import main


def test_eval_writes_table_csv_json_and_plot(small_model, fixture_bag, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main([str(fixture_bag), "--model", str(small_model), "--delta", "0", "50", "--first-checkpoint", "2",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"full", "delta_0", "delta_50"}
    assert summary["full"]["frames"] == 40 and summary["full"]["mean_exit_layer"] == 6
    assert summary["delta_0"]["mean_exit_layer"] == 6, "delta 0 never exits early"
    assert summary["full"]["l2_3s_m"] > 0 and (out / "eval.png").stat().st_size > 10_000
    rows = (out / "frames.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 40
    # A 50 m delta exits at the first checkpoint, unless validation refused that plan (the small model has random
    # weights: some of its plans are implausible); then it exits deeper. Every row says which.
    table = list(csv.DictReader(rows))
    wide = [r for r in table if r["setting"] == "delta_50"]
    assert all((r["exit_layer"] == "2") == (r["refused_exits"] == "0") for r in wide), wide
    assert all(r["valid"] == "True" or r["fallback"] in ("carry_forward", "stop") for r in table)
    assert summary["delta_50"]["refused_exits_per_frame"] == sum(int(r["refused_exits"]) for r in wide) / 40
    assert 0.0 <= summary["full"]["fallback_share"] <= 1.0
    assert "vs full" in capsys.readouterr().out
