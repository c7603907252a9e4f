"""``edge-squeeze models``: the SqueezeNet family's parameters, multiply-adds and fp32 size."""

from __future__ import annotations

import argparse
import json

from .args import COUNT, IMAGE_SIZE, print_table

HELP = "the SqueezeNet family: parameters, multiply-adds, fp32 size"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=IMAGE_SIZE, default=224)
    p.add_argument("--num-classes", type=COUNT, default=1000)
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from ..models import family_table

    rows = family_table(args.image_size, args.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"SqueezeNet family at {args.image_size}x{args.image_size}, {args.num_classes} classes")
    print_table(
        [
            (r["arch"], r["bypass"], f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f} M", f"{r['fp32_mb']:.2f}")
            for r in rows
        ],
        ("arch", "bypass", "params", "MACs", "fp32 MB"),
    )
    return 0
