"""deead_calibrate: the Learn-then-Test statistics, the replay of exits, and the files it writes."""
import json
import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import yaml

from deead_ros.exit import ExitSettings
from deead_ros.parameters import SPECS
from deead_lab.calibrate import RecordJob, main
from deead_lab.calibration.replay import check_bag_topics, drives_from_stamps, replay_frame
from deead_lab.calibration.risk import (CalibrationError, betting_min_units, fixed_sequence, learn_then_test,
                                        min_units, split_test, units_of)
from deead_lab.stats import (betting_p_value, betting_upper, binomial_cdf, binomial_p_value, clopper_pearson_upper,
                             hoeffding_bentkus_p_value)

# ---------------------------------------------------------------------------------------------------------------
# statistics


def exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    """P(Bin(n, p) <= k) in exact rational arithmetic: the same sum, computed another way."""
    return sum((math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1)), Fraction(0))


@pytest.mark.parametrize("k, n, p", [(0, 22, "1/10"), (3, 50, "1/10"), (10, 200, "1/20"), (49, 50, "9/10"),
                                     (7, 30, "1/3"), (0, 1, "1/2"), (60, 400, "1/10")])
def test_binomial_tail_matches_exact_rational_sum(k, n, p):
    expected = float(exact_cdf(k, n, Fraction(p)))
    assert binomial_cdf(k, n, float(Fraction(p))) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert binomial_p_value(k, n, float(Fraction(p))) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_binomial_tail_edges():
    assert binomial_cdf(-1, 10, 0.1) == 0.0 and binomial_cdf(10, 10, 0.1) == 1.0
    assert binomial_cdf(0, 10, 0.0) == 1.0 and binomial_cdf(3, 10, 1.0) == 0.0
    assert binomial_cdf(0, 5000, 0.1) == pytest.approx(0.9 ** 5000, rel=1e-9)    # no underflow to a wrong 0


@pytest.mark.parametrize("k, n", [(0, 30), (2, 40), (10, 100), (0, 747)])
def test_clopper_pearson_bound_is_where_the_p_value_crosses_d(k, n):
    d = 0.1
    upper = clopper_pearson_upper(k, n, 1 - d)
    assert binomial_cdf(k, n, upper) == pytest.approx(d, rel=1e-6)
    assert binomial_p_value(k, n, upper * 1.001) <= d < binomial_p_value(k, n, upper * 0.999)
    assert clopper_pearson_upper(n, n, 0.9) == 1.0
    if k == 0:
        assert upper == pytest.approx(1 - d ** (1 / n), rel=1e-9)            # (1 - u)^n = d


def test_hoeffding_bentkus_is_no_sharper_than_the_exact_binomial():
    for k, n in ((0, 30), (2, 40), (10, 100)):
        assert hoeffding_bentkus_p_value(k / n, n, 0.1) >= binomial_p_value(k, n, 0.1) * 0.999
    assert hoeffding_bentkus_p_value(0.5, 40, 0.1) == 1.0                      # risk far above alpha: no evidence


def test_block_units_bound_a_loss_share_below_one():
    # found on the demo bag with --unit block: the bisection reaches alpha = 1, where KL(m || 1) is infinite
    losses = np.zeros((80, 1), bool)
    losses[[0, 2, 4]] = True                                                 # 3 of 40 two-frame blocks lose half
    result = learn_then_test(losses, np.repeat(np.arange(40), 2), [1.0], alpha=0.2, confidence=0.9)
    assert 1.5 / 40 < result["rows"][0]["upper_bound"] < 1.0
    assert hoeffding_bentkus_p_value(3 / 40, 40, 1.0) == 0.0                 # no risk level above 1: certified


def test_fixed_sequence_stops_at_the_first_non_rejection():
    assert fixed_sequence([0.01, 0.02, 0.5, 0.01, 0.0], 0.1) == 2           # the later small p-values are not used
    assert fixed_sequence([0.2, 0.0], 0.1) == 0
    assert fixed_sequence([0.1, 0.1], 0.1) == 2                             # p <= d rejects
    assert fixed_sequence([0.01, float("nan"), 0.01], 0.1) == 1
    assert fixed_sequence([], 0.1) == 0


def test_ltt_picks_the_last_delta_before_the_first_failure_even_when_risk_is_not_monotone():
    n = 200
    rng = np.random.default_rng(0)
    # deltas 0.5, 1, 2, 3: risks ~0, ~0.02, ~0.3 (a bump), ~0.01 -- a loose delta that would pass is never reached
    losses = np.stack([np.zeros(n), rng.random(n) < 0.02, rng.random(n) < 0.3, rng.random(n) < 0.01], axis=1)
    result = learn_then_test(losses, np.arange(n), [0.5, 1.0, 2.0, 3.0], alpha=0.1, confidence=0.9)
    assert result["delta_m"] == 1.0 and result["certified"] == 2
    assert [r["decision"] for r in result["rows"]] == ["certified", "certified", "not certified",
                                                       "not tested (the sequence stopped)"]
    assert result["rows"][3]["p_value"] <= 0.1, "the loosest delta alone would pass: fixed-sequence still stops"
    assert not result["risk_monotone_in_delta"]
    for row in result["rows"]:
        assert row["p_value"] == binomial_p_value(row["losses"], n, 0.1)
        assert (row["p_value"] <= 0.1) == (row["upper_bound"] <= 0.1 + 1e-12)


def test_refuses_when_even_zero_losses_cannot_certify_alpha():
    assert min_units(0.1, 0.9) == 22                                         # 0.9^21 = 0.109 > 0.1 >= 0.9^22
    assert 0.9 ** 21 > 0.1 >= 0.9 ** 22
    with pytest.raises(CalibrationError, match=r"21 frames .* needs at least 22 frames"):
        learn_then_test(np.zeros((21, 1), bool), np.arange(21), [1.0], 0.1, 0.9)
    assert learn_then_test(np.zeros((22, 1), bool), np.arange(22), [1.0], 0.1, 0.9)["delta_m"] == 1.0
    # Drives as units: 3 drives of 100 frames are 3 units, whatever the frame count.
    with pytest.raises(CalibrationError, match=r"3 units .* needs at least 22"):
        learn_then_test(np.zeros((300, 1), bool), np.repeat(np.arange(3), 100), [1.0], 0.1, 0.9,
                        unit_bound="hoeffding_bentkus")


def test_units_split_drives_into_blocks_and_never_across_drives():
    stamps = np.concatenate([np.arange(0, 10, 0.1), 20 + np.arange(0, 3, 0.1)])
    drives = drives_from_stamps(stamps, 0.5)
    assert drives.tolist() == [0] * 100 + [1] * 30
    blocks = units_of(drives, stamps, "block", 4.0)
    assert len(np.unique(blocks)) == 3 + 1 and blocks[99] != blocks[100]
    assert len(np.unique(units_of(drives, stamps, "drive", 4.0))) == 2
    assert units_of(drives, stamps, "frame", 4.0).tolist() == list(range(130))
    assert drives_from_stamps(np.array([0.0, 0.1, 0.05, 0.15]), 0.5).tolist() == [0, 0, 1, 1]   # stamps went back


# ---------------------------------------------------------------------------------------------------------------
# drives as units: the betting p-value, the per-drive risk, and the split test over drives


def test_betting_p_value_is_valid_when_the_risk_is_at_alpha():
    # 2000 calibration sets of 40 drives whose shares of bad frames have mean exactly alpha: P(p <= d) <= d
    rng = np.random.default_rng(1)
    shares = rng.choice([0.0, 0.5, 1.0], size=(2000, 40), p=[0.88, 0.04, 0.08])     # mean 0.02 + 0.08 = 0.1
    p_values = np.array([betting_p_value(row.tolist(), 0.1, 0.9) for row in shares])
    assert (p_values <= 0.1).mean() <= 0.1
    assert (p_values <= 0.1).mean() > 0.0, "a test that never rejects would pass trivially"


def test_betting_is_never_sharper_than_the_exact_binomial_on_no_losses():
    # all-zero losses happen with probability (1 - alpha)^n under the null: no valid p-value can be smaller
    for n in (25, 40, 80):
        assert betting_p_value([0.0] * n, 0.1, 0.9) >= 0.9 ** n
    assert betting_min_units(0.1, 0.9) == 25 >= min_units(0.1, 0.9) == 22
    assert betting_p_value([0.0] * 24, 0.1, 0.9) > 0.1 >= betting_p_value([0.0] * 25, 0.1, 0.9)
    assert betting_p_value([1.0] * 40, 0.1, 0.9) == 1.0                         # every drive bad: no evidence


def test_betting_upper_bound_is_where_the_p_value_crosses_d_and_beats_hoeffding_bentkus():
    shares = [0.2] * 6 + [0.0] * 34                                              # mean 0.03 over 40 drives
    upper = betting_upper(shares, 0.9)
    assert betting_p_value(shares, upper * 1.001, 0.9) <= 0.1 < betting_p_value(shares, upper * 0.999, 0.9)
    assert 0.03 < upper < 0.1
    assert hoeffding_bentkus_p_value(0.03, 40, 0.1) > 0.1 >= betting_p_value(shares, 0.1, 0.9)


def test_drive_units_bound_the_mean_of_the_drives_shares_not_the_frame_share():
    # 30 drives: one long drive of 100 frames all bad, 29 short ones of 10 frames with no loss
    drives = np.concatenate([np.zeros(100, int), np.repeat(np.arange(1, 30), 10)])
    losses = (drives == 0)[:, None]
    row = learn_then_test(losses, drives, [1.0], alpha=0.2, confidence=0.9)["rows"][0]
    assert row["n"] == 30 and row["frames"] == 390 and row["losses"] == 100
    assert row["empirical_risk"] == pytest.approx(1 / 30) and row["frame_risk"] == pytest.approx(100 / 390)
    assert row["p_value"] == betting_p_value([1.0] + [0.0] * 29, 0.2, 0.9)     # in the order of the drive ids


def synthetic_drives(n_drives: int = 80, frames: int = 50, bad_drives: int = 10):
    """Per-frame 0/1 losses at deltas (0.5, 1, 2): none; whole drives bad at 1 (correlated); every frame at 2."""
    drive_keys = np.repeat(np.arange(n_drives), frames)
    stamps = np.tile(np.arange(frames) * 0.1, n_drives)
    at_1 = np.isin(drive_keys, np.arange(0, n_drives, n_drives // bad_drives)[:bad_drives])
    losses = np.stack([np.zeros(len(drive_keys), bool), at_1, np.ones(len(drive_keys), bool)], axis=1)
    exit_layer = np.tile([30, 20, 10], (len(drive_keys), 1))
    return losses, exit_layer, drive_keys, stamps


def test_split_test_splits_whole_drives_and_holds_with_drive_units_where_frame_units_fail():
    losses, exit_layer, drive_keys, stamps = synthetic_drives()        # 10 of 80 drives bad at delta 1: risk 0.125
    def run(unit: str) -> dict:
        return split_test(losses, exit_layer, 32, drive_keys, stamps, [0.5, 1.0, 2.0], 0.1, 0.9, unit, 2.0, 200, 3)

    drive = run("drive")
    assert (drive["drives"], drive["calibration_drives"], drive["held_out_drives"]) == (80, 40, 40)
    assert drive["violation_share"] <= 0.1 and drive["passed"]
    assert drive["chosen_nonzero_share"] == 1.0, "40 drives without a loss at 0.5 m certify it on every split"
    counts = drive["chosen_delta_m"]["counts"]
    assert set(counts) <= {"0.5", "1"} and drive["violation_share"] == counts.get("1", 0) / 200  # 1 m: a lucky half
    assert drive["layer_share_on_held_out_mean"] == pytest.approx((30 * counts["0.5"] + 20 * counts.get("1", 0))
                                                                  / (32 * 200))
    assert drive["splits_refused_too_small"] == 0
    # counting the 2000 correlated frames of 40 drives as independent certifies 1 m on lucky halves, whose
    # held-out half then holds more of the bad drives: the risk exceeds alpha far more often than d
    frame = run("frame")
    assert frame["violation_share"] > 0.1 and not frame["passed"]
    chosen_1 = frame["chosen_delta_m"]["counts"]["1"]
    assert frame["violation_share"] == pytest.approx(chosen_1 / 200)
    assert frame["held_out_risk"]["max"] > 0.1


def test_split_test_counts_halves_too_small_to_certify_as_full_depth():
    losses, exit_layer, drive_keys, stamps = synthetic_drives(n_drives=40, bad_drives=4)    # halves of 20 < 25
    result = split_test(losses, exit_layer, 32, drive_keys, stamps, [0.5, 1.0, 2.0], 0.1, 0.9, "drive", 2.0, 100)
    assert result["splits_refused_too_small"] == 100 and result["chosen_nonzero_share"] == 0.0
    assert result["violation_share"] == 0.0 and result["held_out_risk"]["max"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# the CLI: bad settings are refused before any work


@pytest.mark.parametrize("flags, message", [
    (["--alpha", "0"], "--alpha 0.0"), (["--alpha", "1.5"], "--alpha 1.5"), (["--eps", "-1"], "--eps -1.0"),
    (["--eps", "nan"], "--eps nan"), (["--confidence", "1"], "--confidence 1.0"),
    (["--deltas", "2", "1"], "strictly increasing"), (["--deltas", "-1"], "exit.delta_m's range"),
    (["--split-test", "10"], "at least 100"),
])
def test_bad_settings_are_refused_before_any_work(flags, message, tmp_path, capsys):
    assert main([str(tmp_path / "no_such_bag"), *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "no_such_bag" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_bag_that_is_missing_or_lacks_topics_is_named(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore
    with pytest.raises(CalibrationError, match="no_such_bag: no such bag"):
        check_bag_topics(tmp_path / "no_such_bag", False)
    (tmp_path / "not_a_bag").mkdir()
    with pytest.raises(CalibrationError, match="not_a_bag: cannot be read as a rosbag2"):
        check_bag_topics(tmp_path / "not_a_bag", False)
    typestore = get_typestore(Stores.ROS2_JAZZY)
    with Writer(tmp_path / "commands_only", version=9) as writer:
        conn = writer.add_connection("/planning/command", "std_msgs/msg/String", typestore=typestore)
        writer.write(conn, 1, typestore.serialize_cdr(typestore.types["std_msgs/msg/String"](data="go"),
                                                      conn.msgtype))
    with pytest.raises(CalibrationError, match=r"commands_only: missing a camera .*/localization/odometry"):
        check_bag_topics(tmp_path / "commands_only", False)


# ---------------------------------------------------------------------------------------------------------------
# replay vs direct runs, and the files


@pytest.fixture(scope="module")
def recorded(small_model, fixture_bag):
    job = RecordJob(str(small_model), exit_settings=ExitSettings(first_checkpoint=2))
    runner = job.setup()
    return job, runner, job.run(runner, fixture_bag)


@pytest.mark.parametrize("delta_m", [0.0, 0.5, 2.0, 8.0, 50.0])
def test_replayed_exits_equal_direct_runner_runs(recorded, fixture_bag, delta_m):
    from deead_ros.frame_assembly import model_image_hw
    from deead_lab.eval import bag_frames
    job, runner, records = recorded
    policy = replace(job.exit_settings, delta_m=delta_m).build_policy()
    frames = list(bag_frames(fixture_bag, runner.encoder.accel_window_s, model_image_hw(runner.encoder)))
    assert len(frames) == len(records) == 40
    exits, refused = [], 0
    for i, frame in enumerate(frames):
        direct = runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known, policy=policy,
                             external_ego_m=frame.external_ego_m, ground_truth_m=frame.truth_m)
        layer, published = replay_frame(records, i, policy, runner.validation_limits)
        assert layer == direct.trace.exit_layer, f"frame {i}: replay exits at {layer}, the runner at " \
                                                 f"{direct.trace.exit_layer}"
        np.testing.assert_array_equal(published, direct.trajectory_m, err_msg=f"frame {i}")
        exits.append(layer)
        refused += direct.trace.refused_exits
    if delta_m == 0.0:
        assert set(exits) == {6}, "delta 0 never exits early"
    if delta_m == 50.0:
        assert min(exits) == 2, "a 50 m delta exits at the first checkpoint where validation allows"
        assert refused > 0, "the random small model has implausible plans: the replay must refuse those exits too"


def test_cli_writes_a_loadable_params_file_json_and_plot(small_model, fixture_bag, tmp_path, capsys):
    out = tmp_path / "cal"
    assert main([str(fixture_bag), str(tmp_path / "missing_bag"), "--model", str(small_model),
                 "--first-checkpoint", "2", "--unit", "frame", "--eps", "100", "--alpha", "0.1", "--confidence", "0.9",
                 "--deltas", "0.5", "1", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "bag not used: " in captured.err and "missing_bag: no such bag" in captured.err
    params = yaml.safe_load((out / "calibration.param.yaml").read_text())
    exit_params = params["/**"]["ros__parameters"]["exit"]
    assert exit_params["delta_m"] == 2.0 and exit_params["first_checkpoint"] == 2
    for key, value in exit_params.items():
        spec = SPECS[f"exit.{key}"]
        if spec.range and not isinstance(value, list):
            assert spec.range[0] <= value <= spec.range[1], (key, value, spec.range)
    rclpy_parameter = pytest.importorskip("rclpy.parameter")          # the parser --params-file uses
    loaded = rclpy_parameter.parameter_dict_from_yaml_file(str(out / "calibration.param.yaml"), use_wildcard=True)
    assert {"exit.delta_m", "exit.first_checkpoint", "exit.stride_table"} <= set(loaded)
    result = json.loads((out / "calibration.json").read_text())
    assert result["frames"] == 40 and result["delta_m"] == 2.0
    assert result["scale_out"]["failed"][0]["bag"].endswith("missing_bag")
    row = result["ltt"]["rows"][-1]
    assert {"n", "losses", "empirical_risk", "upper_bound", "p_value", "decision", "layer_share"} <= set(row)
    assert row["upper_bound"] == pytest.approx(1 - 0.1 ** (1 / 40))         # zero losses in 40 frames
    assert (out / "calibration.png").stat().st_size > 10_000


def test_cli_refuses_with_the_reason_when_too_few_frames(small_model, fixture_bag, tmp_path, capsys):
    out = tmp_path / "cal"
    assert main([str(fixture_bag), "--model", str(small_model), "--first-checkpoint", "2", "--max-frames", "15",
                 "--unit", "frame", "--eps", "100", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "refused: 15 frames cannot certify risk <= 0.1 at confidence 0.9" in err and "at least 22" in err
    assert not (out / "calibration.param.yaml").exists() and (out / "calibration.json").exists()


def test_cli_takes_collected_episodes_as_drives_and_runs_the_split_test(small_model, tmp_path, capsys):
    from deead_lab.dataset_format import episode_path, load_episode, save_episode
    from test.conftest import REPO_ROOT
    episode = load_episode(REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz")
    paths = [episode_path(tmp_path / "data", "calib", seed) for seed in range(14)]
    for seed, path in enumerate(paths):
        save_episode(path, dict(episode, map_seed=seed, timestamp=episode["timestamp"] + 100.0 * seed))
    out = tmp_path / "cal"
    assert main([str(tmp_path / "data" / "calib" / "ep_*.npz"), "--model", str(small_model), "--first-checkpoint",
                 "2", "--max-frames", "6", "--eps", "100", "--alpha", "0.5", "--confidence", "0.9",
                 "--deltas", "0.5", "2", "--split-test", "100", "--latency-frames", "6", "--out", str(out)]) == 0
    result = json.loads((out / "calibration.json").read_text())
    assert result["calibration_units"] == {"unit": "drive", "count": 14, "drives": 14, "frames": 84,
                                           "frames_per_unit": {"min": 6, "median": 6.0, "max": 6}}
    assert result["guarantee"]["unit_bound"] == "betting" and result["delta_m"] == 2.0
    split = result["split_test"]
    assert (split["splits"], split["drives"], split["calibration_drives"]) == (100, 14, 7)
    assert split["chosen_nonzero_share"] == 1.0 and split["violation_share"] == 0.0     # eps 100 m: no loss
    assert result["split_test_frame_units"]["unit"] == "frame" and result["split_test_frame_units"]["splits"] == 100
    assert result["latency"]["replay_exit_mismatches"] == 0, "the replay must match direct runs on episodes too"
    params = yaml.safe_load((out / "calibration.param.yaml").read_text())["/**"]["ros__parameters"]["exit"]
    assert params["max_checks"] == SPECS["exit.max_checks"].default and params["budget_ms"] == 0.0
    assert "delta above 0 chosen in 100.0%" in capsys.readouterr().out
