"""The layer rule of docs/design.md: rclpy only in deead_ros.ros; torch/onnxruntime/tensorrt only in backends."""
import subprocess
import sys

import pytest

from test.conftest import REPO_ROOT

HEAVY = ("rclpy", "torch", "onnxruntime", "tensorrt")


@pytest.mark.parametrize("module", ["deead_ros", "deead_ros.exit", "deead_ros.geometry"])
def test_pure_modules_import_without_rclpy_or_torch(module):
    # A None entry in sys.modules makes `import rclpy` fail, as in a venv without it.
    block = "; ".join(f"sys.modules['{m}'] = None" for m in HEAVY)
    code = f"import sys; {block}; import {module}"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{module} needs a heavy import:\n{result.stderr}"


def test_runner_and_exit_never_import_rclpy():
    folders = [REPO_ROOT / "deead_ros" / "deead_ros" / layer for layer in ("exit", "engines", "model")]
    offenders = [str(p.relative_to(REPO_ROOT)) for folder in [*folders, REPO_ROOT / "deead_lab" / "deead_lab"]
                 for p in folder.rglob("*.py")
                 if any(line.lstrip().startswith(("import rclpy", "from rclpy"))
                        for line in p.read_text().splitlines())]
    runner = REPO_ROOT / "deead_ros" / "deead_ros" / "runner.py"
    if runner.exists() and "rclpy" in runner.read_text():
        offenders.append("deead_ros/runner.py")
    assert not offenders, f"rclpy imported below the ROS layer in {offenders}; move that code into deead_ros/ros/"


def test_no_runtime_file_is_over_500_lines():
    """The vehicle's code stays readable: a runtime module that grows past 500 lines is split along its seams."""
    long = {str(p.relative_to(REPO_ROOT)): n for p in (REPO_ROOT / "deead_ros" / "deead_ros").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"runtime files over 500 lines: {long}"
