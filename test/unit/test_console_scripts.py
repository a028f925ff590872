"""Every console script the two packages install starts and prints its help (the installed copy, as users run it)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test.conftest import REPO_ROOT

# script -> the setup.py that declares it: the runtime's (a vehicle) or the lab's (a workstation)
RUNTIME, LAB = REPO_ROOT / "deead_ros" / "setup.py", REPO_ROOT / "deead_lab" / "setup.py"
SCRIPTS = {"deead_node": RUNTIME, "deead_replay": RUNTIME, "deead_build_engines": RUNTIME, "deead_export": LAB,
           "deead_eval": LAB, "deead_train": LAB, "deead_make_bag": LAB, "deead_calibrate": LAB}


@pytest.mark.parametrize("script", SCRIPTS)
def test_installed_console_script_runs(script):
    path = Path(sys.executable).parent / script
    if not path.exists():
        path = Path(shutil.which(script) or "")
    assert path.is_file(), f"{script} is not installed; run `make setup`"
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_every_script_is_declared_in_its_packages_setup_py():
    undeclared = [f"{s} ({setup.relative_to(REPO_ROOT)})" for s, setup in SCRIPTS.items()
                  if f'"{s} = ' not in setup.read_text()]
    assert not undeclared, f"not declared where expected: {undeclared}"
