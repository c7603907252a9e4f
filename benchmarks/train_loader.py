"""Images per second the training loader alone delivers on full-size ImageNet photos, per number of
data workers: what ``edge-squeeze train --profile-data`` prints, on the shared photos.

    .venv/bin/python benchmarks/train_loader.py [--shared ../shared] [--workers 1 2] [--rounds 3]

The 700 shared photos (val/ + calib/, ImageNet's own JPEGs, about 500x375) become a class-per-folder
set (links, one class each); each run decodes, random-resized-crops to 224, flips and normalises them
in batches of 32. Writes benchmarks/results/train_loader.json and .md (median of the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

from edge_squeeze.bench import cpu_model
from edge_squeeze.train import TrainOptions, profile_data

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    photos = sorted((Path(args.shared) / "data" / "imagenet-samples").glob("*/*.JPEG"))
    if not photos:
        raise SystemExit(f"no photos under {args.shared}/data/imagenet-samples (give --shared)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, photo in enumerate(photos):
            folder = Path(tmp) / f"c{i:03d}"
            folder.mkdir()
            os.symlink(photo, folder / photo.name)
        for workers in args.workers:
            options = TrainOptions(data=Path(tmp), batch_size=32, image_size=224, workers=workers)
            rates = [profile_data(options, batches=1000)["images_per_s"] for _ in range(args.rounds)]
            rows.append({"workers": workers, "images_per_s": rates, "median": statistics.median(rates)})
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cores",
        "photos": len(photos),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_loader.json").write_text(json.dumps({**result, "rows": rows}, indent=2) + "\n")
    lines = [
        f"Training loader on {len(photos)} ImageNet photos, 224x224 random-resized crops, batch 32; "
        f"{result['machine']}",
        "",
        "| workers | images/s (each round) | median |",
        "| --- | --- | --- |",
    ]
    for r in rows:
        each = ", ".join(f"{x:.0f}" for x in r["images_per_s"])
        lines.append(f"| {r['workers']} | {each} | {r['median']:.0f} |")
    (out / "train_loader.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
