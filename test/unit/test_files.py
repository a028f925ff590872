"""The one atomic write: a reader sees the old file or the new one, never half; an error leaves the old one."""
import os

import pytest

from deead_ros.files import replacing, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(path.parent) == ["out.json"]


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_the_file_gets_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    write_atomic(tmp_path / "atomic", b"")
    assert (tmp_path / "atomic").stat().st_mode == plain.stat().st_mode
