"""``edge-squeeze info``: versions of everything edge-squeeze uses, and what is missing."""

from __future__ import annotations

import argparse
import json

HELP = "versions of everything edge-squeeze uses, and what is missing"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from ..environment import as_dict, report

    if args.json:
        print(json.dumps(as_dict(), indent=2))
        return 0
    width = max(len(k) for k, _ in report())
    for key, value in report():
        print(f"{key.ljust(width)}  {value}")
    return 0
