"""The paper's bypass comparison: SqueezeNet without bypass, with simple bypass and with complex
bypass, trained with the same recipe and seed on one folder dataset, as one table.

    # generated toy data (10 classes of noisy oriented stripes, made here), one process:
    python benchmarks/bypass_experiment.py --epochs 12 --per-class 60
    # any class-per-subfolder dataset, N GPUs (the README's "Training on several GPUs"):
    torchrun --standalone --nproc-per-node 8 benchmarks/bypass_experiment.py \
        --data /data/imagenet --recipe paper --image-size 224 --workers 12 --amp bf16 --channels-last

Writes bypass.json and bypass.md into --out (accuracy, parameters, MACs at the image size); under
torchrun every process trains its share and the first writes the table. The paper's +2.9 % top-1 for
simple bypass is an ImageNet result and is not expected to transfer to the toy data as such.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from edge_squeeze.config import RECIPES
from edge_squeeze.distributed import init, shutdown, world_from_env
from edge_squeeze.fileio import write_text_atomic
from edge_squeeze.models import SqueezeNet, config_for, model_cost
from edge_squeeze.train import TrainOptions, find_splits, resolved, train

HERE = Path(__file__).resolve().parent


def make_dataset(root: Path, classes: int = 10, per_class: int = 60, size: int = 80, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for split, count in (("train", per_class), ("val", per_class // 3)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                angle = np.pi * c / classes + rng.normal(0, 0.05)
                freq = rng.uniform(0.2, 0.35)
                wave = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
                colour = rng.uniform(60, 255, 3)
                img = 0.5 * (wave[..., None] + 1) * colour + rng.normal(0, 40, (size, size, 3))
                cv2.imwrite(str(folder / f"{i:03d}.png"), np.clip(img, 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="class subfolders (or train/ + val/); default: generated toy data")
    parser.add_argument("--arch", default="squeezenet1_0", choices=("squeezenet1_0", "squeezenet1_1"))
    parser.add_argument("--recipe", default="seed", choices=tuple(RECIPES))
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="global batch (default: the recipe's)")
    parser.add_argument("--lr", type=float, help="default: the recipe's for the global batch")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--amp", choices=("bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=60, help="generated training images per class")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for bypass.json/.md")
    args = parser.parse_args()
    world = world_from_env()
    cuda = args.device != "cpu" and torch.cuda.is_available()
    if cuda and world.distributed:
        torch.cuda.set_device(world.local_rank)
    init(world, "cuda" if cuda else "cpu")  # one process group for the three trainings
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.data:
                data = Path(args.data)
            else:  # every process makes the same files (seeded), in a folder of its own
                data = Path(tmp) / "data"
                make_dataset(data, per_class=args.per_class, seed=args.seed)
            labels, train_items, _ = find_splits(data, args.seed)
            for bypass in ("none", "simple", "complex"):
                options = TrainOptions(
                    data=data,
                    out=Path(tmp) / bypass,
                    arch=args.arch,
                    bypass=bypass,
                    recipe=args.recipe,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    accumulate=args.accumulate,
                    image_size=args.image_size,
                    amp=args.amp,
                    channels_last=args.channels_last,
                    device=args.device,
                    workers=args.workers,
                    seed=args.seed,
                    progress=False,
                )
                result = train(options)
                cost = model_cost(
                    SqueezeNet(config_for(args.arch, num_classes=len(labels), bypass=bypass)), args.image_size
                )
                history = result.history
                rows.append(
                    {
                        "bypass": bypass,
                        "best_val_acc": result.best_val_acc,
                        "final_val_acc": history[-1]["val_acc"],
                        "final_train_loss": history[-1]["train_loss"],
                        "params": cost.params,
                        "macs": cost.conv_macs,
                        "seconds": sum(r["seconds"] for r in history),
                        "images_per_s": round(sum(r["images_per_s"] for r in history) / len(history), 1),
                    }
                )
                if world.writes_files:
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        shutdown(world)
    if not world.writes_files:
        return
    recipe, epochs, global_batch, lr = resolved(options)
    setting = {
        "data": args.data or f"generated, 10 classes x {args.per_class}",
        "train_images": len(train_items),
        "arch": args.arch,
        "recipe": recipe.name,
        "epochs": epochs,
        "global_batch": global_batch,
        "lr": lr,
        "image_size": args.image_size,
        "amp": args.amp,
        "seed": args.seed,
        "processes": world.size,
        "device": result.device,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "bypass.json", json.dumps({**setting, "rows": rows}, indent=2) + "\n")
    lines = [
        f"{args.arch}, {setting['data']} ({len(train_items)} training images), {args.image_size}x"
        f"{args.image_size}, recipe {recipe.name} ({recipe.optimizer}), {epochs} epochs, global batch "
        f"{global_batch}, lr {lr:g}, seed {args.seed}, {world.size} process(es) on {result.device}"
        + (f", {args.amp}" if args.amp else ""),
        "",
        "| bypass | best val acc | final val acc | params | MACs | train s | images/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['bypass']} | {100 * r['best_val_acc']:.1f} % | {100 * r['final_val_acc']:.1f} % | "
            f"{r['params']:,} | {r['macs'] / 1e6:.1f} M | {r['seconds']:.0f} | {r['images_per_s']:.0f} |"
        )
    write_text_atomic(out / "bypass.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
