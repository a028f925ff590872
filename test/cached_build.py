"""What the tests that build something in build/ share: a command that must succeed, the files a clone holds, a
digest of what a build reads, and a stamp saying which digest a build folder holds, so it is rebuilt only when its
inputs changed (a venv, a colcon workspace, a message package: minutes the first time, nothing after).
"""
from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path

from test.conftest import REPO_ROOT


def run(command: list, timeout: float, **kwargs) -> str:
    """Run command (any items, as strings) to success and return its stdout; a failure shows the ends of both
    outputs."""
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def clone_files(*under: str) -> list[str]:
    """The files a clone of this checkout would hold (tracked, and untracked but not ignored), under the given
    folders (all when none), as sorted paths relative to the repository root."""
    listed = run(["git", "ls-files", "-co", "--exclude-standard", *under], 60, cwd=REPO_ROOT).splitlines()
    return sorted(name for name in listed if (REPO_ROOT / name).is_file())


def digest(files: Iterable[Path], *extra: str) -> str:
    """A digest of the files' names and contents, and of the extra strings (an interpreter, a version)."""
    hashed = hashlib.sha256("\0".join(extra).encode())
    for path in files:
        hashed.update(str(path).encode() + b"\0" + hashlib.sha256(Path(path).read_bytes()).digest())
    return hashed.hexdigest()


class BuildStamp:
    """A file in a build folder holding the digest of the inputs that folder was last built from."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def holds(self, key: str) -> bool:
        """Whether the folder was built from inputs with this digest (nothing to rebuild)."""
        return self.path.exists() and self.path.read_text() == key

    def mark(self, key: str) -> None:
        """Record that the folder now holds a build of these inputs; call it after the build succeeded."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(key)
