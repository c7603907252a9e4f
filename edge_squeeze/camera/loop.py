"""The camera loop: Capture -> Classify -> Overlay -> Render until the source ends."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..errors import EdgeSqueezeError
from .outputs import CameraOptions, _check_display, _open_outputs, _open_writer, _warn_resized
from .overlay import draw_overlay
from .sources import CaptureSettings, LatestFrameReader, Source, open_capture, sequential_frames

log = logging.getLogger("edge_squeeze")


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
