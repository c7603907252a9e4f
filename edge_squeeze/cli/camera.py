"""``edge-squeeze camera --model M --source URI``: classify a live camera, stream, video, folder or
image; overlay window, video or frames out, JSON lines."""

from __future__ import annotations

import argparse
import logging

from ..errors import EdgeSqueezeError
from ..options import add_flags, options_from
from .args import COUNT, IntRange, add_runtime_flags, classifier_from

HELP = "classify a live camera, stream, video, folder or image"
log = logging.getLogger("edge_squeeze")


def register(p: argparse.ArgumentParser) -> None:
    from ..camera import CameraOptions, CaptureSettings

    p.add_argument("--model", required=True)
    p.add_argument(
        "--source",
        required=True,
        help="csi://0, /dev/video0, v4l2:///dev/video0, 0, rtsp://..., a video, a folder or an image",
    )
    add_flags(p, CaptureSettings)
    p.add_argument("--retries", type=IntRange(0, 100), default=5, help="reconnect attempts before giving up")
    p.add_argument("--headless", action="store_true", help="no window; JSON lines to stdout unless --jsonl")
    add_flags(p, CameraOptions)
    p.add_argument("--topk", type=COUNT, default=3)
    add_runtime_flags(p)


def run(args: argparse.Namespace) -> int:
    from ..camera import CameraOptions, CaptureSettings, parse_source
    from ..camera import run as run_camera

    settings = options_from(CaptureSettings, args)
    source = parse_source(args.source, settings)
    clf = classifier_from(args)
    log.info("%r", clf)
    log.info("source %s (%s%s)", args.source, source.kind, ", newest frame only" if source.live else "")
    jsonl = (
        args.jsonl
        if args.jsonl
        else ("-" if args.headless and not (args.video_out or args.frames_out) else None)
    )
    options = options_from(
        CameraOptions,
        args,
        jsonl=jsonl,
        retry_delays=tuple(min(0.5 * 2**i, 8.0) for i in range(args.retries)),
        read_timeout_s=settings.open_timeout_s * 2,
    )
    try:
        summary = run_camera(clf, source, settings, options)
    except KeyboardInterrupt:
        log.info("interrupted; camera and writers released")
        return 130
    lat = summary.latency_ms
    log.info(
        "%d frames in %.1f s (%.1f FPS); latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms%s",
        summary.frames,
        summary.seconds,
        summary.fps,
        lat.get("p50", 0),
        lat.get("p90", 0),
        lat.get("p99", 0),
        f"; {summary.camera_frames_dropped} camera frames skipped (newest-frame policy)"
        if source.live
        else "",
    )
    if summary.error:
        raise EdgeSqueezeError(summary.error)
    return 0
