"""Single-process training speed of two source trees, in paired, interleaved runs: the check that a
change to ``edge_squeeze/train.py`` did not slow the one-process path.

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/train_speed.py --before /tmp/before [--rounds 3]

Each round trains SqueezeNet 1.0 (seed recipe, batch 32, 64x64 crops of 10 x 60 generated images,
2 data workers) for 2 epochs in a fresh process, first from ``--before`` then from this tree; the
second epoch's wall time is the sample (the first pays for start-up). Writes
benchmarks/results/train_speed.json and .md: median seconds per epoch and the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# run inside the measured tree: nothing from this tree's edge_squeeze is imported there
ONE_RUN = """
import json, sys
from pathlib import Path
from edge_squeeze.train import TrainOptions, train
result = train(TrainOptions(data=Path(sys.argv[1]), out=Path(sys.argv[2]), arch="squeezenet1_0", epochs=2,
    batch_size=32, lr=0.001, image_size=64, workers=2, progress=False))
print(json.dumps([row["seconds"] for row in result["history"]]))
"""


def epoch_seconds(tree: Path, data: Path, out: Path) -> float:
    run = subprocess.run(
        [sys.executable, "-c", ONE_RUN, str(data), str(out)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(run.stdout.strip().splitlines()[-1])[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the other source tree (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bypass_experiment import make_dataset

    before_tree = Path(args.before).resolve()
    samples: dict = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_dataset(data, per_class=60)
        for i in range(args.rounds):
            for name, tree in (("before", before_tree), ("after", ROOT)):
                samples[name].append(epoch_seconds(tree, data, Path(tmp) / f"{name}{i}"))
                print(name, samples[name][-1], flush=True)
    before, after = statistics.median(samples["before"]), statistics.median(samples["after"])
    commit = subprocess.run(
        ["git", "-C", str(before_tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    result = {
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}",
        "before": {"tree": commit or str(before_tree), "epoch_s": samples["before"], "median_s": before},
        "after": {"epoch_s": samples["after"], "median_s": after},
        "after_over_before": round(after / before, 3),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "SqueezeNet 1.0, one process, seed recipe, batch 32, 64x64, 600 generated images, 2 workers; "
        f"second-epoch seconds, {args.rounds} interleaved rounds",
        "",
        "| tree | epoch s (each round) | median |",
        "| --- | --- | --- |",
        f"| before ({result['before']['tree']}) | {', '.join(f'{s:.1f}' for s in samples['before'])} | "
        f"{before:.1f} |",
        f"| this tree | {', '.join(f'{s:.1f}' for s in samples['after'])} | {after:.1f} |",
        "",
        f"this tree / before: {after / before:.2f}",
    ]
    (out / "train_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
