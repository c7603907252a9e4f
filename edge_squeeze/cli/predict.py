"""``edge-squeeze predict MODEL IMAGE...``: the top-k classes of each image, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ..errors import EdgeSqueezeError
from .args import COUNT, add_runtime_flags, classifier_from

HELP = "classify image files with a model"
log = logging.getLogger("edge_squeeze")


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--topk", type=COUNT, default=5)
    p.add_argument("--json", action="store_true")
    add_runtime_flags(p)


def run(args: argparse.Namespace) -> int:
    from . import error_line

    clf = classifier_from(args)
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
