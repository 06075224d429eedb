"""Atomic writes: permissions follow the umask like a plain open(), failures leave nothing behind."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit._io import atomic_path, atomic_write_bytes, atomic_write_text, current_umask

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@pytest.fixture
def umask():
    """Set the process umask for one test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_(mask: int) -> int:
        os.umask(mask)
        return mask

    yield set_
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_gets_the_mode_of_a_plain_open(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "out.json", "{}\n")
    with open(tmp_path / "plain.json", "w") as f:
        f.write("{}\n")
    assert _mode(tmp_path / "out.json") == expected == _mode(tmp_path / "plain.json")


@pytest.mark.parametrize("mask, expected", [(0o022, 0o755), (0o077, 0o700)])
def test_created_folders_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_bytes(tmp_path / "a" / "b" / "out.bin", b"x")
    assert _mode(tmp_path / "a") == expected and _mode(tmp_path / "a" / "b") == expected


def test_existing_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "secret.txt"
    target.write_text("old")
    os.chmod(target, 0o600)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o600  # as open(target, "w") keeps it


def test_umask_fallback_without_proc(tmp_path, umask, monkeypatch):
    umask(0o027)
    real_open = open

    def no_proc(file, *args, **kwargs):
        if str(file) == "/proc/self/status":
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # the fallback restored the mask it read


def test_exception_leaves_no_temp_file_and_the_old_target(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        assert tmp.parent == tmp_path and tmp != target
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_temp_file_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "map.tif") as tmp:
        assert tmp.suffix == ".tif" and tmp.name.startswith(".map.tif.")
        tmp.write_bytes(b"\0")
    with atomic_path(tmp_path / "x.bin", suffix=".zip") as tmp:
        assert tmp.suffix == ".zip"
        tmp.write_bytes(b"\0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif", "x.bin"]


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=4096), first=st.binary(max_size=64))
def test_bytes_round_trip(tmp_path_factory, data, first):
    target = tmp_path_factory.mktemp("rt") / "blob.bin"
    atomic_write_bytes(target, first)
    atomic_write_bytes(target, data)
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["blob.bin"]


@settings(max_examples=30, deadline=None)
@given(text=st.text(max_size=500))
def test_text_round_trip(tmp_path_factory, text):
    target = tmp_path_factory.mktemp("rt") / "note.txt"
    atomic_write_text(target, text)
    assert target.read_bytes() == text.encode("utf-8")


def test_a_killed_writer_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    import signal
    import subprocess
    import sys

    from geovit._io import atomic_write_text

    target = tmp_path / "map.tif"
    code = ("import sys, time; from geovit._io import atomic_path\n"
            "cm = atomic_path(sys.argv[1]); tmp = cm.__enter__(); tmp.write_text('half'); print(tmp, flush=True)\n"
            "time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tmp.exists() and tmp.name.startswith(".map.tif.") and not target.exists()
    live = tmp_path / f".map.tif.{tmp.name.split('.')[3]}.{os.getpid()}.keep.tif"  # a live writer's file
    live.write_text("busy")
    atomic_write_text(target, "done")
    assert target.read_text() == "done"
    assert not tmp.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["map.tif", live.name])
