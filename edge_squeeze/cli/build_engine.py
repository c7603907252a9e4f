"""``edge-squeeze build-engine MODEL.onnx``: a TensorRT engine and its sidecar JSON, built on the device."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..errors import EdgeSqueezeError
from ..options import add_flags, options_from
from ..runtimes.tensorrt_options import BuildOptions

HELP = "build a TensorRT engine (+ sidecar JSON) from an ONNX model, on the device"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", help="model.onnx (fp32/fp16, or int8 with a calibrator) or model.int8.onnx (Q/DQ)"
    )
    p.add_argument(
        "--output", help="engine path (default: model.<precision>[.dla<N>].engine beside the model)"
    )
    add_flags(p, BuildOptions)


def build_from(
    model: Path, options: BuildOptions, out: Optional[Path] = None, exported: bool = False
) -> Path:
    """Build ``model``'s engine here, or one line saying why this machine cannot."""
    from ..export.tensorrt_build import build_engine
    from ..runtimes.tensorrt_backend import unavailable_reason

    if not model.is_file():
        raise EdgeSqueezeError(f"ONNX model not found: {model}")
    reason = unavailable_reason()
    if reason is not None:
        what = (
            "exported, but cannot build the TensorRT engine here"
            if exported
            else "cannot build a TensorRT engine here"
        )
        raise EdgeSqueezeError(f"{what}: {reason}")
    path, _ = build_engine(model, options, out)
    return path


def run(args: argparse.Namespace) -> int:
    build_from(Path(args.model), options_from(BuildOptions, args), Path(args.output) if args.output else None)
    return 0
