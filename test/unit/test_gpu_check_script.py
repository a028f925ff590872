"""scripts/gpu_check.sh on a machine without a GPU: the host-side checks pass and the last line says so.

Slow (about 30 s, and it reruns tests the default suite has): `make test-slow` runs it.
"""
import json
import shutil
import subprocess

import pytest

from test.conftest import REPO_ROOT


@pytest.mark.slow
def test_gpu_check_without_a_gpu_runs_the_host_checks_and_ends_with_its_json_line() -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: gpu_check.sh would run the GPU tests and benchmarks")
    out = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                         timeout=300, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["gpu"] is False and last["host_checks"] == "passed", last
    assert last["tests"]["passed"] > 0 and last["tests"].get("failed", 0) == 0, last
