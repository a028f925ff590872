"""deead_eval's outputs for people: the report page, the MCAP for Foxglove/RViz, the video, the page in a browser."""
import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deead_lab.eval import WORST_FRAME_GAP, main, per_bag_path
from deead_lab.plan_recording import DEBUG_IMAGE, DEBUG_MARKERS, DEBUG_PRIOR, EXIT_DIAGNOSTICS, TRAJECTORY
from test.conftest import RUNTIME_ROOT

FRAMES = 40                  # the fixture bag's: two worst frames fit at WORST_FRAME_GAP apart
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def run(small_model, fixture_bag, tmp_path_factory):
    """One deead_eval run over the fixture bag with every output: the page, an MCAP and a video."""
    out = tmp_path_factory.mktemp("eval_outputs")
    assert main([str(fixture_bag), "--model", str(small_model), "--delta", "1", "50", "--first-checkpoint", "2",
                 "--max-frames", str(FRAMES), "--camera", "metadrive", "--out", str(out / "report"),
                 "--record", str(out / "plans.mcap"), "--video", str(out / "debug.mp4")]) == 0
    rows = list(csv.DictReader((out / "report" / "frames.csv").read_text().splitlines()))
    return out, rows


def read_recording(path: Path) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    from deead_lab.plan_recording import recording_typestore
    messages: dict[str, list] = {}
    with AnyReader([path], default_typestore=recording_typestore()) as reader:
        for connection, _, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype))
    return messages


def test_the_mcap_reads_back_with_every_channel_and_one_message_per_frame(run):
    out, rows = run
    messages = read_recording(out / "plans.mcap")
    shown = [r for r in rows if r["setting"] == "delta_50"]
    with_prior = sum(r["prior_source"] != "none" for r in shown)
    with_truth = sum(not math.isnan(float(r["l2_3s_m"])) for r in shown)
    expected = {"/camera/image/compressed": FRAMES, TRAJECTORY: FRAMES, EXIT_DIAGNOSTICS: FRAMES,
                DEBUG_PRIOR: with_prior, DEBUG_IMAGE: FRAMES, DEBUG_MARKERS: FRAMES,
                "/ground_truth/trajectory": with_truth,
                **{f"/deead_eval/{s}/{kind}": FRAMES for s in ("full", "delta_1", "delta_50")
                   for kind in ("trajectory", "exit_diagnostics")}}
    assert {topic: len(msgs) for topic, msgs in messages.items()} == expected
    assert with_prior > 0 and with_truth > 0
    assert [m.exit_layer for m in messages[EXIT_DIAGNOSTICS]] == [int(r["exit_layer"]) for r in shown]
    assert [m.reason_text != "" for m in messages[EXIT_DIAGNOSTICS]] == [True] * FRAMES
    assert all(math.isnan(m.delta_m) for m in messages["/deead_eval/full/exit_diagnostics"])
    assert all(m.delta_m == 50 and m.backend == "onnxruntime" for m in messages[EXIT_DIAGNOSTICS])
    assert all(len(m.poses) == 6 and m.header.frame_id == "base_link" for m in messages[TRAJECTORY])
    first = messages[DEBUG_MARKERS][0].markers
    assert first[0].action == 3, "DELETEALL first: the checkpoints vary per frame"
    assert {m.ns for m in first[1:]} >= {"checkpoints", "trajectory", "exit"}
    image = messages[DEBUG_IMAGE][0]
    assert image.format == "jpeg" and bytes(image.data[:2]) == b"\xff\xd8"
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in messages[TRAJECTORY]]
    assert np.all(np.diff(stamps) > 0), "stamped with the camera stamps, in order"


def test_the_foxglove_layout_shows_topics_the_recording_has(run):
    out, _ = run
    layout = json.loads((RUNTIME_ROOT / "config" / "foxglove_layout.json").read_text())
    recorded = set(read_recording(out / "plans.mcap"))
    panels = layout["configById"]

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])
    assert sorted(leaves(layout["layout"])) == sorted(panels), "every panel placed, every placed panel configured"
    referenced = {panels["Image!debug"]["imageMode"]["imageTopic"], panels["RawMessages!diagnostics"]["topicPath"]}
    referenced |= set(panels["3D!plan"]["topics"])
    plots = ("Plot!exit_layer", "Plot!latency")
    referenced |= {path["value"].split(".")[0] for key in plots for path in panels[key]["paths"]}
    assert referenced <= recorded, f"not in the recording: {referenced - recorded}"


def test_the_video_has_one_frame_per_planned_frame(run):
    import imageio_ffmpeg  # type: ignore[import-untyped]
    out, _ = run
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(out / "debug.mp4"))
    assert frames == FRAMES


def test_the_report_page_holds_the_table_the_figures_and_the_worst_frames(run):
    out, _ = run
    page = (out / "report" / "index.html").read_text()
    worst = sorted((out / "report" / "worst_frames").glob("*.png"))
    assert 1 <= len(worst) <= 2 and all(p.stat().st_size > 1000 for p in worst)
    indices = [int(p.stem.rsplit("_", 1)[1]) for p in worst]
    assert all(abs(a - b) >= WORST_FRAME_GAP for a, b in zip(indices, indices[1:])), "not frames of one moment"
    assert page.count('src="data:image/png;base64,') == 3 + len(worst), "eval plots, exit layers, latency, frames"
    for text in ("<h2>Sweep</h2>", "delta_50", "delta_1", "Exit layers", "Latency", "Worst frames by L2 (delta_50)",
                 "Settings of the run", "--record", "plans.mcap", "debug.mp4"):
        assert text in page, text
    assert "<script" not in page and "src=\"http" not in page, "self-contained: nothing to fetch"


def test_a_setting_that_is_not_run_cannot_be_shown(small_model, fixture_bag, tmp_path, capsys):
    assert main([str(fixture_bag), "--model", str(small_model), "--delta", "1", "--show", "delta_7",
                 "--out", str(tmp_path)]) == 2
    assert "--show delta_7 is not a setting of this run: full or delta_1" in capsys.readouterr().err


def test_several_bags_record_one_file_each():
    bags = [Path("fleet/a/drive"), Path("fleet/b/drive")]
    assert per_bag_path("runs/plans.mcap", 1, bags) == "runs/plans_001_drive.mcap"
    assert per_bag_path("runs/plans.mcap", 0, bags[:1]) == "runs/plans.mcap"
    assert per_bag_path("", 0, bags) == ""


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Debian's chromium (make setup "
                    "does where apt-get works) to test the report page in a real browser")
def test_the_report_page_renders_its_figures_in_headless_chromium(run, tmp_path):
    from PIL import Image
    out, _ = run
    shot = tmp_path / "page.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,3000",
               f"--screenshot={shot}", (out / "report" / "index.html").as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), f"no screenshot; chromium exited {done.returncode}: {done.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)

    def share(rgb, tolerance=12):
        return float(np.mean(np.abs(pixels - rgb).max(axis=1) <= tolerance))
    assert share((255, 255, 255)) < 0.9, "not a blank page"
    assert share((31, 119, 180)) > 0.001, "matplotlib's blue (the latency bars) is on the page"
    assert share((253, 231, 37)) > 0.0005, "the exit-layer histogram's last-layer yellow is on the page"
    assert share((255, 120, 0)) > 0.0001, "the debug images' orange plans are on the page"
