"""Train or fine-tune SqueezeNet (``edge-squeeze train``): the public names of :mod:`edge_squeeze.training`
(needs torch)."""

from __future__ import annotations

from .training.checkpoints import build_for_training, plot_curves, save_checkpoint
from .training.data import (
    EpochSampler,
    ImageFolderDataset,
    collate_skipping,
    find_splits,
    profile_data,
    random_resized_crop,
)
from .training.loop import evaluate_loader, train, train_one_epoch
from .training.options import VAL_FRACTION, LoaderSpeed, TrainOptions, TrainResult, resolved

__all__ = [
    "VAL_FRACTION",
    "EpochSampler",
    "ImageFolderDataset",
    "LoaderSpeed",
    "TrainOptions",
    "TrainResult",
    "build_for_training",
    "collate_skipping",
    "evaluate_loader",
    "find_splits",
    "plot_curves",
    "profile_data",
    "random_resized_crop",
    "resolved",
    "save_checkpoint",
    "train",
    "train_one_epoch",
]
