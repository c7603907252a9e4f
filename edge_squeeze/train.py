"""``edge-squeeze train``: SqueezeNet on class-per-subfolder images; the seed experiment's defaults.

Defaults reproduce the seed experiment (SqueezeNet 1.0, 224x224, 20 epochs, Adam, lr 0.001, as many
classes as folders). Training images go through the shared preprocessing's normalisation after a
random resized crop and a horizontal flip; validation images through :func:`preprocess_one` itself,
exactly as at inference. ``best.pt``/``last.pt`` carry weights, architecture, labels, preprocessing
and metrics, so ``export`` and ``Classifier`` need nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .errors import EdgeSqueezeError, require
from .fileio import atomic_path, write_csv_atomic
from .labels import Labels
from .preprocess import PreprocessSpec, list_images, normalise, preprocess_one, read_image

log = logging.getLogger("edge_squeeze")
torch = require("torch", "training")

VAL_FRACTION = 0.2


@dataclasses.dataclass
class TrainOptions:
    data: Path
    out: Path = Path("runs/train")
    arch: str = "squeezenet1_0"
    bypass: str = "none"
    metaparameters: Dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 20
    lr: float = 0.001
    batch_size: int = 32
    image_size: int = 224
    workers: int = 2
    seed: int = 0
    pretrained: Optional[str] = None  # "imagenet" or a path: new head for the user's classes
    freeze_features: bool = False
    device: str = "auto"
    resume: bool = False
    progress: bool = True


def find_splits(root: Path, seed: int) -> Tuple[Labels, List[Tuple[Path, int]], List[Tuple[Path, int]]]:
    """Classes from subfolder names; ``train/`` + ``val/`` when present, else a seeded 80/20 split per class."""
    root = Path(root)
    if not root.is_dir():
        raise EdgeSqueezeError(f"training data folder not found: {root}")
    if (root / "train").is_dir():
        train_root, val_root = root / "train", root / "val"
    else:
        train_root, val_root = root, None
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir() and list_images(p))
    if len(classes) < 2:
        raise EdgeSqueezeError(
            f"{train_root} needs at least two class subfolders with images (one folder per class)"
        )
    labels = Labels(names=classes)

    def items(folder: Path) -> List[Tuple[Path, int]]:
        return [
            (p, i) for i, c in enumerate(classes) for p in list_images(folder / c) if (folder / c).is_dir()
        ]

    if val_root is not None and val_root.is_dir():
        return labels, items(train_root), items(val_root)
    rng = random.Random(seed)
    train, val = [], []
    for i, c in enumerate(classes):
        files = list_images(train_root / c)
        rng.shuffle(files)
        n_val = max(1, round(len(files) * VAL_FRACTION)) if len(files) > 1 else 0
        val += [(p, i) for p in files[:n_val]]
        train += [(p, i) for p in files[n_val:]]
    return labels, train, val


def random_resized_crop(
    bgr: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: Tuple[float, float] = (0.25, 1.0),
    ratio: Tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """torchvision's RandomResizedCrop, on a BGR array (area interpolation when shrinking)."""
    h, w = bgr.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:
        ch = cw = min(h, w)
        top, left = (h - ch) // 2, (w - cw) // 2
    crop = bgr[top : top + ch, left : left + cw]
    interp = cv2.INTER_AREA if ch > size and cw > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


class ImageFolderDataset(torch.utils.data.Dataset):  # type: ignore[misc]
    """(image, class) pairs; unreadable images come back as None and are counted by the collate."""

    def __init__(
        self, items: Sequence[Tuple[Path, int]], spec: PreprocessSpec, train: bool, seed: int
    ) -> None:
        self.items = list(items)
        self.spec = spec
        self.train = train
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Optional[Tuple[Any, int]]:
        path, label = self.items[index]
        try:
            if self.train:
                rng = np.random.default_rng((self.seed, self.epoch, index))
                crop = random_resized_crop(read_image(path), self.spec.crop, rng)
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                x = normalise(np.ascontiguousarray(crop), self.spec)
            else:
                x = preprocess_one(path, self.spec)
        except EdgeSqueezeError:
            return None
        return torch.from_numpy(x), label


def collate_skipping(batch: List[Optional[Tuple[Any, int]]]) -> Tuple[Any, Any, int]:
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), skipped


def build_for_training(options: TrainOptions, labels: Labels) -> Tuple[Any, Any]:
    from .models import SqueezeNet, config_for
    from .weights import read_weights

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
) -> None:
    from .weights import CHECKPOINT_FORMAT

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


def _device(name: str) -> Any:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EdgeSqueezeError(
            "--device cuda but torch sees no CUDA device (a CPU build of torch, or no driver)"
        )
    return torch.device(name)


def evaluate_loader(model: Any, loader: Any, device: Any) -> Tuple[float, float, int]:
    model.eval()
    loss_sum, correct, n, skipped = 0.0, 0, 0, 0
    with torch.no_grad():
        for x, y, s in loader:
            skipped += s
            if len(y) == 0:
                continue
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss_sum += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return loss_sum / max(n, 1), correct / max(n, 1), skipped


@dataclasses.dataclass
class EpochStats:
    loss: float  # mean cross-entropy over the epoch's images
    accuracy: float
    images: int
    skipped: int  # unreadable images left out


def train_one_epoch(model: Any, batches: Any, optimizer: Any, scheduler: Any, device: Any) -> EpochStats:
    """One pass over ``batches`` (image batch, labels, skipped count), a step per batch: cross-entropy,
    gradients clipped to norm 1 (SqueezeNet's first steps can otherwise kill the ReLU before the
    global pool), then the learning-rate schedule. A progress bar given as ``batches`` shows the
    running loss and accuracy."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    loss_sum, correct, n, skipped = 0.0, 0, 0, 0
    for x, y, s in batches:
        skipped += s
        if len(y) == 0:
            continue
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}")
    return EpochStats(loss_sum / max(n, 1), correct / max(n, 1), n, skipped)


def train(options: TrainOptions) -> Dict[str, Any]:
    """Train, writing best.pt, last.pt, metrics.csv and learning_curve.png into ``options.out``."""
    torch.manual_seed(options.seed)
    device = _device(options.device)
    labels, train_items, val_items = find_splits(options.data, options.seed)
    if not val_items:
        raise EdgeSqueezeError("no validation images: give val/ or at least two images per class")
    spec = PreprocessSpec.imagenet(options.image_size)
    model, config = build_for_training(options, labels)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=options.lr)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    start_epoch, best_acc = 1, -1.0
    last = None
    if options.resume:
        from .weights import read_weights

        last = read_weights(out / "last.pt")
        if last.extra is None or last.config != config.to_dict():
            raise EdgeSqueezeError(
                f"{out / 'last.pt'} was trained with other settings; resume with the same ones"
            )
        model.load_state_dict(last.state_dict)
        optimizer.load_state_dict(last.extra["optimizer"])
        start_epoch = int(last.extra["epoch"]) + (1 if last.extra.get("epoch_complete", True) else 0)
        rows = list(last.extra.get("metrics", {}).get("history", []))
        best_acc = max((r["val_acc"] for r in rows), default=-1.0)
        log.info("resuming at epoch %d of %d", start_epoch, options.epochs)
    train_set = ImageFolderDataset(train_items, spec, train=True, seed=options.seed)
    val_set = ImageFolderDataset(val_items, spec, train=False, seed=options.seed)
    loader_args: Dict[str, Any] = {
        "batch_size": options.batch_size,
        "num_workers": options.workers,
        "collate_fn": collate_skipping,
        "persistent_workers": options.workers > 0,
    }
    generator = torch.Generator().manual_seed(options.seed)
    train_loader = torch.utils.data.DataLoader(
        train_set, shuffle=True, drop_last=False, generator=generator, **loader_args
    )
    val_loader = torch.utils.data.DataLoader(val_set, shuffle=False, **loader_args)
    # SqueezeNet has no batch norm and a ReLU before the global pool: Adam's first full-size steps can
    # push every conv10 output below zero, and the loss then sits at ln(classes) for good (seen here
    # with Adam at lr 1e-3 on 4 classes). A linear warm-up and gradient clipping avoid that stall.
    warmup_steps = max(1, min(2 * len(train_loader), 500))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))
    if last is not None and last.extra is not None and "scheduler" in last.extra:
        scheduler.load_state_dict(last.extra["scheduler"])
    log.info(
        "%s (bypass %s), %d classes, %d train / %d val images, %s, %d workers",
        config.arch,
        config.bypass,
        len(labels),
        len(train_items),
        len(val_items),
        device,
        options.workers,
    )
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, options.epochs + 1):
            train_set.epoch = epoch
            t0 = time.perf_counter()
            batches: Any = train_loader
            if options.progress:
                from .progress import progress_bar

                batches = progress_bar(train_loader, desc=f"epoch {epoch}/{options.epochs}", unit="batch")
            stats = train_one_epoch(model, batches, optimizer, scheduler, device)
            val_loss, val_acc, val_skipped = evaluate_loader(model, val_loader, device)
            row = {
                "epoch": epoch,
                "train_loss": stats.loss,
                "train_acc": stats.accuracy,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "seconds": round(time.perf_counter() - t0, 1),
                "skipped_images": stats.skipped + val_skipped,
            }
            rows.append(row)
            log.info(
                "epoch %d: loss %.3f, acc %.3f, val loss %.3f, val acc %.3f (%.0f s)%s",
                epoch,
                row["train_loss"],
                row["train_acc"],
                val_loss,
                val_acc,
                row["seconds"],
                f"; skipped {row['skipped_images']} unreadable image(s)" if row["skipped_images"] else "",
            )
            if (
                stats.images
                and abs(row["train_loss"] - math.log(len(labels))) < 1e-3
                and epoch >= start_epoch + 1
            ):
                log.warning(
                    "training is stuck at chance (loss = ln %d): every output of the ReLU before the global "
                    "pool has died; restart with a lower --lr (e.g. 3e-4) or from --pretrained imagenet",
                    len(labels),
                )
            metrics = {"best_val_acc": max(best_acc, val_acc), "history": rows}
            if val_acc > best_acc:
                best_acc = val_acc
                save_checkpoint(
                    out / "best.pt", model, config, labels, spec, metrics, epoch, optimizer, True, scheduler
                )
            save_checkpoint(
                out / "last.pt", model, config, labels, spec, metrics, epoch, optimizer, True, scheduler
            )
            write_csv_atomic(out / "metrics.csv", rows, list(rows[0]))
            plot_curves(rows, out / "learning_curve.png")
    except KeyboardInterrupt:
        metrics = {"best_val_acc": best_acc, "history": rows, "interrupted": True}
        save_checkpoint(
            out / "last.pt", model, config, labels, spec, metrics, epoch, optimizer, False, scheduler
        )
        log.info("interrupted: saved %s (resume with --resume)", out / "last.pt")
        raise
    return {
        "best_val_acc": best_acc,
        "history": rows,
        "labels": labels.names,
        "out": str(out),
        "device": str(device),
    }
