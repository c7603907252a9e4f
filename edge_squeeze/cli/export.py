"""``edge-squeeze export``: weights -> model.onnx + model.fp16.onnx, with ``--int8 --calib DIR`` the two
INT8 files, with ``--engine`` a TensorRT engine; ``export-report.json`` beside them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import add_flags, options_from
from ..runtimes.engine_sidecar import PRECISIONS
from ..runtimes.tensorrt_options import BuildOptions
from .args import labels_arg, print_table

HELP = "PyTorch weights -> ONNX (fp32), optionally INT8 Q/DQ and a TensorRT engine"
# the engine build reads the export's own --calib (implicit INT8 on the device) and its precision flag
ENGINE_SKIP = ("precision", "calib_dir", "calib_count")


def register(p: argparse.ArgumentParser) -> None:
    from ..export.pipeline import ExportOptions

    add_flags(p, ExportOptions)
    p.add_argument(
        "--engine", action="store_true", help="also build a TensorRT engine (needs TensorRT and a GPU)"
    )
    p.add_argument(
        "--engine-precision",
        choices=PRECISIONS,
        help="default: int8 with --int8 (from model.int8.onnx), else fp16 (from model.onnx)",
    )
    add_flags(p, BuildOptions, skip=ENGINE_SKIP)


def run(args: argparse.Namespace) -> int:
    from ..export.pipeline import ExportOptions, run_export
    from ..formats import FP32, INT8_QDQ, REPORT
    from .build_engine import build_from

    options = options_from(ExportOptions, args, labels=labels_arg(args.labels), progress=not args.quiet)
    report = run_export(options)
    print(f"wrote {args.out}/ ({', '.join(f.path for f in report.files.values())}, {REPORT})")
    if report.int8 is not None:
        int8 = report.int8
        print(
            f"int8: calibrated on {int8.calibration_images} images ({int8.qdq_method}); "
            f"float layers: {', '.join(int8.float_nodes)}; "
            f"top-1 agreement with fp32 on the calibration set {100 * int8.agreement:.1f}%"
        )
        if int8.sensitivity:
            print("per-layer sensitivity (one layer quantized, the rest float; most sensitive first):")
            print_table(
                [
                    (row["node"], f"{row['logit_mse']:.4f}", f"{100 * row['top1_agreement']:.1f}%")
                    for row in int8.sensitivity[:10]
                ],
                ("layer", "logit MSE", "agreement"),
            )
    if report.eval:
        rows = []
        for key, row in report.eval.items():
            agree = row.get("agreement_with_fp32")
            rows.append(
                (
                    key,
                    f"{100 * row['top1']:.1f}%",
                    f"{100 * row['top5']:.1f}%",
                    "" if agree is None else f"{100 * agree:.1f}%",
                )
            )
        print_table(rows, ("model", "top-1", "top-5", "agrees w/ fp32"))
    if args.engine:
        precision = args.engine_precision or ("int8" if args.int8 else "fp16")
        # INT8 builds from the Q/DQ model when one was written; everything else from the fp32 model
        name = INT8_QDQ if precision == "int8" and args.int8 else FP32
        build = options_from(
            BuildOptions,
            args,
            precision=precision,
            calib_dir=Path(args.calib) if args.calib else None,
            calib_count=args.calib_count,
        )
        build_from(Path(args.out) / name, build, exported=True)
    return 0
