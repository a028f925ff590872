"""Every console script the package installs starts and prints its help (the installed copy, as users run it)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test.conftest import REPO_ROOT

SCRIPTS = ("deead_node", "deead_replay", "deead_export", "deead_build_engines", "deead_eval", "deead_train",
           "deead_make_bag", "deead_calibrate")


@pytest.mark.parametrize("script", SCRIPTS)
def test_installed_console_script_runs(script):
    path = Path(sys.executable).parent / script
    if not path.exists():
        path = Path(shutil.which(script) or "")
    assert path.is_file(), f"{script} is not installed; run `make setup`"
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_every_script_is_declared_in_setup_py():
    setup = (REPO_ROOT / "setup.py").read_text()
    assert all(f'"{s} = ' in setup for s in SCRIPTS)
