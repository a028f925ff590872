"""Where installed files live (the demo model that `make setup` exports into the package's share/), and which
commit the code came from (recorded beside measured figures)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def share_dir() -> Path:
    """share/deead_ros: from the ament index when AMENT_PREFIX_PATH is set, else this interpreter's prefix."""
    if os.environ.get("AMENT_PREFIX_PATH"):
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return Path(get_package_share_directory("deead_ros"))
        except PackageNotFoundError:
            pass                            # a source checkout run from a venv: the venv prefix below
    return Path(sys.prefix) / "share" / "deead_ros"


def demo_manifest_path() -> Path:
    """manifest.json of the demo model's per-layer ONNX files (written by `make setup`)."""
    return share_dir() / "models" / "demo" / "onnx" / "manifest.json"


def source_commit() -> str:
    """The short git commit of the code running, or "" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()
