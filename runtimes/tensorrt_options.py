"""What building a TensorRT engine takes (:class:`BuildOptions`) apart from what running one takes
(:class:`TensorRTOptions`): GPU-free, so the CLI, the runtime and the builder all import them.

The runner never reads a build setting itself: an ONNX model handed to the TensorRT backend goes to
the engine builder with ``TensorRTOptions.build``; an ``.engine`` file is run as it was built.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from edge_squeeze.options import IntRange, flag, internal, validate

from .engine_sidecar import PRECISIONS

INT8_MODES = ("auto", "explicit", "implicit")
CALIBRATORS = ("entropy", "minmax")
# a 4 GB Jetson (Orin Nano 4GB) shares that memory with the OS; 512 MiB is safe there
DEFAULT_WORKSPACE_MB = 512
# the calibrator's fixed batch; calibration gets a static profile of exactly this batch
CALIBRATION_BATCH = 8
CALIB_COUNT = IntRange(8)  # fewer calibration images generalise badly (export.calibration)


@dataclasses.dataclass
class BuildOptions:
    """How an engine is built from an ONNX model, on the device that will run it."""

    precision: Optional[str] = flag(
        "--precision",
        None,
        choices=PRECISIONS,
        help="engine precision (default: int8 for .int8.onnx, else fp16)",
    )
    profile: Optional[str] = flag(
        "--batch-profile",
        None,
        help="MIN,OPT,MAX batch, or MAX for 1,MAX,MAX (default 1,1,8; a static N,N,N on DLA, default 1,1,1)",
    )
    workspace_mb: int = flag(
        "--workspace",
        DEFAULT_WORKSPACE_MB,
        type=IntRange(16),
        help=f"builder workspace in MiB (default {DEFAULT_WORKSPACE_MB}: safe on 4 GB Jetsons)",
    )
    timing_cache: Optional[Path] = flag(
        "--timing-cache", None, type=Path, help="timing cache file, reused across builds"
    )
    dla_core: Optional[int] = flag(
        "--dla-core",
        None,
        type=IntRange(0),
        help="build for this DLA core (Xavier/Orin, TensorRT <= 10): fp16, or int8 calibrated with --calib; "
        "static batch; layers DLA cannot run fall back to the GPU",
    )
    optimization_level: Optional[int] = flag(
        "--optimization-level",
        None,
        type=IntRange(0, 5),
        help="builder optimization level 0..5 (TensorRT >= 8.6; 8.5 ignores it with a warning)",
    )
    int8_mode: str = flag(
        "--int8-mode",
        "auto",
        choices=INT8_MODES,
        help="explicit: from Q/DQ nodes; implicit: calibrator on the device (TensorRT <= 10)",
    )
    calibrator: str = flag(
        "--calibrator",
        "entropy",
        choices=CALIBRATORS,
        help="implicit INT8 calibrator (default entropy: IInt8EntropyCalibrator2)",
    )
    calib_dir: Optional[Path] = flag("--calib", None, type=Path, help="calibration images for implicit INT8")
    calib_count: Optional[int] = flag(
        "--calib-count", None, type=CALIB_COUNT, help="use a deterministic sample of N calibration images"
    )
    gpu_fallback: bool = internal(True, why="DLA builds always allow GPU fallback for layers DLA lacks")
    calib_batch: int = internal(CALIBRATION_BATCH, why="the calibrator's fixed batch")

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass
class TensorRTOptions:
    """How the TensorRT backend runs an engine; ``build`` is handed to the engine builder when the
    model is ONNX (an ``.engine`` file runs as it was built)."""

    cuda_graph: bool = flag(
        "--cuda-graph", False, action="store_true", help="TensorRT: replay batch-1 launches from a CUDA graph"
    )
    build: BuildOptions = internal(
        default_factory=BuildOptions, why="the builder's settings: BuildOptions declares their flags"
    )
