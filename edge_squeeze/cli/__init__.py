"""The ``edge-squeeze`` command line: one module per verb (``VERBS``), each registering its flags
and running itself; flags that fill an options dataclass come from that dataclass's fields
(:mod:`edge_squeeze.options`).

User errors print one line, ``edge-squeeze: error: ...``, and exit 1 without a traceback
(``EDGE_SQUEEZE_DEBUG=1`` shows it); a malformed command line is one line and exit 2. Heavy imports
(torch, TensorRT) happen inside each verb's ``run``.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Dict, Optional, Sequence

from .._version import __version__
from ..errors import EdgeSqueezeError
from .args import Parser, setup_logging

# the verbs, in the order ``--help`` lists them: name -> module in this package
VERBS: Dict[str, str] = {
    "info": "info",
    "models": "models",
    "export": "export",
    "predict": "predict",
    "eval": "eval",
    "build-engine": "build_engine",
    "selftest": "selftest",
    "train": "train",
    "compress": "compress",
    "bench": "bench",
    "camera": "camera",
}

# What the CLI reports as one line (``error_line``) instead of a traceback, unless EDGE_SQUEEZE_DEBUG is set.
USER_ERRORS = (EdgeSqueezeError, OSError, MemoryError)


def verb_module(name: str) -> ModuleType:
    """The module of verb ``name`` (it has ``HELP``, ``register(parser)`` and ``run(args)``)."""
    return importlib.import_module(f"{__name__}.{VERBS[name]}")


def build_parser() -> Parser:
    parser = Parser(prog="edge-squeeze", description="SqueezeNet from PyTorch to the edge.")
    parser.add_argument("--version", action="version", version=f"edge-squeeze {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in VERBS:
        module = verb_module(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.register(p)
        p.set_defaults(func=module.run)
    return parser


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
    setup_logging(args.verbose, args.quiet)
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
