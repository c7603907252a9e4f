"""``edge-squeeze eval MODEL --data DIR``: top-1 and top-5 on a labelled image folder."""

from __future__ import annotations

import argparse
import logging

from ..options import IntRange
from .args import add_runtime_flags, classifier_from

HELP = "top-1/top-5 accuracy on a labelled image folder"
log = logging.getLogger("edge_squeeze")


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("--data", required=True, help="class subfolders, or ImageNet wnid file names")
    p.add_argument("--batch-size", type=IntRange(1, 4096), default=32)
    p.add_argument("--json", action="store_true")
    add_runtime_flags(p)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate

    clf = classifier_from(args)
    log.info("%r", clf)
    acc = evaluate(clf.infer, args.data, clf.labels, clf.spec, batch_size=args.batch_size)
    if args.json:
        print(acc.to_json())
    else:
        print(f"{args.model}: top-1 {100 * acc.top1:.1f}%  top-5 {100 * acc.top5:.1f}%  on {acc.n} images")
    return 0
