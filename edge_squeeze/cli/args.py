"""What several verbs share: the one-line usage error, validated number types, the runtime flags that
make a :class:`~edge_squeeze.Classifier`, logging and the table printer."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, NoReturn, Optional, Sequence

from ..options import FloatRange, IntRange, add_flags, options_from
from ..runtimes.onnxruntime_backend import OrtOptions
from ..runtimes.select import BACKENDS
from ..runtimes.tensorrt_options import CALIB_COUNT, BuildOptions, TensorRTOptions

log = logging.getLogger("edge_squeeze")

IMAGE_SIZE = IntRange(32, 2048)  # SqueezeNet needs 21 pixels (1.0) or 17 (1.1) to reach its classifier
COUNT = IntRange(1)
NON_NEGATIVE = IntRange(0)
__all__ = ["CALIB_COUNT", "COUNT", "IMAGE_SIZE", "NON_NEGATIVE", "FloatRange", "IntRange"]

# what the runtime flags fill in BuildOptions: an engine built from ONNX for predict/eval/bench/camera
RUNTIME_BUILD_FIELDS = ("precision", "profile", "dla_core")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``edge-squeeze: error: ...``, exit 2) like every other
    error, instead of the usage block."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        self.exit(
            2, f"edge-squeeze: error: {message} (see edge-squeeze {command + ' ' if command else ''}--help)\n"
        )


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("edge-squeeze: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
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


def labels_arg(path: Optional[str]) -> Any:
    if path is None:
        return None
    from ..labels import load_labels

    return load_labels(path)


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    """``--backend`` and each backend's run flags (ONNX Runtime's, TensorRT's, and the build flags an
    engine made from ONNX takes): what :func:`classifier_from` reads."""
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    add_flags(p, OrtOptions)
    add_flags(p, TensorRTOptions)
    add_flags(p, BuildOptions, only=RUNTIME_BUILD_FIELDS)


def runtime_options(args: argparse.Namespace) -> Any:
    """The backend options the runtime flags give (``runtimes.select.BackendOptions``)."""
    from ..runtimes.select import BackendOptions
    from ..runtimes.torch_backend import TorchOptions

    ort = options_from(OrtOptions, args)
    build = options_from(BuildOptions, args, only=RUNTIME_BUILD_FIELDS)
    return BackendOptions(
        tensorrt=options_from(TensorRTOptions, args, build=build),
        onnxruntime=ort,
        pytorch=TorchOptions(threads=ort.threads),
    )


def classifier_from(args: argparse.Namespace, model: Optional[str] = None) -> Any:
    """The :class:`~edge_squeeze.Classifier` the runtime flags describe, on ``model`` (default
    ``args.model``)."""
    from ..classifier import Classifier

    options = runtime_options(args)
    return Classifier(
        model or args.model,
        backend=args.backend,
        topk=getattr(args, "topk", 5),
        tensorrt=options.tensorrt,
        onnxruntime=options.onnxruntime,
        pytorch=options.pytorch,
    )
