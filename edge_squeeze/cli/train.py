"""``edge-squeeze train --data DIR``: train or fine-tune on class subfolders; ``--nproc-per-node N``
reruns itself under torchrun."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Sequence

from ..errors import require
from ..options import add_flags, options_from
from .args import COUNT, NON_NEGATIVE, FloatRange, IntRange

HELP = "train or fine-tune SqueezeNet on class-per-subfolder images"
# the metaparameter flags, which fill TrainOptions.metaparameters (config.SqueezeNetConfig's names)
METAPARAMETERS = ("base_e", "incr_e", "pct_3x3", "freq", "squeeze_ratio")


def register(p: argparse.ArgumentParser) -> None:
    from ..training.options import TrainOptions

    add_flags(p, TrainOptions)
    p.add_argument("--base-e", type=COUNT, help="metaparameter: expand filters of the first Fire module")
    p.add_argument(
        "--incr-e", type=NON_NEGATIVE, help="metaparameter: expand filters added every --freq modules"
    )
    p.add_argument(
        "--pct-3x3", type=FloatRange(0, 1, True, True), help="metaparameter: share of 3x3 expand filters"
    )
    p.add_argument("--freq", type=COUNT, help="metaparameter: Fire modules per width increase")
    p.add_argument(
        "--squeeze-ratio",
        type=FloatRange(0, 1, low_open=True),
        help="metaparameter: squeeze / expand filters (SR)",
    )
    p.add_argument(
        "--nproc-per-node",
        type=IntRange(1, 1024),
        help="rerun under torchrun with this many processes on this machine (one per GPU); "
        "several machines: call torchrun yourself (README)",
    )
    p.add_argument(
        "--profile-data",
        action="store_true",
        help="print the images/s the training loader alone delivers, then stop",
    )


def torchrun_argv(argv: Sequence[str], processes: int) -> List[str]:
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


def run(args: argparse.Namespace) -> int:
    if args.nproc_per_node and "WORLD_SIZE" not in os.environ:
        require("torch", "distributed training")
        command = torchrun_argv(args.argv, args.nproc_per_node)
        print("running:", " ".join(command[1:]), file=sys.stderr)
        sys.stderr.flush()
        os.execv(sys.executable, command)
    from ..train import TrainOptions, profile_data, train

    meta = {k: getattr(args, k) for k in METAPARAMETERS if getattr(args, k) is not None}
    options = options_from(TrainOptions, args, metaparameters=meta, progress=not args.quiet)
    if args.profile_data:
        speed = profile_data(options)
        print(
            f"the training loader alone delivers {speed.images_per_s:.0f} images/s "
            f"({speed.images} images, {speed.workers} worker(s), batch {speed.batch}); "
            "training faster than that waits for data: add --workers"
        )
        return 0
    try:
        result = train(options)
    except KeyboardInterrupt:
        return 130
    if result.writes_files:
        print(
            f"best validation accuracy {100 * result.best_val_acc:.1f}%; wrote {args.out}/best.pt, "
            "last.pt, metrics.csv, learning_curve.png"
        )
    return 0
