"""Classify a camera, stream or video with edge-squeeze: a short script to copy and adapt.

    python samples/camera_classify.py out/model.int8.onnx csi://0          # Jetson CSI camera
    python samples/camera_classify.py out/model.int8.onnx /dev/video0      # USB camera
    python samples/camera_classify.py out/model.int8.onnx rtsp://cam/live  # IP camera
    python samples/camera_classify.py out/model.int8.onnx clip.mp4 --headless

Live sources are read in a background thread that keeps only the newest frame, so the classifier
never falls behind the camera. Each prediction is printed as one JSON line, ready for a robot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2

from edge_squeeze import Classifier, EdgeSqueezeError
from edge_squeeze.camera import (
    CaptureSettings,
    LatestFrameReader,
    open_capture,
    parse_source,
    sequential_frames,
)


def frames(source, settings):
    """(frame number, BGR frame) pairs: every frame of a file, the newest frame of a live source."""
    if not source.live:
        yield from sequential_frames(source, settings)
        return
    reader = LatestFrameReader(lambda: open_capture(source, settings), source.uri).start()
    try:
        while (item := reader.read(timeout=10)) is not None:
            yield item
        if reader.error:
            raise EdgeSqueezeError(reader.error)
    finally:
        reader.close()  # releases the camera, also on Ctrl-C


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", help="model.onnx, model.int8.onnx or a TensorRT .engine")
    parser.add_argument("source", help="csi://0, /dev/video0, rtsp://..., a video file or a folder")
    parser.add_argument("--headless", action="store_true", help="no window")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()

    classifier = Classifier(args.model)  # backend="auto": TensorRT on a Jetson, else ONNX Runtime
    print(classifier, file=sys.stderr)
    settings = CaptureSettings(width=args.width, height=args.height)
    source = parse_source(args.source, settings)

    started, count = time.perf_counter(), 0
    for index, frame in frames(source, settings):
        t0 = time.perf_counter()
        result = classifier.predict(frame)  # BGR, as OpenCV delivers it
        latency_ms = 1000 * (time.perf_counter() - t0)
        count += 1
        print(
            json.dumps(
                {
                    "frame": index,
                    "label": result.label,
                    "score": round(result.score, 4),
                    "latency_ms": round(latency_ms, 2),
                }
            ),
            flush=True,
        )

        if not args.headless:
            fps = count / (time.perf_counter() - started)
            text = f"{result.label} {result.score:.0%}  {fps:.1f} FPS  {latency_ms:.1f} ms"
            cv2.putText(frame, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 255, 0), 2, cv2.LINE_AA)
            cv2.imshow("edge-squeeze", frame)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):  # q or Esc quits
                break

    elapsed = time.perf_counter() - started
    print(f"{count} frames in {elapsed:.1f} s ({count / max(elapsed, 1e-9):.1f} FPS)", file=sys.stderr)
    cv2.destroyAllWindows()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EdgeSqueezeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
