"""deead_eval over a bag: the same runner as the node, without the middleware."""
import csv
import json
import shutil

from deead_lab.eval import main
from test.conftest import REPO_ROOT


def test_eval_writes_table_csv_json_and_plot(small_model, fixture_bag, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main([str(fixture_bag), "--model", str(small_model), "--delta", "0", "50", "--first-checkpoint", "2",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"full", "delta_0", "delta_50", "camera_contract"}
    [camera] = summary["camera_contract"]       # the fixture's 80x48 camera: the model's 5:3, scaled up
    assert (camera["actual_width"], camera["actual_height"], camera["stretched"]) == (80, 48, False)
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


AUTOWARE = {"/camera/image/compressed": "/sensing/camera/front/image_raw/compressed",
            "/localization/odometry": "/localization/kinematic_state", "/planning/route": "/planning/route_path",
            "/planning/command": "/planning/command", "/ground_truth/trajectory": "/ground_truth/trajectory"}


def renamed_bag(source, out):
    """The fixture bag as another stack would have recorded it: the same messages under other topic names."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(Stores.ROS2_JAZZY)
    with AnyReader([source], default_typestore=store) as reader, \
            Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c.id: writer.add_connection(AUTOWARE[c.topic], c.msgtype, typestore=store) for c in reader.connections}
        for connection, timestamp, raw in reader.messages():
            writer.write(conns[connection.id], timestamp, raw)
    return out


def test_a_bag_from_another_stack_evaluates_with_remaps(small_model, fixture_bag, tmp_path, capsys):
    bag = renamed_bag(fixture_bag, tmp_path / "autoware")
    common = [str(bag), "--model", str(small_model), "--delta", "1", "--first-checkpoint", "2"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err
    assert "no camera frames" in err and "/camera/image/compressed" in err, err
    assert "/sensing/camera/front/image_raw/compressed" in err and "--remap" in err, "it lists what the bag has"
    remaps = [f"{theirs}:={ours}" for ours, theirs in AUTOWARE.items() if ours != theirs]
    assert main([*common, "--out", str(tmp_path / "mapped"), "--remap", *remaps]) == 0
    assert json.loads((tmp_path / "mapped" / "summary.json").read_text())["full"]["frames"] == 40


def test_bad_remaps_and_unreadable_bags_are_refused(small_model, tmp_path, capsys):
    assert main([str(tmp_path / "nothing"), "--model", str(small_model), "--first-checkpoint", "2"]) == 2
    assert "no bag could be evaluated" in capsys.readouterr().err
    assert main([str(tmp_path / "nothing"), "--remap", "/a=/b", "--model", str(small_model)]) == 2
    assert "--remap expects OLD:=NEW" in capsys.readouterr().err


def test_many_bags_on_two_ray_workers_match_the_serial_run(small_model, fixture_bag, tmp_path, capsys):
    """Fleet scale: the same rows (all but timings) whether the bags run here or on Ray workers."""
    common = ["--model", str(small_model), "--delta", "1", "--first-checkpoint", "2", "--max-frames", "10"]
    bags = [str(shutil.copytree(fixture_bag, tmp_path / name)) for name in ("drive_a", "drive_b")]
    assert main([*bags, *common, "--out", str(tmp_path / "serial")]) == 0
    assert main([*bags, *common, "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    assert "ray-local, 2 worker(s)" in capsys.readouterr().out

    def untimed(folder):
        rows = list(csv.DictReader((tmp_path / folder / "frames.csv").read_text().splitlines()))
        return [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in rows]
    serial = untimed("serial")
    assert len(serial) == 2 * 10 * 2 and serial == untimed("ray")


def test_a_failing_bag_is_reported_and_the_others_complete(small_model, fixture_bag, tmp_path, capsys):
    assert main([str(fixture_bag), str(tmp_path / "missing_bag"), "--model", str(small_model), "--first-checkpoint",
                 "2", "--max-frames", "5", "--out", str(tmp_path / "out")]) == 0
    assert "bag not used" in capsys.readouterr().err and (tmp_path / "out" / "summary.json").is_file()


def test_eval_reports_a_camera_of_another_aspect_than_the_models(small_model, tmp_path, capsys):
    """The issue's case: a 192x108 (16:9) JPEG stream into a model trained on 160x96 (5:3) is named, in a line and in
    summary.json, with the expected and actual sizes (and planned all the same, stretched, as the node's warn)."""
    from deead_lab.make_bag import write_bag
    bag = tmp_path / "wide"
    write_bag([REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz"], bag, max_frames=12, image_wh=(192, 108))
    assert main([str(bag), "--model", str(small_model), "--delta", "0", "--first-checkpoint", "2",
                 "--out", str(tmp_path / "out")]) == 0
    assert f"[eval] {bag}: camera image 192x108 (16:9) has another aspect ratio than the model's 160x96 (5:3)" \
        in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    [camera] = summary["camera_contract"]
    assert (camera["expected_width"], camera["expected_height"], camera["actual_width"], camera["actual_height"],
            camera["stretched"], camera["bag"]) == (160, 96, 192, 108, True, str(bag))
    assert summary["full"]["frames"] == 12
