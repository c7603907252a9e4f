"""A recipe's optimizer and learning-rate schedule, and mixed precision on CUDA."""

from __future__ import annotations

import logging
from typing import Any, List, Tuple

from ..config import Recipe
from ..errors import EdgeSqueezeError, require
from .options import TrainOptions

log = logging.getLogger("edge_squeeze")
torch = require("torch", "training")


def make_optimizer(recipe: Recipe, params: List[Any], lr: float) -> Any:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=recipe.weight_decay)


def make_schedule(recipe: Recipe, optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
    if recipe.schedule == "poly":  # Caffe's "poly", power 1: lr x (1 - iteration / max_iter)
        total = max(1, steps_per_epoch * epochs)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: max(0.0, 1.0 - i / total))
    # SqueezeNet has no batch norm and a ReLU before the global pool: Adam's first full-size steps can
    # push every conv10 output below zero, and the loss then sits at ln(classes) for good (seen here
    # with Adam at lr 1e-3 on 4 classes). A linear warm-up (and the recipe's clipping) avoid that.
    warmup = max(1, min(2 * steps_per_epoch, 500))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / warmup))


def amp_settings(options: TrainOptions, device: Any) -> Tuple[Any, Any]:
    """(autocast dtype, GradScaler) for ``--amp``; fp32 (None, None) without it or off CUDA."""
    if options.amp is None:
        return None, None
    if device.type != "cuda":
        log.warning("--amp %s applies on CUDA only; training on %s in fp32", options.amp, device)
        return None, None
    if options.amp == "bf16":
        if not torch.cuda.is_bf16_supported():
            raise EdgeSqueezeError("this GPU has no bf16: use --amp fp16")
        return torch.bfloat16, None
    if options.amp == "fp16":
        return torch.float16, torch.amp.GradScaler("cuda")
    raise EdgeSqueezeError(f"--amp takes bf16 or fp16, not {options.amp!r}")
