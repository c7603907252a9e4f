"""``edge-squeeze compress ... --out model.esqz``: Deep Compression (pruning, k-means weight sharing,
Huffman coding) into a versioned ``.esqz`` file."""

from __future__ import annotations

import argparse

from ..config import ARCHS
from ..errors import EdgeSqueezeError
from ..options import add_flags, options_from
from .args import CALIB_COUNT, COUNT, labels_arg

HELP = "Deep Compression: pruning, k-means weight sharing, Huffman coding -> .esqz"


def register(p: argparse.ArgumentParser) -> None:
    from ..compress import CompressOptions

    p.add_argument("--arch", choices=ARCHS)
    p.add_argument(
        "--weights", required=True, help="'imagenet', a .pth, a checkpoint or the paper's .net file"
    )
    p.add_argument("--labels")
    p.add_argument("--num-classes", type=COUNT)
    add_flags(p, CompressOptions)
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


def run(args: argparse.Namespace) -> int:
    from ..compress import CompressOptions, write_esqz
    from ..models import load_model

    if not args.out.endswith(".esqz"):
        raise EdgeSqueezeError(f"--out must name an .esqz file, not {args.out}")
    options = options_from(CompressOptions, args)
    bundle = load_model(
        args.weights, arch=args.arch, labels=labels_arg(args.labels), num_classes=args.num_classes
    )
    calibration = None
    if args.calib:
        from ..export.calibration import CalibrationSet, select_calibration_images

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
