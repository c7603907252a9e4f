"""The atomic-write contract, tested as a user sees it: a failure mid-write (an exception inside the
block, a full disk in the serializer, a process killed with SIGKILL) leaves the old bytes or no file,
and no stray file by any name once the next write of the same target has run."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.fileio import atomic_path, write_bytes_atomic, write_csv_atomic, write_text_atomic


def listing(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_an_exception_inside_the_block_keeps_the_old_bytes_and_leaves_nothing(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old model")
    before = listing(tmp_path)
    with pytest.raises(RuntimeError, match="serializer crashed"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a new mod")
        raise RuntimeError("serializer crashed")
    assert listing(tmp_path) == before


def test_a_failure_without_an_old_file_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.esqz") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert listing(tmp_path) == {}


def test_a_full_disk_in_the_serializer_is_one_line_and_keeps_the_old_bytes(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    target.write_text("epoch,loss\n1,0.5\n")
    before = listing(tmp_path)
    real_write = Path.write_bytes

    def disk_full(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(EdgeSqueezeError) as exc:
        write_text_atomic(target, "epoch,loss\n1,0.5\n2,0.4\n")
    message = str(exc.value)
    assert str(target) in message and "disk is full" in message and "\n" not in message
    assert listing(tmp_path) == before


def test_a_full_disk_in_the_csv_writer_keeps_the_old_bytes(tmp_path, monkeypatch):
    import csv

    target = tmp_path / "rows.csv"
    target.write_text("old\n")

    class FullDisk(csv.DictWriter):
        def writerows(self, rows):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv, "DictWriter", FullDisk)
    with pytest.raises(EdgeSqueezeError, match="disk is full"):
        write_csv_atomic(target, [{"a": 1}], ["a"])
    assert listing(tmp_path) == {"rows.csv": b"old\n"}


def test_a_successful_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("{}")
    write_bytes_atomic(target, b'{"ok": true}')
    assert listing(tmp_path) == {"report.json": b'{"ok": true}'}


WRITER = textwrap.dedent(
    """
    import sys, time
    from edge_squeeze.fileio import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"half of the new ")
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
            fh.write(b"bytes")
    """
)


def test_sigkill_mid_write_keeps_the_old_bytes_and_the_next_write_clears_the_debris(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"old checkpoint")
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert target.read_bytes() == b"old checkpoint"
    debris = [p.name for p in tmp_path.iterdir() if p.name != "best.pt"]
    assert len(debris) == 1 and debris[0].startswith(".best.pt."), debris  # the killed writer's own
    write_bytes_atomic(target, b"new checkpoint")  # the next run of the same write
    assert listing(tmp_path) == {"best.pt": b"new checkpoint"}


def test_a_live_writers_temporary_file_is_not_removed(tmp_path):
    """Two processes writing one target: the second must not delete the first's file under it."""
    target = tmp_path / "model.onnx"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        write_bytes_atomic(target, b"mine")
        others = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
        assert len(others) == 1 and str(child.pid) in others[0].name
        assert child.poll() is None, "checking whether a writer lives must not signal it"
    finally:
        child.kill()
        child.wait(timeout=10)
    time.sleep(0.05)
    write_bytes_atomic(target, b"again")
    assert listing(tmp_path) == {"model.onnx": b"again"}


def test_an_artifact_gets_the_usual_permissions_not_mkstemps(tmp_path):
    umask = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "model.onnx", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o644


def test_missing_folders_are_made(tmp_path):
    write_text_atomic(tmp_path / "a" / "b" / "report.json", "{}")
    assert (tmp_path / "a" / "b" / "report.json").read_text() == "{}"


def test_each_write_error_names_its_fix(tmp_path):
    from edge_squeeze.fileio import cannot_write

    target = tmp_path / "x.onnx"
    assert "disk is full" in str(cannot_write(target, OSError(errno.ENOSPC, "No space left on device")))
    assert "read-only or not yours" in str(
        cannot_write(target, OSError(errno.EROFS, "Read-only file system"))
    )
    other = str(cannot_write(target, OSError(errno.EIO, "Input/output error")))
    assert other == f"cannot write {target}: Input/output error (choose another output path)"
    assert (
        str(cannot_write(target, OSError("no errno")))
        == f"cannot write {target}: no errno (choose another output path)"
    )
    (tmp_path / "file").write_text("")
    nested = tmp_path / "file" / "x.onnx"
    with pytest.raises(EdgeSqueezeError, match="is a file, not a folder"):
        write_bytes_atomic(nested, b"x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(EdgeSqueezeError, match="it is a folder"):
        write_bytes_atomic(tmp_path / "folder", b"x")


def test_sha256_of_a_file_larger_than_one_read(tmp_path):
    import hashlib

    from edge_squeeze.fileio import sha256_file

    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_a_writer_owned_by_another_user_counts_as_alive(monkeypatch):
    from edge_squeeze import fileio

    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "kill", denied)
    assert fileio._pid_alive(12345) is True
