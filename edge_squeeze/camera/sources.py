"""Frame sources by URI (CSI, V4L2, RTSP, video files, folders, images): the GStreamer pipelines,
opening, and the newest-frame reader that reconnects."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..errors import EdgeSqueezeError
from ..options import FloatRange, IntRange, flag, validate
from ..preprocess import IMAGE_SUFFIXES, list_images

log = logging.getLogger("edge_squeeze")


VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".h264", ".h265")


@dataclasses.dataclass(frozen=True)
class CaptureSettings:
    """How a source is opened (the CSI and RTSP pipelines, a V4L2 camera's mode)."""

    width: int = flag("--width", 1280, type=IntRange(16, 8192))
    height: int = flag("--height", 720, type=IntRange(16, 8192))
    fps: int = flag("--fps", 30, type=IntRange(1, 1000))
    flip: int = flag(
        "--flip",
        0,
        type=IntRange(0, 7),
        help="CSI flip-method (0 none, 2 rotate 180, 4 horizontal, 6 vertical)",
    )
    latency_ms: int = flag(
        "--latency", 200, type=IntRange(0), help="RTSP latency (jitter buffer) in ms (GStreamer)"
    )
    open_timeout_s: float = flag(
        "--open-timeout",
        5.0,
        type=FloatRange(0, 600, low_open=True),
        help="seconds to wait for a source to open",
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass(frozen=True)
class Source:
    """What to open and how: ``target`` is a path, device index, URL or GStreamer pipeline."""

    kind: str  # csi | v4l2 | rtsp | video | folder | image
    uri: str
    target: Any
    api: int = cv2.CAP_ANY
    live: bool = False


def csi_pipeline(sensor_id: int, s: CaptureSettings) -> str:
    """nvarguscamerasrc -> NVMM -> nvvidconv (flip) -> BGR appsink that drops all but the newest buffer."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){s.width}, height=(int){s.height}, "
        f"framerate=(fraction){s.fps}/1, format=(string)NV12 ! "
        f"nvvidconv flip-method={s.flip} ! video/x-raw, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def rtsp_pipeline(url: str, s: CaptureSettings) -> str:
    return (
        f"rtspsrc location={url} latency={s.latency_ms} protocols=tcp ! decodebin ! videoconvert ! "
        "video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def opencv_has_gstreamer() -> bool:
    from ..environment import opencv_gstreamer

    return bool(opencv_gstreamer())


def parse_source(
    uri: str, settings: Optional[CaptureSettings] = None, gstreamer: Optional[bool] = None
) -> Source:
    """Map a source URI, as Jetson users write them, to what OpenCV opens."""
    s = settings or CaptureSettings()
    has_gst = opencv_has_gstreamer() if gstreamer is None else gstreamer
    if uri.startswith("csi://"):
        sensor = uri[len("csi://") :] or "0"
        if not sensor.isdigit():
            raise EdgeSqueezeError(f"bad camera URI {uri!r}: use csi://0, csi://1, ...")
        if not has_gst:
            raise EdgeSqueezeError(
                "csi:// needs OpenCV built with GStreamer, and this OpenCV has none (pip's wheels never do): "
                "on a Jetson use JetPack's OpenCV (apt python3-opencv) and remove pip's: pip uninstall "
                "opencv-python opencv-python-headless"
            )
        return Source("csi", uri, csi_pipeline(int(sensor), s), cv2.CAP_GSTREAMER, live=True)
    if uri.startswith(("rtsp://", "rtsps://")):
        if has_gst:
            return Source("rtsp", uri, rtsp_pipeline(uri, s), cv2.CAP_GSTREAMER, live=True)
        return Source("rtsp", uri, uri, cv2.CAP_FFMPEG, live=True)
    if uri.startswith(("http://", "https://")):
        return Source("rtsp", uri, uri, cv2.CAP_FFMPEG, live=True)
    if uri.startswith("v4l2://"):
        uri_path = uri[len("v4l2://") :]
        return Source("v4l2", uri, _v4l2_target(uri_path, uri), cv2.CAP_V4L2, live=True)
    if uri.isdigit():
        return Source("v4l2", uri, int(uri), cv2.CAP_ANY, live=True)
    if uri.startswith("/dev/video"):
        return Source("v4l2", uri, _v4l2_target(uri, uri), cv2.CAP_V4L2, live=True)
    path = Path(uri)
    if path.is_dir():
        return Source("folder", uri, path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return Source("image", uri, path)
        if suffix in VIDEO_SUFFIXES:
            return Source("video", uri, str(path), cv2.CAP_ANY)
        raise EdgeSqueezeError(
            f"cannot tell what {uri} is from its suffix: give a video ({', '.join(VIDEO_SUFFIXES[:5])}, ...), "
            "an image, a folder, csi://N, /dev/videoN or rtsp://..."
        )
    if "://" in uri:
        raise EdgeSqueezeError(
            f"unsupported source scheme in {uri!r}: use csi://, v4l2://, rtsp:// or a path"
        )
    raise EdgeSqueezeError(f"source not found: {uri} (a file, a folder, csi://N, /dev/videoN or rtsp://...)")


def _v4l2_target(path: str, uri: str) -> Any:
    if path.startswith("/dev/video") and path[len("/dev/video") :].isdigit():
        return path  # OpenCV's V4L2 backend opens device paths directly
    raise EdgeSqueezeError(f"bad camera URI {uri!r}: use /dev/videoN, v4l2:///dev/videoN or an index")


def open_capture(source: Source, settings: CaptureSettings) -> Any:
    """``cv2.VideoCapture`` for ``source`` with open/read timeouts, or None when it cannot be opened."""
    params: List[int] = []
    timeout_ms = int(settings.open_timeout_s * 1000)
    if hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
        params += [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    if source.kind == "rtsp" and source.api == cv2.CAP_FFMPEG:
        # TCP and a socket timeout (microseconds): an unreachable stream fails in seconds, not minutes
        os.environ.setdefault(
            "OPENCV_FFMPEG_CAPTURE_OPTIONS",
            f"rtsp_transport;tcp|timeout;{int(settings.open_timeout_s * 1e6)}",
        )
    try:
        cap = (
            cv2.VideoCapture(source.target, source.api, params)
            if params
            else cv2.VideoCapture(source.target, source.api)
        )
    except cv2.error:
        cap = cv2.VideoCapture(source.target, source.api)
    if not cap.isOpened():
        cap.release()
        return None
    if source.kind == "v4l2":
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height)
        cap.set(cv2.CAP_PROP_FPS, settings.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


class LatestFrameReader:
    """Reads a live source in a thread and keeps only the newest frame.

    A lost camera or stream is reopened with exponential backoff (``retry_delays``); after the last
    retry the reader stops and :attr:`error` says why.
    """

    def __init__(
        self,
        open_fn: Callable[[], Any],
        name: str,
        retry_delays: Tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0),
    ) -> None:
        self._open = open_fn
        self.name = name
        self.retry_delays = retry_delays
        self._cond = threading.Condition()
        self._frame: Optional[np.ndarray] = None
        self._seq = 0
        self._taken = 0
        self.dropped = 0
        self.error: Optional[str] = None
        self._stop = threading.Event()
        self._cap: Any = None
        self._thread = threading.Thread(target=self._run, name=f"camera:{name}", daemon=True)

    def start(self) -> LatestFrameReader:
        self._cap = self._open()
        if self._cap is None:
            raise EdgeSqueezeError(
                f"cannot open {self.name}: check the URI, cable or network, and permissions"
            )
        self._thread.start()
        return self

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            ok, frame = self._cap.read() if self._cap is not None else (False, None)
            if ok and frame is not None:
                failures = 0
                with self._cond:
                    if self._frame is not None and self._seq > self._taken:
                        self.dropped += 1
                    self._frame = frame
                    self._seq += 1
                    self._cond.notify_all()
                continue
            if failures >= len(self.retry_delays):
                self.error = f"{self.name}: no frames after {failures} reconnect attempts; giving up"
                break
            delay = self.retry_delays[failures]
            failures += 1
            log.warning(
                "%s: lost the source; reconnecting in %.1f s (attempt %d of %d)",
                self.name,
                delay,
                failures,
                len(self.retry_delays),
            )
            if self._cap is not None:
                self._cap.release()
            if self._stop.wait(delay):
                break
            self._cap = self._open()
        with self._cond:
            self._cond.notify_all()

    def read(self, timeout: float = 10.0) -> Optional[Tuple[int, np.ndarray]]:
        """The newest frame not yet returned, waiting for one; None once the reader has stopped."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seq == self._taken:
                if self.error or self._stop.is_set() or not self._thread.is_alive():
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.error = self.error or f"{self.name}: no frame for {timeout:.0f} s"
                    return None
                self._cond.wait(min(remaining, 0.5))
            self._taken = self._seq
            assert self._frame is not None
            return self._seq, self._frame

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def sequential_frames(source: Source, settings: CaptureSettings) -> Iterator[Tuple[int, np.ndarray]]:
    """Every frame of a file, folder or image, in order (1-based frame numbers)."""
    if source.kind == "image":
        from ..preprocess import read_image

        yield 1, read_image(source.target)
        return
    if source.kind == "folder":
        images = list_images(source.target)
        if not images:
            raise EdgeSqueezeError(f"no images in {source.target}")
        for i, path in enumerate(images, 1):
            frame = cv2.imread(str(path))
            if frame is None:
                log.warning("skipping unreadable image %s", path)
                continue
            yield i, frame
        return
    cap = open_capture(source, settings)
    if cap is None:
        raise EdgeSqueezeError(f"cannot open video {source.target}: corrupt, or a codec this OpenCV lacks")
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            index += 1
            yield index, frame
    finally:
        cap.release()
    if index == 0:
        raise EdgeSqueezeError(f"no frames could be decoded from {source.target}")
