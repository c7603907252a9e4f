"""``edge-squeeze selftest EXPORT --data DIR``: prove TensorRT on this device in one command."""

from __future__ import annotations

import argparse

from ..errors import EdgeSqueezeError
from ..options import add_flags, options_from

HELP = (
    "prove TensorRT here: build each precision, check accuracy against ONNX Runtime, time it, "
    "compare with trtexec; writes selftest.md and selftest.json"
)


def register(p: argparse.ArgumentParser) -> None:
    from ..selftest import SelftestOptions

    add_flags(p, SelftestOptions)


def run(args: argparse.Namespace) -> int:
    from ..selftest import SelftestOptions, run_selftest

    report = run_selftest(options_from(SelftestOptions, args))
    for row in report.engines:
        detail = "; ".join(row.get("problems", []))
        top1 = f" top-1 {100 * row['top1']:.1f}%" if "top1" in row else ""
        print(f"{row['precision']:>5}: {row['status']}{top1}{' (' + detail + ')' if detail else ''}")
    if not report.passed:
        raise EdgeSqueezeError(f"TensorRT selftest did not pass; report in {report.folder}/selftest.md")
    print(f"TensorRT selftest passed; report in {report.folder}/selftest.md")
    return 0
