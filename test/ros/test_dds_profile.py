"""The localhost Fast DDS profile (config/fastdds_localhost_shm.xml) is read, and parsed without a complaint, by this
distro's Fast DDS under the variable deead_ros.ros.dds names (the launch file sets that one): Fast DDS 2 (Jazzy) and
3 (Kilted) read different variables, and a profile that is never read fails silently (images fall back to UDP)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test.conftest import RUNTIME_ROOT

pytestmark = pytest.mark.ros

from deead_ros.ros.dds import fast_dds_profile_variable  # noqa: E402

PROFILE = RUNTIME_ROOT / "config" / "fastdds_localhost_shm.xml"


def fast_dds_output(profile: Path) -> str:
    """What a process that starts one participant prints with `profile` set under this distro's variable alone."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DEFAULT_PROFILES_FILE")}
    env.update({fast_dds_profile_variable(): str(profile), "AMENT_PREFIX_PATH": sys.prefix})
    code = "import rclpy; rclpy.init(); from rclpy.node import Node; Node('profile_check'); rclpy.shutdown()"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


def test_fast_dds_reads_the_profile_under_the_variable_named_for_this_distro(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text(PROFILE.read_text().replace("<profiles>", "<profiles><not_a_profile_tag/>"))
    assert "not_a_profile_tag" in fast_dds_output(broken), \
        f"this distro's Fast DDS did not read a profile set as {fast_dds_profile_variable()}"


def test_this_distros_fast_dds_takes_the_profile_without_a_complaint():
    output = fast_dds_output(PROFILE)
    assert "XMLPARSER" not in output and "deprecated" not in output, output
