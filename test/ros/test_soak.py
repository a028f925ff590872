"""The short soak: the bag replayed in a loop into deead_node; nothing unaccounted, memory flat."""
import json
import subprocess
import sys

import pytest

from test.conftest import REPO_ROOT

pytestmark = pytest.mark.ros


def test_short_soak_accounts_for_every_frame(small_model, fixture_bag):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "soak.py"), "--minutes", "0.35",
                             "--sample-s", "2", "--rate", "2", "--bag", str(fixture_bag), "--model", str(small_model),
                             "--param", "exit.first_checkpoint:=2"],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames_received"] > 50, summary
    assert summary["frames_unaccounted"] == 0, summary
    assert summary["rss_growth_pct"] < 10.0, summary
