"""Classify a live camera, stream, video, folder or image (``edge-squeeze camera``), split by job:
``sources`` (URIs, GStreamer pipelines, the newest-frame reader), ``overlay``, ``outputs`` (window,
JSON lines, video and frame writers) and ``loop`` (Capture -> Classify -> Overlay -> Render)."""

from .loop import CameraSummary, run
from .outputs import CameraOptions
from .overlay import draw_overlay
from .sources import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    CaptureSettings,
    LatestFrameReader,
    Source,
    csi_pipeline,
    open_capture,
    opencv_has_gstreamer,
    parse_source,
    rtsp_pipeline,
    sequential_frames,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "CameraOptions",
    "CameraSummary",
    "CaptureSettings",
    "LatestFrameReader",
    "Source",
    "csi_pipeline",
    "draw_overlay",
    "open_capture",
    "opencv_has_gstreamer",
    "parse_source",
    "rtsp_pipeline",
    "run",
    "sequential_frames",
]
