"""The ``edge-squeeze`` command line.

User errors print one line, ``edge-squeeze: error: ...``, and exit 1 without a traceback
(``EDGE_SQUEEZE_DEBUG=1`` shows it). Heavy imports happen inside each command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence

from ._version import __version__
from .config import ARCHS, BYPASS_MODES, RECIPES
from .errors import EdgeSqueezeError, require
from .export.onnx_export import DEFAULT_OPSET
from .export.ranges import METHODS as CALIB_METHODS
from .export.tensorrt_plan import CALIBRATORS, INT8_MODES
from .runtimes.engine_sidecar import PRECISIONS
from .runtimes.select import BACKENDS, INT8_FILES

log = logging.getLogger("edge_squeeze")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("edge-squeeze: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)


def _print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def options_from(cls: Any, args: argparse.Namespace, **overrides: Any) -> Any:
    """An options dataclass from the arguments named as its fields (the parser's ``dest`` is the
    field name): a string becomes a ``Path`` where the field holds one, an argument left at None
    keeps the field's default, and ``overrides`` win."""
    values: Dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        if not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        if value is None and field.default is not None and field.default is not dataclasses.MISSING:
            continue
        if isinstance(value, str) and "Path" in str(field.type):
            value = Path(value)
        values[field.name] = value
    return cls(**values)


def _labels_arg(path: Optional[str]) -> Any:
    if path is None:
        return None
    from .labels import load_labels

    return load_labels(path)


# --- argument types: bad numbers are refused with the allowed range, before anything loads --------


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``edge-squeeze: error: ...``, exit 2) like every other
    error, instead of the usage block."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        self.exit(
            2, f"edge-squeeze: error: {message} (see edge-squeeze {command + ' ' if command else ''}--help)\n"
        )


def int_in(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def float_in(
    low: float, high: Optional[float] = None, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval between ``low`` and ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            top = "inf" if high is None else format(high, "g")
            raise argparse.ArgumentTypeError(f"must lie in {left}{low:g}, {top}{right}, got {text}")
        return value

    return parse


def batch_sizes(text: str) -> List[int]:
    """An argparse type: comma-separated batch sizes, each 1..1024."""
    parse = int_in(1, 1024)
    values = [parse(item.strip()) for item in text.split(",") if item.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one batch size, e.g. 1,8,32")
    return values


IMAGE_SIZE = int_in(32, 2048)  # SqueezeNet needs 21 pixels (1.0) or 17 (1.1) to reach its classifier
COUNT = int_in(1)
NON_NEGATIVE = int_in(0)
CALIB_COUNT = int_in(8)  # fewer calibration images generalise badly (export.calibration)


# --- info / models -----------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from .environment import as_dict, report

    if args.json:
        print(json.dumps(as_dict(), indent=2))
        return 0
    width = max(len(k) for k, _ in report())
    for key, value in report():
        print(f"{key.ljust(width)}  {value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import family_table

    rows = family_table(args.image_size, args.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"SqueezeNet family at {args.image_size}x{args.image_size}, {args.num_classes} classes")
    _print_table(
        [
            (r["arch"], r["bypass"], f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f} M", f"{r['fp32_mb']:.2f}")
            for r in rows
        ],
        ("arch", "bypass", "params", "MACs", "fp32 MB"),
    )
    return 0


# --- export ------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from .export.pipeline import ExportOptions, run_export

    options = options_from(ExportOptions, args, labels=_labels_arg(args.labels), progress=not args.quiet)
    report = run_export(options)
    print(f"wrote {args.out}/ ({', '.join(f['path'] for f in report['files'].values())}, export-report.json)")
    if "int8" in report:
        last = report["int8"]["steps"][-1]
        print(
            f"int8: calibrated on {report['int8']['calibration']['images']} images "
            f"({report['int8']['qdq_file']['calibration_method']}); float layers: {', '.join(report['int8']['float_nodes'])}; "
            f"top-1 agreement with fp32 on the calibration set {100 * last['top1_agreement']:.1f}%"
        )
        if "sensitivity" in report["int8"]:
            print("per-layer sensitivity (one layer quantized, the rest float; most sensitive first):")
            _print_table(
                [
                    (row["node"], f"{row['logit_mse']:.4f}", f"{100 * row['top1_agreement']:.1f}%")
                    for row in report["int8"]["sensitivity"][:10]
                ],
                ("layer", "logit MSE", "agreement"),
            )
    if "eval" in report:
        ev = report["eval"]
        rows = []
        for key in ("pytorch", "onnx_fp32", "onnx_int8", "onnx_int8_cpu"):
            if key in ev:
                agree = ev[key].get("agreement_with_fp32")
                rows.append(
                    (
                        key,
                        f"{100 * ev[key]['top1']:.1f}%",
                        f"{100 * ev[key]['top5']:.1f}%",
                        "" if agree is None else f"{100 * agree:.1f}%",
                    )
                )
        _print_table(rows, ("model", "top-1", "top-5", "agrees w/ fp32"))
    if args.engine:
        precision = args.engine_precision or ("int8" if args.int8 else "fp16")
        # INT8 builds from the Q/DQ model when one was written; everything else from the fp32 model
        name = "model.int8.onnx" if precision == "int8" and args.int8 else "model.onnx"
        _build_engine(Path(args.out) / name, precision, args, exported=True)
    return 0


# --- predict / eval ----------------------------------------------------------------------------


def _tensorrt_options(args: argparse.Namespace) -> Any:
    from .runtimes.tensorrt_backend import TensorRTOptions

    return TensorRTOptions(
        precision=getattr(args, "precision", None),
        profile=getattr(args, "batch_profile", None),
        dla_core=getattr(args, "dla_core", None),
        cuda_graph=getattr(args, "cuda_graph", False),
    )


def _classifier(args: argparse.Namespace) -> Any:
    from .classifier import Classifier
    from .runtimes.onnxruntime_backend import OrtOptions

    return Classifier(
        args.model,
        backend=args.backend,
        threads=args.threads,
        topk=getattr(args, "topk", 5),
        tensorrt=_tensorrt_options(args),
        onnxruntime=OrtOptions(threads=args.threads, int8_file=args.int8_file),
    )


def cmd_predict(args: argparse.Namespace) -> int:
    clf = _classifier(args)
    log.info("%r", clf)
    failures = 0
    results = []
    for image in args.images:
        try:
            pred = clf.predict(image)
        except EdgeSqueezeError as exc:
            if os.environ.get("EDGE_SQUEEZE_DEBUG"):
                raise
            print(f"edge-squeeze: error: {error_line(exc)}", file=sys.stderr)  # the other images still run
            failures += 1
            continue
        results.append({"image": image, **pred.to_dict()})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for res in results:
            print(res["image"])
            for rank, top in enumerate(res["topk"], 1):
                print(f"  {rank}. {top['label']:<30} {100 * top['score']:5.1f}%  (class {top['index']})")
    return 1 if failures else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    clf = _classifier(args)
    log.info("%r", clf)
    acc = evaluate(clf.infer, args.data, clf.labels, clf.spec, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(acc.to_dict()))
    else:
        print(f"{args.model}: top-1 {100 * acc.top1:.1f}%  top-5 {100 * acc.top5:.1f}%  on {acc.n} images")
    return 0


# --- bench -------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import (
        BenchOptions,
        bench_model,
        format_table,
        load_frames,
        machine_info,
        write_csv,
        write_json,
        write_plot,
    )

    options = options_from(
        BenchOptions,
        args,
        batches=args.batch,
        tensorrt=_tensorrt_options(args),
    )
    if options.tensorrt.profile is None and max(options.batches) > 8:
        # an engine built from ONNX for this run covers its largest batch in one launch
        options.tensorrt.profile = f"1,1,{max(options.batches)}"
    frames = load_frames(options.data)
    rows = []
    for model in args.models:
        rows.extend(bench_model(Path(model), options, frames))
    machine = machine_info()
    print(
        f"{machine['cpu']} ({machine['cores']} cores), onnxruntime {machine.get('onnxruntime', '?').split()[0]}"
    )
    print(format_table(rows))
    if args.json:
        write_json(rows, Path(args.json), machine)
    if args.csv:
        write_csv(rows, Path(args.csv))
    if args.plot:
        write_plot(rows, Path(args.plot))
    return 0


# --- camera ------------------------------------------------------------------------------------


def cmd_camera(args: argparse.Namespace) -> int:
    from .camera import CameraOptions, CaptureSettings, parse_source, run

    settings = options_from(CaptureSettings, args)
    source = parse_source(args.source, settings)
    clf = _classifier(args)
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
        read_timeout_s=args.open_timeout_s * 2,
    )
    try:
        summary = run(clf, source, settings, options)
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


# --- build-engine ------------------------------------------------------------------------------


def _build_engine(model: Path, precision: str, args: argparse.Namespace, exported: bool = False) -> Path:
    from .export.tensorrt_build import build_engine
    from .export.tensorrt_plan import BuildOptions, resolve_profile
    from .runtimes.tensorrt_backend import unavailable_reason

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
    options = options_from(
        BuildOptions,
        args,
        precision=precision,
        profile=resolve_profile(args.batch_profile, args.dla_core is not None),
        calib_dir=Path(args.calib) if args.calib else None,
    )
    out = Path(args.output) if getattr(args, "output", None) else None
    path, _ = build_engine(model, options, out)
    return path


def cmd_build_engine(args: argparse.Namespace) -> int:
    from .runtimes.tensorrt_backend import default_precision

    model = Path(args.model)
    _build_engine(model, args.precision or default_precision(model), args)
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from .export.tensorrt_plan import iter_precisions
    from .selftest import SelftestOptions, run_selftest

    report = run_selftest(
        SelftestOptions(
            export_dir=Path(args.export_dir),
            data=Path(args.data),
            precisions=tuple(iter_precisions(args.precision)),
            out=Path(args.out) if args.out else None,
            iterations=args.iterations,
            dla_core=args.dla_core,
            calib=Path(args.calib) if args.calib else None,
        )
    )
    folder = Path(args.out) if args.out else Path(args.export_dir) / "selftest"
    for row in report["engines"]:
        detail = "; ".join(row.get("problems", []))
        top1 = f" top-1 {100 * row['top1']:.1f}%" if "top1" in row else ""
        print(f"{row['precision']:>5}: {row['status']}{top1}{' (' + detail + ')' if detail else ''}")
    if not report["passed"]:
        raise EdgeSqueezeError(f"TensorRT selftest did not pass; report in {folder}/selftest.md")
    print(f"TensorRT selftest passed; report in {folder}/selftest.md")
    return 0


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    """Options for building a TensorRT engine (build-engine, export --engine)."""
    p.add_argument(
        "--batch-profile",
        help="MIN,OPT,MAX batch, or MAX for 1,MAX,MAX (default 1,1,8; a static N,N,N on DLA, default 1,1,1)",
    )
    p.add_argument(
        "--workspace",
        dest="workspace_mb",
        type=int_in(16),
        help="builder workspace in MiB (default 512: safe on 4 GB Jetsons)",
    )
    p.add_argument("--timing-cache", help="timing cache file, reused across builds")
    p.add_argument(
        "--dla-core",
        type=NON_NEGATIVE,
        help="build for this DLA core (Xavier/Orin, TensorRT <= 10): fp16, or int8 calibrated with --calib; "
        "static batch; layers DLA cannot run fall back to the GPU",
    )
    p.add_argument(
        "--optimization-level",
        type=int,
        choices=range(6),
        help="builder optimization level (TensorRT >= 8.6; 8.5 ignores it with a warning)",
    )
    p.add_argument(
        "--int8-mode",
        choices=INT8_MODES,
        default="auto",
        help="explicit: from Q/DQ nodes; implicit: calibrator on the device (TensorRT <= 10)",
    )
    p.add_argument(
        "--calibrator",
        choices=CALIBRATORS,
        default="entropy",
        help="implicit INT8 calibrator (default entropy: IInt8EntropyCalibrator2)",
    )


# --- train -------------------------------------------------------------------------------------


def _torchrun_argv(argv: Sequence[str], processes: int) -> List[str]:
    """The command that reruns this one under ``torchrun`` on ``processes`` local processes (one
    machine; ``--standalone`` picks a free rendezvous port), without ``--nproc-per-node``."""
    rest: List[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc-per-node":
            skip = True
        elif not item.startswith("--nproc-per-node="):
            rest.append(item)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "edge_squeeze.cli",
        *rest,
    ]


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc_per_node and "WORLD_SIZE" not in os.environ:
        require("torch", "distributed training")
        command = _torchrun_argv(args.argv, args.nproc_per_node)
        print("running:", " ".join(command[1:]), file=sys.stderr)
        sys.stderr.flush()
        os.execv(sys.executable, command)
    from .train import TrainOptions, profile_data, train

    meta = {
        k: getattr(args, k)
        for k in ("base_e", "incr_e", "pct_3x3", "freq", "squeeze_ratio")
        if getattr(args, k) is not None
    }
    options = options_from(TrainOptions, args, metaparameters=meta, progress=not args.quiet)
    if args.profile_data:
        numbers = profile_data(options)
        print(
            f"the training loader alone delivers {numbers['images_per_s']:.0f} images/s "
            f"({numbers['images']} images, {numbers['workers']} worker(s), batch {numbers['batch']}); "
            "training faster than that waits for data: add --workers"
        )
        return 0
    try:
        result = train(options)
    except KeyboardInterrupt:
        return 130
    if result["writes_files"]:
        print(
            f"best validation accuracy {100 * result['best_val_acc']:.1f}%; wrote {args.out}/best.pt, "
            "last.pt, metrics.csv, learning_curve.png"
        )
    return 0


# --- compress ----------------------------------------------------------------------------------


def cmd_compress(args: argparse.Namespace) -> int:
    from .compress import CompressOptions, write_esqz
    from .weights import load_model

    if not args.out.endswith(".esqz"):
        raise EdgeSqueezeError(f"--out must name an .esqz file, not {args.out}")
    layer_bits = []
    for item in args.layer_bits or []:
        prefix, _, bits = item.partition("=")
        if not prefix or not bits.isdigit():
            raise EdgeSqueezeError(f"--layer-bits takes PREFIX=BITS (e.g. classifier=4), not {item!r}")
        layer_bits.append((prefix, int(bits)))
    options = options_from(CompressOptions, args, layer_bits=tuple(layer_bits))
    if not 0.0 <= options.sparsity < 1.0 or not all(
        2 <= b <= 8 for b in [options.bits, *dict(layer_bits).values()]
    ):
        raise EdgeSqueezeError("--sparsity must be in [0, 1) and --bits (and --layer-bits) in 2..8")
    bundle = load_model(
        args.weights, arch=args.arch, labels=_labels_arg(args.labels), num_classes=args.num_classes
    )
    calibration = None
    if args.calib:
        from .export.calibration import CalibrationSet, select_calibration_images

        paths = select_calibration_images(args.calib, args.calib_count)
        calibration = CalibrationSet(paths, bundle.preprocess, progress=not args.quiet).data
    fp32 = sum(v.numel() for v in bundle.model.state_dict().values()) * 4
    size = write_esqz(
        args.out,
        bundle.model.state_dict(),
        bundle.config.to_dict(),
        bundle.labels,
        bundle.preprocess,
        options,
        model=bundle.model,
        calibration=calibration,
        progress=not args.quiet,
        max_bytes=args.max_bytes,
    )
    print(f"wrote {args.out}: {size:,} bytes ({fp32 / size:.1f}x smaller than fp32's {fp32:,})")
    return 0


# --- parser ------------------------------------------------------------------------------------


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
    )
    p.add_argument("--precision", choices=PRECISIONS, help="engine precision when TensorRT builds one")
    p.add_argument(
        "--threads",
        type=NON_NEGATIVE,
        default=0,
        help="CPU threads (0: the runtime's default; at most the cores)",
    )
    p.add_argument(
        "--int8-file",
        choices=INT8_FILES,
        default="auto",
        help="ONNX Runtime on a CPU: which INT8 file of an export runs (auto: the faster on x86, the CPU file elsewhere)",
    )
    p.add_argument("--batch-profile", help="TensorRT: MIN,OPT,MAX batch of an engine built from ONNX")
    p.add_argument("--dla-core", type=NON_NEGATIVE, help="TensorRT: build and run on this DLA core")
    p.add_argument(
        "--cuda-graph", action="store_true", help="TensorRT: replay batch-1 launches from a CUDA graph"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge-squeeze", description="SqueezeNet from PyTorch to the edge.")
    parser.add_argument("--version", action="version", version=f"edge-squeeze {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: Dict[str, Callable[[argparse.Namespace], int]] = {}

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        commands[name] = func
        return p

    p = add("info", cmd_info, "versions of everything edge-squeeze uses, and what is missing")
    p.add_argument("--json", action="store_true")

    p = add("models", cmd_models, "the SqueezeNet family: parameters, multiply-adds, fp32 size")
    p.add_argument("--image-size", type=IMAGE_SIZE, default=224)
    p.add_argument("--num-classes", type=COUNT, default=1000)
    p.add_argument("--json", action="store_true")

    p = add(
        "export", cmd_export, "PyTorch weights -> ONNX (fp32), optionally INT8 Q/DQ and a TensorRT engine"
    )
    p.add_argument(
        "--arch",
        choices=ARCHS,
        help="architecture (a training checkpoint names its own)",
    )
    p.add_argument("--weights", required=True, help="'imagenet', a state-dict .pth, or a training checkpoint")
    p.add_argument("--labels", help="class names: one a line, or synset_words.txt form (wnid name, ...)")
    p.add_argument("--num-classes", type=COUNT)
    p.add_argument(
        "--image-size", type=IMAGE_SIZE, help="input size (default: the weights' own, 224 for ImageNet)"
    )
    p.add_argument("--opset", type=int_in(13, 21), default=DEFAULT_OPSET)
    p.add_argument("--simplify", action="store_true", help="run onnxsim on the fp32 model")
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.add_argument("--int8", action="store_true", help="also write INT8 Q/DQ models (needs --calib)")
    p.add_argument("--calib", help="folder of calibration images (searched recursively)")
    p.add_argument(
        "--calib-count", type=CALIB_COUNT, help="use a deterministic sample of N calibration images"
    )
    p.add_argument(
        "--calib-method",
        choices=CALIB_METHODS,
        help="activation ranges (default: for each INT8 file, the method whose model agrees best with fp32 "
        "on the calibration images)",
    )
    p.add_argument(
        "--report", dest="sensitivity_report", action="store_true", help="per-layer INT8 sensitivity report"
    )
    p.add_argument(
        "--eval", dest="eval_data", help="labelled image folder: record fp32 vs int8 accuracy in the report"
    )
    p.add_argument(
        "--engine", action="store_true", help="also build a TensorRT engine (needs TensorRT and a GPU)"
    )
    p.add_argument(
        "--engine-precision",
        choices=PRECISIONS,
        help="default: int8 with --int8 (from model.int8.onnx), else fp16 (from model.onnx)",
    )
    _add_engine_args(p)

    p = add("predict", cmd_predict, "classify image files with a model")
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--topk", type=COUNT, default=5)
    p.add_argument("--json", action="store_true")
    _add_runtime_args(p)

    p = add("eval", cmd_eval, "top-1/top-5 accuracy on a labelled image folder")
    p.add_argument("model")
    p.add_argument("--data", required=True, help="class subfolders, or ImageNet wnid file names")
    p.add_argument("--batch-size", type=int_in(1, 4096), default=32)
    p.add_argument("--json", action="store_true")
    _add_runtime_args(p)

    p = add(
        "build-engine",
        cmd_build_engine,
        "build a TensorRT engine (+ sidecar JSON) from an ONNX model, on the device",
    )
    p.add_argument(
        "model", help="model.onnx (fp32/fp16, or int8 with a calibrator) or model.int8.onnx (Q/DQ)"
    )
    p.add_argument("--precision", choices=PRECISIONS, help="default: int8 for .int8.onnx, else fp16")
    p.add_argument("--calib", help="calibration images for implicit INT8")
    p.add_argument("--calib-count", type=CALIB_COUNT)
    p.add_argument(
        "--output", help="engine path (default: model.<precision>[.dla<N>].engine beside the model)"
    )
    _add_engine_args(p)

    p = add(
        "selftest",
        cmd_selftest,
        "prove TensorRT here: build each precision, check accuracy against ONNX Runtime, time it, "
        "compare with trtexec; writes selftest.md and selftest.json",
    )
    p.add_argument("export_dir", help="an edge-squeeze export folder (model.onnx, model.int8.onnx)")
    p.add_argument("--data", required=True, help="labelled images (class subfolders or ImageNet file names)")
    p.add_argument("--precision", default="fp32,fp16,int8", help="engines to build (default fp32,fp16,int8)")
    p.add_argument("--out", help="report folder (default EXPORT_DIR/selftest)")
    p.add_argument("--iterations", type=COUNT, default=300, help="batch-1 calls timed per configuration")
    p.add_argument("--dla-core", type=NON_NEGATIVE, help="build the engines for this DLA core")
    p.add_argument(
        "--calib", help="calibration images: INT8 calibrated on the device instead of the Q/DQ model"
    )

    p = add("train", cmd_train, "train or fine-tune SqueezeNet on class-per-subfolder images")
    p.add_argument("--data", required=True, help="DIR/<class>/*.jpg, or DIR/train/<class> + DIR/val/<class>")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--arch", default=ARCHS[0], choices=ARCHS)
    p.add_argument("--bypass", default="none", choices=BYPASS_MODES)
    p.add_argument("--base-e", type=COUNT, help="metaparameter: expand filters of the first Fire module")
    p.add_argument(
        "--incr-e", type=NON_NEGATIVE, help="metaparameter: expand filters added every --freq modules"
    )
    p.add_argument(
        "--pct-3x3", type=float_in(0, 1, True, True), help="metaparameter: share of 3x3 expand filters"
    )
    p.add_argument("--freq", type=COUNT, help="metaparameter: Fire modules per width increase")
    p.add_argument(
        "--squeeze-ratio",
        type=float_in(0, 1, low_open=True),
        help="metaparameter: squeeze / expand filters (SR)",
    )
    p.add_argument(
        "--recipe",
        default="seed",
        choices=tuple(RECIPES),
        help="seed: Adam, lr 0.001, 20 epochs (default); paper: the reference Caffe solver (SGD, poly decay)",
    )
    p.add_argument("--epochs", type=COUNT, help="default: the recipe's (seed 20, paper 68)")
    p.add_argument(
        "--lr",
        type=float_in(0, 10, low_open=True),
        help="learning rate for the global batch (default: the recipe's, scaled to --batch-size for paper)",
    )
    p.add_argument(
        "--batch-size",
        type=int_in(1, 1 << 20),
        help="GLOBAL batch per optimizer step, over all processes and --accumulate steps "
        "(default: the recipe's, seed 32, paper 512)",
    )
    p.add_argument(
        "--accumulate",
        type=COUNT,
        default=1,
        help="gradient-accumulation steps per optimizer step (Caffe's iter_size)",
    )
    p.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (autocast) on CUDA")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster on tensor cores)")
    p.add_argument(
        "--nproc-per-node",
        type=int_in(1, 1024),
        help="rerun under torchrun with this many processes on this machine (one per GPU); "
        "several machines: call torchrun yourself (README)",
    )
    p.add_argument(
        "--profile-data",
        action="store_true",
        help="print the images/s the training loader alone delivers, then stop",
    )
    p.add_argument("--image-size", type=IMAGE_SIZE, default=224)
    p.add_argument(
        "--workers",
        type=int_in(0, 64),
        default=2,
        help="data-loading processes per training process (default 2); see --profile-data",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pretrained", help="'imagenet' or a .pth: start from it with a new head for your classes"
    )
    p.add_argument("--freeze-features", action="store_true", help="train only the classifier head")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")

    p = add(
        "compress", cmd_compress, "Deep Compression: pruning, k-means weight sharing, Huffman coding -> .esqz"
    )
    p.add_argument("--arch", choices=ARCHS)
    p.add_argument(
        "--weights", required=True, help="'imagenet', a .pth, a checkpoint or the paper's .net file"
    )
    p.add_argument("--labels")
    p.add_argument("--num-classes", type=COUNT)
    p.add_argument(
        "--sparsity",
        type=float_in(0, 1, high_open=True),
        default=0.0,
        help="share of each layer's weights pruned (default 0)",
    )
    p.add_argument("--bits", type=int_in(2, 8), default=8, help="codebook bits per layer (default 8)")
    p.add_argument(
        "--layer-bits",
        action="append",
        metavar="PREFIX=BITS",
        help="other bits for layers whose name starts with PREFIX, e.g. classifier=4 (repeatable)",
    )
    p.add_argument(
        "--calib",
        help="calibration images: choose each code to keep its layer's outputs on them (no retraining)",
    )
    p.add_argument(
        "--calib-count",
        type=CALIB_COUNT,
        default=200,
        help="calibration images to use (default 200; more cost time and memory in proportion)",
    )
    p.add_argument(
        "--max-bytes",
        type=COUNT,
        help="size budget in bytes. With --calib: the grid per layer (k-means of at most --bits bits, or "
        "a uniform grid that fits that codebook) that least changes the outputs on the calibration "
        "images, measured layer by layer (minutes); without: lower the bits where a bit saves most "
        "bytes until the file fits",
    )
    p.add_argument("--out", required=True, help="output .esqz file")

    p = add("bench", cmd_bench, "latency and throughput per stage, with percentiles")
    p.add_argument("models", nargs="+", help=".onnx, .int8.onnx, .engine or checkpoint files")
    p.add_argument("--batch", type=batch_sizes, default=[1], help="batch sizes, comma-separated (default 1)")
    p.add_argument(
        "--warmup",
        dest="warmup_s",
        type=float_in(0, 3600),
        default=1.0,
        help="seconds of warm-up, not measured",
    )
    p.add_argument(
        "--duration",
        dest="duration_s",
        type=float_in(0, 3600, low_open=True),
        default=3.0,
        help="seconds measured per configuration",
    )
    p.add_argument("--iterations", type=COUNT, help="measure exactly N iterations instead of --duration")
    p.add_argument("--data", help="labelled images: real inputs and a top-1 column")
    p.add_argument("--json", help="write rows (and the machine) as JSON")
    p.add_argument("--csv", help="write rows as CSV")
    p.add_argument("--plot", help="write latency and throughput plots (PNG)")
    _add_runtime_args(p)

    p = add("camera", cmd_camera, "classify a live camera, stream, video, folder or image")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--source",
        required=True,
        help="csi://0, /dev/video0, v4l2:///dev/video0, 0, rtsp://..., a video, a folder or an image",
    )
    p.add_argument("--width", type=int_in(16, 8192), default=1280)
    p.add_argument("--height", type=int_in(16, 8192), default=720)
    p.add_argument("--fps", type=int_in(1, 1000), default=30)
    p.add_argument("--flip", type=int_in(0, 7), default=0, help="CSI flip-method (0 none, 2 rotate 180)")
    p.add_argument(
        "--latency", dest="latency_ms", type=NON_NEGATIVE, default=200, help="RTSP latency in ms (GStreamer)"
    )
    p.add_argument(
        "--open-timeout",
        dest="open_timeout_s",
        type=float_in(0, 600, low_open=True),
        default=5.0,
        help="seconds to wait for a source to open",
    )
    p.add_argument("--retries", type=int_in(0, 100), default=5, help="reconnect attempts before giving up")
    p.add_argument("--display", action="store_true", help="show a window with the overlay")
    p.add_argument("--headless", action="store_true", help="no window; JSON lines to stdout unless --jsonl")
    p.add_argument("--video-out", help="write the overlaid video here (.avi MJPG or .mp4)")
    p.add_argument("--frames-out", help="write overlaid frames as JPEGs into this folder")
    p.add_argument("--jsonl", help="predictions as JSON lines to this file ('-' for stdout)")
    p.add_argument("--max-frames", type=COUNT)
    p.add_argument("--topk", type=COUNT, default=3)
    _add_runtime_args(p)

    parser.set_defaults(commands=commands)
    return parser


# What the CLI reports as one line (``error_line``) instead of a traceback, unless EDGE_SQUEEZE_DEBUG is set.
USER_ERRORS = (EdgeSqueezeError, OSError, MemoryError)


def error_line(exc: BaseException) -> str:
    """The one line a user error prints. Operating-system errors name the file and what went wrong
    (the modules turn the ones they expect into clearer lines; this catches the rest)."""
    if isinstance(exc, MemoryError):
        return "out of memory (a smaller --batch-size or image, or fewer calibration images, needs less)"
    if isinstance(exc, OSError) and not isinstance(exc, EdgeSqueezeError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc} (check the path and its permissions)"
    return " ".join(str(exc).split())  # one line, whatever the message held


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    _setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if os.environ.get("EDGE_SQUEEZE_DEBUG"):
            raise
        print(f"edge-squeeze: error: {error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-squeeze: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
