from __future__ import annotations

import json
import queue
import threading
import time

import cv2
import numpy as np
import pytest

from edge_squeeze.camera import (
    CameraOptions,
    CaptureSettings,
    LatestFrameReader,
    csi_pipeline,
    parse_source,
    rtsp_pipeline,
    run,
)
from edge_squeeze.cli import main
from edge_squeeze.errors import EdgeSqueezeError


def write_video(path, frames, fps=10):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


@pytest.fixture(scope="module")
def photo_video(shared, tmp_path_factory):
    """6 Samoyed frames then 4 show-jumping frames, 640x480, written with OpenCV."""
    samoyed = cv2.resize(cv2.imread(str(shared.photos / "samoyed.jpg")), (640, 480))
    horse = cv2.resize(cv2.imread(str(shared.photos / "show-jumping.jpg")), (640, 480))
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    write_video(path, [samoyed] * 6 + [horse] * 4)
    return path


def test_csi_pipeline_string():
    s = CaptureSettings(width=1920, height=1080, fps=30, flip=2)
    assert csi_pipeline(1, s) == (
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=(int)1920, height=(int)1080, "
        "framerate=(fraction)30/1, format=(string)NV12 ! nvvidconv flip-method=2 ! "
        "video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )
    src = parse_source("csi://1", s, gstreamer=True)
    assert src.kind == "csi" and src.live and src.api == cv2.CAP_GSTREAMER


def test_csi_without_gstreamer_is_a_clear_error():
    with pytest.raises(EdgeSqueezeError, match="JetPack's OpenCV"):
        parse_source("csi://0", gstreamer=False)


def test_rtsp_gstreamer_and_ffmpeg():
    s = CaptureSettings(latency_ms=100)
    url = "rtsp://10.0.0.2:8554/live"
    assert rtsp_pipeline(url, s) == (
        f"rtspsrc location={url} latency=100 protocols=tcp ! decodebin ! videoconvert ! "
        "video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )
    assert parse_source(url, s, gstreamer=True).target == rtsp_pipeline(url, s)
    ff = parse_source(url, s, gstreamer=False)
    assert ff.api == cv2.CAP_FFMPEG and ff.target == url and ff.live


def test_v4l2_forms_and_files(tmp_path):
    assert parse_source("/dev/video0").target == "/dev/video0"
    assert parse_source("v4l2:///dev/video2").target == "/dev/video2"
    assert parse_source("1").target == 1
    (tmp_path / "a.png").write_bytes(b"x")
    assert parse_source(str(tmp_path)).kind == "folder"
    assert parse_source(str(tmp_path / "a.png")).kind == "image"
    for bad in ("ftp://x", "csi://left", str(tmp_path / "missing.mp4"), "/dev/videoX"):
        with pytest.raises(EdgeSqueezeError):
            parse_source(bad, gstreamer=True)


class SteppedCamera:
    """A live camera whose frames the test releases: frame k holds the value k, and ``read`` blocks
    until the test has released one, as a camera blocks until its next exposure."""

    def __init__(self):
        self.frames = queue.Queue()
        self.count = 0
        self.stopping = threading.Event()

    def release_frames(self, n):
        for _ in range(n):
            self.count += 1
            self.frames.put(np.full((4, 4, 3), self.count, np.uint8))

    def read(self):
        while not self.stopping.is_set():
            try:
                return True, self.frames.get(timeout=0.01)
            except queue.Empty:
                continue
        return False, None

    def release(self):
        pass


def _wait_until_read(reader, n):
    """Until the reader thread has taken n frames from the camera (no fixed sleeps)."""
    with reader._cond:
        assert reader._cond.wait_for(lambda: reader._seq >= n, timeout=10), f"reader stuck at {reader._seq}"


def test_newest_frame_policy_when_inference_is_slower_than_the_camera():
    camera = SteppedCamera()
    reader = LatestFrameReader(lambda: camera, "fake", retry_delays=(0.01,)).start()
    try:
        camera.release_frames(10)  # ten frames arrive while "inference" is busy
        _wait_until_read(reader, 10)
        seq, frame = reader.read(timeout=2)
        assert (seq, int(frame[0, 0, 0])) == (10, 10)  # the newest, not the oldest queued
        assert reader.dropped == 9
        camera.release_frames(3)
        _wait_until_read(reader, 13)
        seq, frame = reader.read(timeout=2)
        assert (seq, int(frame[0, 0, 0])) == (13, 13) and reader.dropped == 11
        camera.release_frames(1)  # a consumer faster than the camera waits for the next frame
        assert reader.read(timeout=2)[0] == 14 and reader.dropped == 11
    finally:
        camera.stopping.set()
        reader.close()


class FlakyCamera:
    def __init__(self, good_frames):
        self.left = good_frames

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(0.001)
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self):
        pass


def test_lost_camera_retries_with_backoff_then_gives_up():
    opens = []

    def open_fn():
        opens.append(time.monotonic())
        return FlakyCamera(3) if len(opens) == 1 else None

    reader = LatestFrameReader(open_fn, "usb", retry_delays=(0.05, 0.1)).start()
    got = 0
    while reader.read(timeout=3) is not None:
        got += 1
    reader.close()
    assert got >= 1
    assert len(opens) == 3  # first open + two reconnect attempts
    assert reader.error and "giving up" in reader.error
    assert opens[2] - opens[1] >= 0.09  # backoff grows


def test_unopenable_live_source_fails_fast():
    start = time.monotonic()
    with pytest.raises(EdgeSqueezeError, match="cannot open"):
        LatestFrameReader(lambda: None, "rtsp://127.0.0.1:9/none").start()
    assert time.monotonic() - start < 1


def test_unreachable_rtsp_stream_fails_within_seconds(imagenet_onnx, capsys):
    start = time.monotonic()
    code = main(
        [
            "-q",
            "camera",
            "--model",
            str(imagenet_onnx),
            "--source",
            "rtsp://127.0.0.1:9/none",
            "--headless",
            "--open-timeout",
            "2",
        ]
    )
    assert code == 1 and time.monotonic() - start < 20
    assert "cannot open rtsp://127.0.0.1:9/none" in capsys.readouterr().err


def test_headless_video_classifies_every_frame(imagenet_onnx, photo_video, tmp_path):
    from edge_squeeze import Classifier

    out = tmp_path / "pred.jsonl"
    clf = Classifier(imagenet_onnx, topk=3)
    summary = run(
        clf,
        parse_source(str(photo_video)),
        CaptureSettings(),
        CameraOptions(jsonl=str(out), video_out=tmp_path / "overlay.avi"),
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.frames == 10 and [r["frame"] for r in rows] == list(range(1, 11))
    assert all(r["label"] == "Samoyed" for r in rows[:6])
    assert all(len(r["topk"]) == 3 and set(r) >= {"frame", "time", "label", "score", "topk"} for r in rows)
    assert summary.latency_ms["p50"] > 0
    cap = cv2.VideoCapture(str(tmp_path / "overlay.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10


def test_cli_camera_on_a_video_writes_json_lines_to_stdout(imagenet_onnx, photo_video, capsys):
    assert (
        main(["-q", "camera", "--model", str(imagenet_onnx), "--source", str(photo_video), "--headless"]) == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 10 and lines[0]["label"] == "Samoyed"


def test_corrupt_video_is_one_clear_error(imagenet_onnx, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert main(["-q", "camera", "--model", str(imagenet_onnx), "--source", str(bad), "--headless"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.mp4" in err[0]


def test_camera_thread_is_released_on_interrupt():
    camera = SteppedCamera()
    reader = LatestFrameReader(lambda: camera, "fake", retry_delays=(0.01,)).start()
    camera.release_frames(1)
    reader.read(timeout=2)
    camera.stopping.set()
    reader.close()
    assert not any(t.name == "camera:fake" and t.is_alive() for t in threading.enumerate())
