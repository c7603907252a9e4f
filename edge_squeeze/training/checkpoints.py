"""The model a run trains (fresh or fine-tuned), its checkpoints and learning curves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import EdgeSqueezeError, require
from ..fileio import atomic_path
from ..labels import Labels
from ..preprocess import PreprocessSpec
from .options import TrainOptions

log = logging.getLogger("edge_squeeze")
torch = require("torch", "training")


def build_for_training(options: TrainOptions, labels: Labels) -> Tuple[Any, Any]:
    from ..models import SqueezeNet, config_for
    from ..weights import read_weights

    config = config_for(
        options.arch, num_classes=len(labels), bypass=options.bypass, **options.metaparameters
    )
    model = SqueezeNet(config)
    if options.pretrained:
        loaded = read_weights(options.pretrained, options.arch)
        head = {k for k in loaded.state_dict if k.startswith("classifier.1.")}
        state = {k: v for k, v in loaded.state_dict.items() if k not in head}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("classifier.1.") and "bypass" not in k for k in missing):
            raise EdgeSqueezeError(
                f"--pretrained {options.pretrained} does not fit {options.arch}: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        log.info("fine-tuning from %s with a new %d-class head", loaded.source, len(labels))
    if options.freeze_features:
        for p in model.features.parameters():
            p.requires_grad_(False)
    return model, config


def save_checkpoint(
    path: Path,
    model: Any,
    config: Any,
    labels: Labels,
    spec: PreprocessSpec,
    metrics: Dict[str, Any],
    epoch: int,
    optimizer: Any,
    complete: bool,
    scheduler: Any = None,
    extra: Optional[Dict[str, Any]] = None,
) -> None:
    """A training checkpoint: weights (without any DistributedDataParallel wrapper), config, labels,
    preprocessing, metrics and what resuming needs."""
    model = getattr(model, "module", model)
    from ..weights import CHECKPOINT_FORMAT

    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "labels": labels.to_dict(),
        "preprocess": spec.to_dict(),
        "metrics": metrics,
        "epoch": epoch,
        "epoch_complete": complete,
        "optimizer": optimizer.state_dict(),
    }
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    payload.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(payload, str(tmp))


def plot_curves(rows: List[Dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no learning-curve plot")
        return
    epochs = [r["epoch"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(epochs, [r["train_loss"] for r in rows], label="train")
    a1.plot(epochs, [r["val_loss"] for r in rows], label="val")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(epochs, [r["train_acc"] for r in rows], label="train")
    a2.plot(epochs, [r["val_acc"] for r in rows], label="val")
    a2.set_xlabel("epoch")
    a2.set_ylabel("top-1 accuracy")
    a2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=100)
    plt.close(fig)
