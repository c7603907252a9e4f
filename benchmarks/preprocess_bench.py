"""Per-frame cost of edge_squeeze.preprocess (the one preprocessing definition).

    .venv/bin/python benchmarks/preprocess_bench.py

Writes benchmarks/results/preprocess.json: p50/p90/p99 per frame for a decoded 640x480 and a 1920x1080
BGR frame (ImageNet spec: 256 -> 224, area interpolation), and, for comparison, OpenCV's own
INTER_AREA resize of the same 640x480 frame, which the fast box filter replaces.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from edge_squeeze.bench import cpu_model, summarize
from edge_squeeze.preprocess import PreprocessSpec, preprocess

HERE = Path(__file__).resolve().parent


def time_ms(fn, seconds: float = 3.0) -> dict:
    for _ in range(50):
        fn()
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return summarize(samples)


def main() -> None:
    rng = np.random.default_rng(0)
    spec = PreprocessSpec()
    results = {
        "cpu": cpu_model(),
        "host": platform.node(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "spec": spec.to_dict(),
        "ms": {},
    }
    for w, h in ((640, 480), (1920, 1080)):
        # a smooth photo-like frame: gradients plus noise
        frame = np.clip(np.cumsum(rng.normal(0, 3, (h, w, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
        results["ms"][f"preprocess_{w}x{h}"] = time_ms(lambda f=frame: preprocess(f, spec))
    frame = np.clip(np.cumsum(rng.normal(0, 3, (480, 640, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    results["ms"]["cv2_inter_area_resize_only_640x480"] = time_ms(
        lambda: cv2.resize(frame, (341, 256), interpolation=cv2.INTER_AREA)
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "preprocess.json").write_text(json.dumps(results, indent=2))
    for name, stats in results["ms"].items():
        print(
            f"{name:40s} p50 {stats['median']:.3f} ms  p90 {stats['p90']:.3f} ms  p99 {stats['p99']:.3f} ms"
        )


if __name__ == "__main__":
    main()
