"""The simulator's own checks, run in the MetaDrive venv (`make metadrive`): the frame convention
the data set stores, and that drawing and reading only the ego camera leaves its images byte-identical. Slow
(a minute or two each) and skipped where the MetaDrive venv is absent: `make test-slow`."""
from __future__ import annotations

import os
import subprocess

import pytest

from test.conftest import REPO_ROOT

METADRIVE_PYTHON = REPO_ROOT / ".venv-metadrive" / "bin" / "python"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not METADRIVE_PYTHON.exists(), reason="no MetaDrive venv: run `make metadrive`")]


def _check(*args: str) -> str:
    result = subprocess.run([str(METADRIVE_PYTHON), "-m", "deead_lab.collect_metadrive", *args],
                            cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'deead_ros'}:{REPO_ROOT / 'deead_lab'}"},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_the_stored_frame_is_the_simulators_right_handed_frame():
    assert "frame check PASSED" in _check("--check-frame", "3")


def test_drawing_and_reading_only_the_camera_leaves_its_images_unchanged():
    out = _check("--check-render", "3100")
    assert "images identical" in out and "render check PASSED" in out
