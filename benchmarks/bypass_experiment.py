"""The paper's bypass experiment in miniature: SqueezeNet 1.0 without bypass, with simple bypass and
with complex bypass, trained on the same generated images with the same seed.

    .venv/bin/python benchmarks/bypass_experiment.py [--epochs 12] [--image-size 64] [--per-class 60]
        [--lr 0.001] [--device cuda] [--out benchmarks/results]

Writes bypass.json and bypass.md (accuracy, parameters, MACs at the image size).
The data are 10 classes of procedurally generated, noisy oriented stripes (made here, no download);
the paper's +2.9 % top-1 is on ImageNet and is not expected to transfer to this toy task as such.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edge_squeeze.models import SqueezeNet, config_for, model_cost
from edge_squeeze.train import TrainOptions, train

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
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=60, help="training images per class")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for bypass.json/.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_dataset(data, per_class=args.per_class, seed=args.seed)
        for bypass in ("none", "simple", "complex"):
            result = train(
                TrainOptions(
                    data=data,
                    out=Path(tmp) / bypass,
                    arch="squeezenet1_0",
                    bypass=bypass,
                    epochs=args.epochs,
                    image_size=args.image_size,
                    batch_size=32,
                    lr=args.lr,
                    device=args.device,
                    workers=args.workers,
                    seed=args.seed,
                    progress=False,
                )
            )
            cost = model_cost(
                SqueezeNet(config_for("squeezenet1_0", num_classes=10, bypass=bypass)), args.image_size
            )
            final = result["history"][-1]
            rows.append(
                {
                    "bypass": bypass,
                    "best_val_acc": result["best_val_acc"],
                    "final_val_acc": final["val_acc"],
                    "final_train_loss": final["train_loss"],
                    "params": cost.params,
                    "macs": cost.conv_macs,
                    "seconds": sum(r["seconds"] for r in result["history"]),
                }
            )
            print(json.dumps(rows[-1]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bypass.json").write_text(
        json.dumps({**vars(args), "out": None, "device": str(result["device"]), "rows": rows}, indent=2)
    )
    lines = [
        f"SqueezeNet 1.0, 10 generated classes x {args.per_class} training images, "
        f"{args.image_size}x{args.image_size}, {args.epochs} epochs, Adam lr {args.lr}, seed {args.seed}, "
        f"on {result['device']}",
        "",
        "| bypass | best val acc | final val acc | params | MACs | train s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['bypass']} | {100 * r['best_val_acc']:.1f} % | {100 * r['final_val_acc']:.1f} % | "
            f"{r['params']:,} | {r['macs'] / 1e6:.1f} M | {r['seconds']:.0f} |"
        )
    (out / "bypass.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
