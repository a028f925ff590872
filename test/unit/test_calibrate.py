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
from deead_lab.calibration.risk import CalibrationError, fixed_sequence, learn_then_test, min_units, units_of
from deead_lab.stats import binomial_cdf, binomial_p_value, clopper_pearson_upper, hoeffding_bentkus_p_value

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
        learn_then_test(np.zeros((300, 1), bool), np.repeat(np.arange(3), 100), [1.0], 0.1, 0.9)


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
                 "--first-checkpoint", "2", "--eps", "100", "--alpha", "0.1", "--confidence", "0.9",
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
                 "--eps", "100", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "refused: 15 frames cannot certify risk <= 0.1 at confidence 0.9" in err and "at least 22" in err
    assert not (out / "calibration.param.yaml").exists() and (out / "calibration.json").exists()
