"""What a training run does (each field declares its flag) and what it returns; torch-free, so
the CLI builds its parser without torch."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..config import ARCHS, BYPASS_MODES, RECIPES, Recipe
from ..options import FloatRange, IntRange, flag, internal, validate
from ..results import Result

log = logging.getLogger("edge_squeeze")


VAL_FRACTION = 0.2


@dataclasses.dataclass
class TrainOptions:
    """What ``edge-squeeze train`` does; each field declares its flag."""

    data: Path = flag(
        "--data", required=True, type=Path, help="DIR/<class>/*.jpg, or DIR/train/<class> + DIR/val/<class>"
    )
    out: Path = flag("--out", Path("runs/train"), type=Path)
    arch: str = flag("--arch", ARCHS[0], choices=ARCHS)
    bypass: str = flag("--bypass", "none", choices=BYPASS_MODES)
    metaparameters: Dict[str, Any] = internal(
        default_factory=dict,
        why="from the metaparameter flags (--base-e, ...), which the train verb declares",
    )
    recipe: str = flag(
        "--recipe",
        "seed",
        choices=tuple(RECIPES),
        help="seed: Adam, lr 0.001, 20 epochs (default); paper: the reference Caffe solver (SGD, poly decay)",
    )
    epochs: Optional[int] = flag(
        "--epochs", None, type=IntRange(1), help="default: the recipe's (seed 20, paper 68)"
    )
    lr: Optional[float] = flag(
        "--lr",
        None,
        type=FloatRange(0, 10, low_open=True),
        help="learning rate for the global batch (default: the recipe's, scaled to --batch-size for paper)",
    )
    batch_size: Optional[int] = flag(
        "--batch-size",
        None,
        type=IntRange(1, 1 << 20),
        help="GLOBAL batch per optimizer step, over all processes and --accumulate steps "
        "(default: the recipe's, seed 32, paper 512)",
    )
    accumulate: int = flag(
        "--accumulate",
        1,
        type=IntRange(1),
        help="gradient-accumulation steps per optimizer step (Caffe's iter_size)",
    )
    image_size: int = flag("--image-size", 224, type=IntRange(32, 2048))
    workers: int = flag(
        "--workers",
        2,
        type=IntRange(0, 64),
        help="data-loading processes per training process (default 2); see --profile-data",
    )
    seed: int = flag("--seed", 0, type=int)
    pretrained: Optional[str] = flag(
        "--pretrained", None, help="'imagenet' or a .pth: start from it with a new head for your classes"
    )
    freeze_features: bool = flag(
        "--freeze-features", False, action="store_true", help="train only the classifier head"
    )
    device: str = flag("--device", "auto", help="auto (CUDA when available), cpu, cuda, cuda:1")
    amp: Optional[str] = flag(
        "--amp", None, choices=("bf16", "fp16"), help="mixed precision (autocast) on CUDA"
    )
    channels_last: bool = flag(
        "--channels-last", False, action="store_true", help="NHWC memory format (faster on tensor cores)"
    )
    resume: bool = flag("--resume", False, action="store_true", help="continue from OUT/last.pt")
    progress: bool = internal(True, why="progress bars: the CLI's --quiet turns them off")

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass(frozen=True)
class TrainResult(Result):
    """What a training run reached; ``history`` holds one metrics row per epoch."""

    best_val_acc: float
    history: List[Dict[str, Any]]
    labels: List[str]
    out: Path
    device: str
    world_size: int
    global_batch: int
    writes_files: bool  # False on every process but rank 0


@dataclasses.dataclass(frozen=True)
class LoaderSpeed(Result):
    images_per_s: float
    images: int
    workers: int
    batch: int


def resolved(options: TrainOptions) -> Tuple[Recipe, int, int, float]:
    """The recipe, and the epochs, global batch and learning rate this run uses."""
    recipe = RECIPES[options.recipe]  # a known name: TrainOptions validates it
    batch = options.batch_size or recipe.reference_batch
    lr = options.lr if options.lr is not None else recipe.lr_for(batch)
    return recipe, options.epochs or recipe.epochs, batch, lr
