"""Writing artifacts so that a crash or a bad input never leaves a half-written file."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence, Union

from .errors import EdgeSqueezeError

PathLike = Union[str, "os.PathLike[str]"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def cannot_write(target: PathLike, exc: OSError) -> EdgeSqueezeError:
    """One line for an operating-system error writing ``target``, naming it and what to do."""
    target = Path(target)
    reason = exc.strerror or str(exc)
    if target.is_dir():
        hint = "it is a folder: give a file name"
    elif target.parent.exists() and not target.parent.is_dir():
        hint = f"{target.parent} is a file, not a folder"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the folder is read-only or not yours: choose another output path"
    elif exc.errno == errno.ENOSPC:
        hint = "the disk is full: free space or write elsewhere"
    else:
        hint = "choose another output path"
    return EdgeSqueezeError(f"cannot write {target}: {reason} ({hint})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_partials(target: PathLike) -> None:
    """Remove temporary files of ``target`` left by a process that was killed while writing it
    (``kill -9``, the OOM killer: nothing of its own could clean up). Each temporary name carries
    its writer's pid; a file whose writer still runs is left alone."""
    target = Path(target)
    for path in target.parent.glob(f".{target.name}.*.partial"):
        pid = path.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    An operating-system error (a read-only or missing folder, a full disk, a folder where the file
    should go) becomes one :class:`EdgeSqueezeError` naming ``target``; nothing is left behind. A
    process killed mid-write leaves ``target`` as it was; its temporary file is removed by the next
    write of the same target (:func:`remove_stale_partials`).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(target))
        remove_stale_partials(target)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=str(target.parent)
        )
    except OSError as exc:
        raise cannot_write(target, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        yield tmp_path
        os.replace(str(tmp_path), str(target))
    except OSError as exc:
        raise cannot_write(target, exc) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: PathLike, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_csv_atomic(target: PathLike, rows: Sequence[Dict[str, Any]], fields: Sequence[str]) -> None:
    """Rows as CSV with a header of ``fields`` (other keys are left out), written atomically."""
    with atomic_path(target) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
