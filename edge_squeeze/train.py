"""``edge-squeeze train``: SqueezeNet on class-per-subfolder images; the seed experiment's defaults.

Defaults reproduce the seed experiment (SqueezeNet 1.0, 224x224, 20 epochs, Adam, lr 0.001, as many
classes as folders). Training images go through the shared preprocessing's normalisation after a
random resized crop and a horizontal flip; validation images through :func:`preprocess_one` itself,
exactly as at inference. ``best.pt``/``last.pt`` carry weights, architecture, labels, preprocessing
and metrics, so ``export`` and ``Classifier`` need nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .config import RECIPES, Recipe
from .distributed import World, all_sum, per_process_batch, world_from_env
from .errors import EdgeSqueezeError, require
from .fileio import atomic_path, cannot_write, write_csv_atomic
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
    recipe: str = "seed"  # RECIPES: "seed" (Adam, the seed experiment) or "paper" (the Caffe solver)
    epochs: Optional[int] = None  # None: the recipe's
    lr: Optional[float] = None  # None: the recipe's, for this global batch
    batch_size: Optional[int] = None  # the global batch over all processes; None: the recipe's
    accumulate: int = 1  # gradient-accumulation steps per optimizer step (Caffe's iter_size)
    image_size: int = 224
    workers: int = 2  # data-loading processes per training process
    seed: int = 0
    pretrained: Optional[str] = None  # "imagenet" or a path: new head for the user's classes
    freeze_features: bool = False
    device: str = "auto"
    amp: Optional[str] = None  # "bf16" | "fp16": autocast on CUDA
    channels_last: bool = False
    resume: bool = False
    progress: bool = True


def resolved(options: TrainOptions) -> Tuple[Recipe, int, int, float]:
    """The recipe, and the epochs, global batch and learning rate this run uses."""
    if options.recipe not in RECIPES:
        raise EdgeSqueezeError(f"unknown recipe {options.recipe!r}: choose one of {', '.join(RECIPES)}")
    recipe = RECIPES[options.recipe]
    batch = options.batch_size or recipe.reference_batch
    lr = options.lr if options.lr is not None else recipe.lr_for(batch)
    return recipe, options.epochs or recipe.epochs, batch, lr


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

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Optional[Tuple[Any, int]]:
        """``key`` is an index, or (epoch, index) from :class:`EpochSampler`: data-loading workers hold
        their own copy of the dataset, so the epoch that seeds the augmentation travels with the index."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        path, label = self.items[index]
        try:
            if self.train:
                rng = np.random.default_rng((self.seed, epoch, index))
                crop = random_resized_crop(read_image(path), self.spec.crop, rng)
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                x = normalise(np.ascontiguousarray(crop), self.spec)
            else:
                x = preprocess_one(path, self.spec)
        except EdgeSqueezeError:
            return None
        return torch.from_numpy(x), label


class EpochSampler(torch.utils.data.Sampler):  # type: ignore[misc]
    """A :class:`DistributedSampler`'s indices as (epoch, index) keys for :class:`ImageFolderDataset`."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return ((self.sampler.epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def collate_skipping(
    batch: List[Optional[Tuple[Any, int]]], shape: Tuple[int, ...] = (3, 224, 224)
) -> Tuple[Any, Any, int]:
    """Stack the readable images; an all-unreadable batch becomes an empty one of the right shape (so
    every process still takes part in the step)."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.zeros((0, *shape)), torch.empty(0, dtype=torch.long), skipped
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
    extra: Optional[Dict[str, Any]] = None,
) -> None:
    """A training checkpoint: weights (without any DistributedDataParallel wrapper), config, labels,
    preprocessing, metrics and what resuming needs."""
    model = getattr(model, "module", model)
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


def _device(name: str) -> Any:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EdgeSqueezeError(
            "--device cuda but torch sees no CUDA device (a CPU build of torch, or no driver)"
        )
    return torch.device(name)


def evaluate_loader(
    model: Any, loader: Any, device: Any, world: Optional[World] = None
) -> Tuple[float, float, int]:
    """Mean loss, top-1 accuracy and skipped images over ``loader``, summed over every process."""
    world = world or World()
    model.eval()
    loss_sum, correct, n, skipped = 0.0, 0, 0, 0
    with torch.no_grad():
        for x, y, s in loader:
            skipped += s
            if len(y) == 0:
                continue
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss_sum += float(torch.nn.functional.cross_entropy(out.float(), y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    loss_sum, correct, n, skipped = all_sum([loss_sum, correct, n, skipped], world, device)
    return loss_sum / max(n, 1), correct / max(n, 1), int(skipped)


@dataclasses.dataclass
class EpochStats:
    loss: float  # mean cross-entropy over the epoch's images (all processes)
    accuracy: float
    images: int
    skipped: int  # unreadable images left out


@dataclasses.dataclass
class StepSettings:
    """How one optimizer step is taken."""

    global_batch: int
    world: World = dataclasses.field(default_factory=World)
    accumulate: int = 1
    clip_grad: float = 0.0
    amp_dtype: Any = None  # torch.bfloat16 / torch.float16 for autocast on CUDA
    scaler: Any = None  # a GradScaler for fp16
    channels_last: bool = False


def train_one_epoch(
    model: Any, batches: Any, optimizer: Any, scheduler: Any, device: Any, step: Optional[StepSettings] = None
) -> EpochStats:
    """One pass over ``batches`` (image batch, labels, skipped count): an optimizer step every
    ``step.accumulate`` batches, on the mean cross-entropy of the global batch, whatever the number
    of processes (each process's summed loss is scaled by processes / global batch, and the gradient
    by global batch / images actually read, so 1 process and N give the same step), gradients
    clipped where the recipe says, then the learning-rate schedule. A progress bar given as
    ``batches`` shows the running loss and accuracy."""
    step = step or StepSettings(global_batch=1, clip_grad=1.0)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    loss_sum, correct, n, skipped = 0.0, 0, 0, 0
    step_images, micro = 0, 0
    optimizer.zero_grad(set_to_none=True)
    for x, y, s in batches:
        skipped += s
        micro += 1
        last_micro = micro % step.accumulate == 0
        sync = contextlib.nullcontext() if last_micro or not step.world.distributed else model.no_sync()
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if step.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with sync:
            with torch.autocast(device.type, dtype=step.amp_dtype, enabled=step.amp_dtype is not None):
                logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
            scaled = loss * (step.world.size / step.global_batch)
            (step.scaler.scale(scaled) if step.scaler is not None else scaled).backward()
        loss_sum += float(loss.detach())
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
        step_images += len(y)
        if last_micro:
            _optimizer_step(params, optimizer, scheduler, step, step_images, device)
            step_images = 0
        if hasattr(batches, "set_postfix") and n:
            batches.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}")
    if micro % step.accumulate:  # the epoch ended inside an accumulation: step on what there is
        _optimizer_step(params, optimizer, scheduler, step, step_images, device)
    loss_sum, correct, n, skipped = all_sum([loss_sum, correct, n, skipped], step.world, device)
    return EpochStats(loss_sum / max(n, 1), correct / max(n, 1), int(n), int(skipped))


def _optimizer_step(
    params: List[Any], optimizer: Any, scheduler: Any, step: StepSettings, images: int, device: Any
) -> None:
    (total,) = all_sum([images], step.world, device)
    if total > 0:
        if step.scaler is not None:
            step.scaler.unscale_(optimizer)
        if total != step.global_batch:  # a short last batch, or unreadable images: still the mean
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(step.global_batch / total)
        if step.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, step.clip_grad)
        if step.scaler is not None:
            step.scaler.step(optimizer)
            step.scaler.update()
        else:
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def _optimizer(recipe: Recipe, params: List[Any], lr: float) -> Any:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=recipe.weight_decay)


def _schedule(recipe: Recipe, optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
    if recipe.schedule == "poly":  # Caffe's "poly", power 1: lr x (1 - iteration / max_iter)
        total = max(1, steps_per_epoch * epochs)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: max(0.0, 1.0 - i / total))
    # SqueezeNet has no batch norm and a ReLU before the global pool: Adam's first full-size steps can
    # push every conv10 output below zero, and the loss then sits at ln(classes) for good (seen here
    # with Adam at lr 1e-3 on 4 classes). A linear warm-up (and the recipe's clipping) avoid that.
    warmup = max(1, min(2 * steps_per_epoch, 500))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / warmup))


def _amp(options: TrainOptions, device: Any) -> Tuple[Any, Any]:
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


def _loaders(
    options: TrainOptions,
    world: World,
    train_set: Any,
    val_set: Any,
    per_batch: int,
    device: Any,
    shape: Tuple[int, ...],
) -> Tuple[Any, Any, Any]:
    """The training loader (each process's share of every global batch), its sampler, and the
    validation loader (each process a disjoint share)."""
    sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=world.size, rank=world.rank, shuffle=True, seed=options.seed, drop_last=False
    )
    common: Dict[str, Any] = {
        "num_workers": options.workers,
        "collate_fn": functools.partial(collate_skipping, shape=shape),
        "pin_memory": device.type == "cuda",
        "persistent_workers": options.workers > 0,
    }
    if options.workers > 0:
        common["prefetch_factor"] = 4
    sampler = EpochSampler(sampler)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=per_batch, sampler=sampler, **common)
    val_share = torch.utils.data.Subset(val_set, range(world.rank, len(val_set), world.size))
    val_loader = torch.utils.data.DataLoader(
        val_share, batch_size=max(per_batch, 32), shuffle=False, **common
    )
    return train_loader, sampler, val_loader


def profile_data(options: TrainOptions, batches: int = 50) -> Dict[str, float]:
    """Images per second the training loader alone delivers (decode, augment, normalise, collate),
    with ``options.workers`` workers: when it is below what the GPU trains at, data is the bottleneck."""
    world = world_from_env()
    global_batch = resolved(options)[2]
    train_items = find_splits(options.data, options.seed)[1]
    spec = PreprocessSpec.imagenet(options.image_size)
    per_batch = per_process_batch(global_batch, world.size, options.accumulate)
    train_set = ImageFolderDataset(train_items, spec, train=True, seed=options.seed)
    device = torch.device("cpu")
    loader, _, _ = _loaders(options, world, train_set, train_set, per_batch, device, spec.input_shape)
    images, t0 = 0, time.perf_counter()
    for i, (x, _, _) in enumerate(loader):
        if i == 0:
            t0, images = time.perf_counter(), 0  # the first batch pays for starting the workers
            continue
        images += len(x)
        if i >= batches:
            break
    seconds = time.perf_counter() - t0
    return {
        "images_per_s": images / seconds if seconds > 0 else 0.0,
        "images": images,
        "workers": options.workers,
        "batch": per_batch,
    }


def train(options: TrainOptions) -> Dict[str, Any]:
    """Train, writing best.pt, last.pt, metrics.csv and learning_curve.png into ``options.out``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process trains its share of each global batch in
    DistributedDataParallel and only the first writes files; the result is the same as one process
    with the same global batch, and a checkpoint resumes on any number of processes.
    """
    from .distributed import init, shutdown

    recipe, epochs, global_batch, lr = resolved(options)
    world = world_from_env()
    torch.manual_seed(options.seed)
    device = _device(options.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    per_batch = per_process_batch(global_batch, world.size, options.accumulate)
    labels, train_items, val_items = find_splits(options.data, options.seed)
    if not val_items:
        raise EdgeSqueezeError("no validation images: give val/ or at least two images per class")
    if not world.writes_files:
        log.setLevel(max(log.level, logging.WARNING))  # one process reports
    spec = PreprocessSpec.imagenet(options.image_size)
    model, config = build_for_training(options, labels)
    model.to(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(recipe, params, lr)
    out = Path(options.out)
    if world.writes_files:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cannot_write(out, exc) from exc
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
        if last.extra.get("global_batch", global_batch) != global_batch:
            log.warning(
                "resuming with global batch %d; the checkpoint trained with %d",
                global_batch,
                last.extra["global_batch"],
            )
        log.info(
            "resuming at epoch %d of %d on %d process(es) (the checkpoint ran on %s)",
            start_epoch,
            epochs,
            world.size,
            last.extra.get("world_size", 1),
        )
    started = init(world, device.type)
    net: Any = model
    try:
        train_set = ImageFolderDataset(train_items, spec, train=True, seed=options.seed)
        val_set = ImageFolderDataset(val_items, spec, train=False, seed=options.seed)
        train_loader, sampler, val_loader = _loaders(
            options, world, train_set, val_set, per_batch, device, spec.input_shape
        )
        steps_per_epoch = -(-len(train_loader) // options.accumulate)
        scheduler = _schedule(recipe, optimizer, steps_per_epoch, epochs)
        if last is not None and last.extra is not None and "scheduler" in last.extra:
            scheduler.load_state_dict(last.extra["scheduler"])
            # a new scheduler sets the optimizer to its first step's rate; loading its state does not
            # undo that, so the resumed step would use it: put back the rate the checkpoint was at
            for group, rate in zip(optimizer.param_groups, scheduler.get_last_lr()):
                group["lr"] = rate
        if world.distributed:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        amp_dtype, scaler = _amp(options, device)
        step = StepSettings(
            global_batch,
            world,
            options.accumulate,
            recipe.clip_grad,
            amp_dtype,
            scaler,
            options.channels_last,
        )
        log.info(
            "%s (bypass %s), %d classes, %d train / %d val images, %s; recipe %s: global batch %d = %d "
            "process(es) x %d x %d accumulation step(s), lr %g; %d data workers per process",
            config.arch,
            config.bypass,
            len(labels),
            len(train_items),
            len(val_items),
            device,
            recipe.name,
            global_batch,
            world.size,
            per_batch,
            options.accumulate,
            lr,
            options.workers,
        )
        extra = {"recipe": recipe.name, "global_batch": global_batch, "world_size": world.size}
        epoch = start_epoch - 1
        try:
            for epoch in range(start_epoch, epochs + 1):
                train_set.epoch = epoch
                sampler.set_epoch(epoch)
                t0 = time.perf_counter()
                batches: Any = train_loader
                if options.progress and world.writes_files:
                    from .progress import progress_bar

                    batches = progress_bar(train_loader, desc=f"epoch {epoch}/{epochs}", unit="batch")
                stats = train_one_epoch(net, batches, optimizer, scheduler, device, step)
                val_loss, val_acc, val_skipped = evaluate_loader(net, val_loader, device, world)
                row = {
                    "epoch": epoch,
                    "train_loss": stats.loss,
                    "train_acc": stats.accuracy,
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "skipped_images": stats.skipped + val_skipped,
                    "images_per_s": round(stats.images / max(time.perf_counter() - t0, 1e-9), 1),
                }
                rows.append(row)
                log.info(
                    "epoch %d: loss %.3f, acc %.3f, val loss %.3f, val acc %.3f (%.0f s, %.0f images/s)%s",
                    epoch,
                    row["train_loss"],
                    row["train_acc"],
                    val_loss,
                    val_acc,
                    row["seconds"],
                    row["images_per_s"],
                    f"; skipped {row['skipped_images']} unreadable image(s)" if row["skipped_images"] else "",
                )
                if (
                    stats.images
                    and abs(row["train_loss"] - math.log(len(labels))) < 1e-5  # dead: every logit exactly 0
                    and epoch >= start_epoch + 1
                ):
                    log.warning(
                        "training is stuck at chance (loss = ln %d): every output of the ReLU before the global "
                        "pool has died; restart with a lower --lr (e.g. 3e-4) or from --pretrained imagenet",
                        len(labels),
                    )
                metrics = {"best_val_acc": max(best_acc, val_acc), "history": rows}
                improved = val_acc > best_acc
                best_acc = max(best_acc, val_acc)
                if world.writes_files:
                    state = (model, config, labels, spec, metrics, epoch, optimizer, True, scheduler, extra)
                    if improved:
                        save_checkpoint(out / "best.pt", *state)
                    save_checkpoint(out / "last.pt", *state)
                    write_csv_atomic(out / "metrics.csv", rows, list(rows[0]))
                    plot_curves(rows, out / "learning_curve.png")
        except KeyboardInterrupt:
            if world.writes_files:
                metrics = {"best_val_acc": best_acc, "history": rows, "interrupted": True}
                save_checkpoint(
                    out / "last.pt",
                    model,
                    config,
                    labels,
                    spec,
                    metrics,
                    epoch,
                    optimizer,
                    False,
                    scheduler,
                    extra,
                )
                log.info("interrupted: saved %s (resume with --resume)", out / "last.pt")
            raise
    finally:
        if started:
            # DistributedDataParallel's reducer must go before its process group: freed after
            # destroy_process_group, it waits forever (seen with gloo on this machine)
            net = None
            gc.collect()
            shutdown(world)
    return {
        "best_val_acc": best_acc,
        "history": rows,
        "labels": labels.names,
        "out": str(out),
        "device": str(device),
        "world_size": world.size,
        "global_batch": global_batch,
        "writes_files": world.writes_files,
    }
