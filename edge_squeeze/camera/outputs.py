"""Where classified frames go: the window check, JSON lines, video and frame writers."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import IO, Any, List, Optional, Tuple

import cv2

from ..errors import EdgeSqueezeError
from ..options import IntRange, flag, internal

log = logging.getLogger("edge_squeeze")


@dataclasses.dataclass
class CameraOptions:
    """Where the classified frames go and how long the loop runs."""

    display: bool = flag("--display", False, action="store_true", help="show a window with the overlay")
    video_out: Optional[Path] = flag(
        "--video-out", None, type=Path, help="write the overlaid video here (.avi MJPG or .mp4)"
    )
    frames_out: Optional[Path] = flag(
        "--frames-out", None, type=Path, help="write overlaid frames as JPEGs into this folder"
    )
    jsonl: Optional[str] = flag(
        "--jsonl", None, help="predictions as JSON lines to this file ('-' for stdout)"
    )
    max_frames: Optional[int] = flag("--max-frames", None, type=IntRange(1))
    retry_delays: Tuple[float, ...] = internal(
        (0.5, 1.0, 2.0, 4.0, 8.0), why="back-off before each reconnect: the CLI's --retries sets how many"
    )
    read_timeout_s: float = internal(
        10.0, why="a live source silent this long is reopened: twice --open-timeout"
    )


def _check_display() -> None:
    """``--display`` needs an OpenCV with a GUI and a screen; say which, in one line, if not."""
    try:
        cv2.namedWindow("edge-squeeze", cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no GUI"
        raise EdgeSqueezeError(
            "--display needs OpenCV with a GUI and a screen (this OpenCV says: "
            f"{reason[:120]}); pip's opencv-python-headless has none: install opencv-python (or use "
            "JetPack's OpenCV), or write --video-out / --frames-out instead"
        ) from exc


def _open_outputs(options: CameraOptions) -> Optional[IO[str]]:
    """The JSON-lines stream (stdout for "-"), and the frames folder made, or one line saying why not."""
    from ..fileio import cannot_write

    if options.frames_out:
        try:
            options.frames_out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cannot_write(options.frames_out, exc) from exc
    if options.jsonl == "-":
        return sys.stdout
    if options.jsonl:
        try:
            return open(options.jsonl, "w", encoding="utf-8")  # closed by run
        except OSError as exc:
            raise cannot_write(options.jsonl, exc) from exc
    return None


_RESIZE_WARNED: List[Tuple[int, int]] = []


def _warn_resized(size: Tuple[int, int]) -> None:
    if size not in _RESIZE_WARNED:
        _RESIZE_WARNED.append(size)
        log.warning("frames of other sizes are resized to the video's %dx%d", *size)


def _open_writer(path: Path, shape: Tuple[int, ...], fps: int) -> Any:
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"))
    from ..fileio import cannot_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(path, exc) from exc
    if path.is_dir():
        raise EdgeSqueezeError(f"cannot write video {path}: it is a folder; give a file name (.avi or .mp4)")
    writer = cv2.VideoWriter(str(path), fourcc, float(fps or 30), (shape[1], shape[0]))
    if not writer.isOpened():
        raise EdgeSqueezeError(f"cannot write video {path}: try an .avi file (MJPG)")
    return writer
