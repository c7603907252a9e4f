"""Live camera classification: Jetson CSI, USB/V4L2, RTSP, video files, image folders, single images.

Live sources are read in their own thread that keeps only the newest frame, so inference never waits
on the camera and lag never grows; files and folders are read frame by frame and every frame is
classified. The GStreamer pipelines (``csi://``, and ``rtsp://`` when OpenCV has GStreamer) are
built as strings (tested); where they have run is in docs/jetson.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from .errors import EdgeSqueezeError
from .preprocess import IMAGE_SUFFIXES, list_images

log = logging.getLogger("edge_squeeze")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".h264", ".h265")


@dataclasses.dataclass(frozen=True)
class CaptureSettings:
    width: int = 1280
    height: int = 720
    fps: int = 30
    flip: int = 0  # nvvidconv flip-method: 0 none, 2 rotate 180, 4 horizontal, 6 vertical
    latency_ms: int = 200  # RTSP jitter buffer
    open_timeout_s: float = 5.0


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
    from .environment import opencv_gstreamer

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
        from .preprocess import read_image

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


def _outlined_text(
    img: np.ndarray,
    text: str,
    org: Tuple[int, int],
    scale: float,
    colour: Tuple[int, int, int],
    thickness: int,
) -> None:
    """Text with a black outline, readable on any background."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def draw_overlay(
    frame: np.ndarray, topk: List[Tuple[int, str, float]], fps: float, stage_ms: Dict[str, float]
) -> np.ndarray:
    """Top-k labels and scores, FPS and per-stage milliseconds drawn on a copy of ``frame``."""
    out = frame.copy()
    scale = max(0.5, frame.shape[1] / 1280.0)
    y = int(30 * scale)
    for rank, (_, label, score) in enumerate(topk):
        colour = (0, 255, 0) if rank == 0 else (255, 255, 255)
        _outlined_text(out, f"{label} {100 * score:.1f}%", (10, y), 0.8 * scale, colour, 2)
        y += int(30 * scale)
    stages = "  ".join(f"{k} {v:.1f}ms" for k, v in stage_ms.items())
    _outlined_text(
        out, f"{fps:.1f} FPS  {stages}", (10, frame.shape[0] - 12), max(0.45, 0.6 * scale), (0, 255, 255), 1
    )
    return out


@dataclasses.dataclass
class CameraOptions:
    display: bool = False
    video_out: Optional[Path] = None
    frames_out: Optional[Path] = None
    jsonl: Optional[str] = None  # path, or "-" for stdout
    max_frames: Optional[int] = None
    retry_delays: Tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    read_timeout_s: float = 10.0


@dataclasses.dataclass
class CameraSummary:
    frames: int = 0
    camera_frames_dropped: int = 0
    seconds: float = 0.0
    latency_ms: Dict[str, float] = dataclasses.field(default_factory=dict)
    error: Optional[str] = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run(classifier: Any, source: Source, settings: CaptureSettings, options: CameraOptions) -> CameraSummary:
    """Classify every frame of a file/folder, or the newest frame of a live source, until it ends."""
    summary = CameraSummary()
    reader: Optional[LatestFrameReader] = None
    writer: Any = None
    video_size: Optional[Tuple[int, int]] = None
    latencies: List[float] = []
    if options.display:
        _check_display()
    jsonl = _open_outputs(options)  # before the source: a bad output path fails at once
    if source.live:
        reader = LatestFrameReader(
            lambda: open_capture(source, settings), source.uri, options.retry_delays
        ).start()

        def frames() -> Iterator[Tuple[int, np.ndarray]]:
            assert reader is not None
            while True:
                item = reader.read(options.read_timeout_s)
                if item is None:
                    return
                yield item

        frame_iter = frames()
    else:
        frame_iter = sequential_frames(source, settings)
    t_start = time.perf_counter()
    fps = 0.0
    try:
        for index, frame in frame_iter:
            t0 = time.perf_counter()
            batch = classifier.preprocess(frame)
            t1 = time.perf_counter()
            logits = classifier.infer(batch)
            t2 = time.perf_counter()
            pred = classifier.predictions(logits)[0]
            t3 = time.perf_counter()
            stage_ms = {"pre": 1e3 * (t1 - t0), "infer": 1e3 * (t2 - t1), "post": 1e3 * (t3 - t2)}
            latencies.append(1e3 * (t3 - t0))
            summary.frames += 1
            elapsed = time.perf_counter() - t_start
            fps = summary.frames / elapsed if elapsed > 0 else 0.0
            if jsonl is not None:
                record = {
                    "frame": index,
                    "time": round(time.time(), 3),
                    "label": pred.label,
                    "index": pred.index,
                    "score": round(pred.score, 5),
                    "topk": [{"index": i, "label": n, "score": round(s, 5)} for i, n, s in pred.topk],
                    "latency_ms": round(latencies[-1], 2),
                }
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
            if options.display or options.video_out or options.frames_out:
                shown = draw_overlay(frame, pred.topk, fps, stage_ms)
                if options.video_out:
                    if writer is None:
                        writer = _open_writer(options.video_out, shown.shape, settings.fps)
                        video_size = (shown.shape[1], shown.shape[0])
                    elif (shown.shape[1], shown.shape[0]) != video_size:
                        _warn_resized(video_size)
                        shown = cv2.resize(shown, video_size, interpolation=cv2.INTER_AREA)
                    writer.write(shown)
                if options.frames_out:
                    target = options.frames_out / f"frame_{index:06d}.jpg"
                    if not cv2.imwrite(str(target), shown):
                        raise EdgeSqueezeError(
                            f"cannot write {target}: check the folder's free space and permissions"
                        )
                if options.display:
                    cv2.imshow("edge-squeeze", shown)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
            if options.max_frames and summary.frames >= options.max_frames:
                break
    finally:
        summary.seconds = time.perf_counter() - t_start
        if reader is not None:
            summary.camera_frames_dropped = reader.dropped
            summary.error = reader.error
            reader.close()
        if writer is not None:
            writer.release()
        if jsonl is not None and jsonl is not sys.stdout:
            jsonl.close()
        if options.display:
            cv2.destroyAllWindows()
        if latencies:
            a = np.asarray(latencies)
            summary.latency_ms = {f"p{p}": float(np.percentile(a, p)) for p in (50, 90, 99)}
    return summary


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
    from .fileio import cannot_write

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
    from .fileio import cannot_write

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
