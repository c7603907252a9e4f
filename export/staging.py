"""An export lands as one set: its files are made in a staging folder inside the output folder and
moved in together, under a lock; a failed, interrupted or concurrent export leaves no mixed set."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edge_squeeze.fileio import cannot_write
from edge_squeeze.formats import EXPORT_FILES, REPORT, TRT_CALIB_CACHE

# every file an export writes into its folder (the calibration statistics under calibration/ are a
# cache shared by runs and stay)
EXPORT_MEMBERS = (*(f.name for f in EXPORT_FILES), TRT_CALIB_CACHE, REPORT)


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A fresh folder inside ``out`` to write an export into; on success its files replace the export
    in ``out`` as one set (earlier members not made this time are removed), under a lock so that
    two exports into one folder do not interleave; on failure it is removed and ``out`` is untouched."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".export-", dir=str(out)))
    except OSError as exc:
        raise cannot_write(out, exc) from exc
    try:
        yield stage
        with _folder_lock(out):
            made = {p.name for p in stage.iterdir()}
            for name in EXPORT_MEMBERS:
                if name not in made and (out / name).is_file():
                    (out / name).unlink()
            for name in sorted(made, key=lambda n: n == REPORT):  # the report last
                os.replace(str(stage / name), str(out / name))
    except OSError as exc:
        raise cannot_write(out, exc) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (POSIX ``flock``; none where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / ".export.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
