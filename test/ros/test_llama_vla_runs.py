"""The ORION-shaped Llama VLA, exported with `deead_export --arch llama_vla`, runs everywhere the demo runs:
deead_node (as its own process), deead_eval on a bag, bench_chain.py --model and bench_exit.py --model.
Nothing in the package is specific to it outside its model file and its registry entry.
"""
import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

from deead_ros.engines.manifest import load_manifest  # noqa: E402
from deead_lab.model.export_onnx import main as export_main  # noqa: E402
from test.conftest import REPO_ROOT  # noqa: E402
from test.ros.test_node import Driver, plan_frames  # noqa: E402

LAYERS = 4


@pytest.fixture(scope="module")
def llama_manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("llama_vla")
    assert export_main(["--arch", "llama_vla", "--layers", str(LAYERS), "--out", str(out)]) == 0
    return out / "manifest.json"


def test_export_states_the_offsets_head_and_the_encoder(llama_manifest):
    m = load_manifest(llama_manifest)
    assert (m.arch, m.num_layers, m.head_contract.form, m.encoder.name) == ("llama_vla", LAYERS, "offsets",
                                                                            "driving_frame")
    assert m.fused is not None and len(m.torch) == LAYERS + 2


def test_deead_node_plans_with_it(llama_manifest, ros_context):
    command = [sys.executable, "-m", "deead_ros.ros.node", "--ros-args", "-p", f"model_file_path:={llama_manifest}",
               "-p", "exit.first_checkpoint:=2", "-p", "exit.fixed_exit_layer:=2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = Driver(ros_context)
    try:
        driver.wait_for_node()
        plans = plan_frames(driver, [21, 22, 23], timeout_s=30.0)
        assert all(p.num_layers == LAYERS and 2 <= p.exit_layer <= LAYERS for p in plans)
        assert all(len(driver.trajectories[(sec, 0)].poses) == 6 for sec in (21, 22, 23))
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
        driver.node.destroy_node()
    assert f"on {LAYERS} layers (model llama_vla random seed 0)" in output, output


def test_deead_eval_runs_it_on_a_bag(llama_manifest, fixture_bag, tmp_path):
    result = subprocess.run([sys.executable, "-m", "deead_lab.eval", str(fixture_bag), "--model",
                             str(llama_manifest), "--first-checkpoint", "2", "--delta", "1", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["full"]["frames"] > 0 and summary["full"]["mean_exit_layer"] == LAYERS


def run_bench(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), *args], capture_output=True,
                            text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_benchmarks_run_it(llama_manifest, tmp_path):
    chain = run_bench("bench_chain.py", "--model", str(llama_manifest), "--runs", "5", "--burn-in", "1")
    assert chain["num_layers"] == LAYERS and chain["chain_over_fused"] > 0
    (tmp_path / "data" / "test").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz", tmp_path / "data" / "test" / "ep_0000.npz")
    exits = run_bench("bench_exit.py", "--model", str(llama_manifest), "--data", str(tmp_path / "data"),
                      "--frames", "8", "--first-checkpoint", "2", "--out", str(tmp_path / "out"))
    assert "latency_ratio_delta2" in exits and (tmp_path / "out" / "bench_exit.json").is_file()
