"""The training loop: epochs over DistributedDataParallel, evaluation, resume, and what it writes."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..distributed import World, all_sum, per_process_batch, world_from_env
from ..errors import EdgeSqueezeError, require
from ..fileio import cannot_write, write_csv_atomic
from ..preprocess import PreprocessSpec
from .checkpoints import build_for_training, plot_curves, save_checkpoint
from .data import ImageFolderDataset, find_splits, make_loaders
from .options import TrainOptions, TrainResult, resolved
from .recipes import amp_settings, make_optimizer, make_schedule

log = logging.getLogger("edge_squeeze")
torch = require("torch", "training")


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


def train(options: TrainOptions) -> TrainResult:
    """Train, writing best.pt, last.pt, metrics.csv and learning_curve.png into ``options.out``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process trains its share of each global batch in
    DistributedDataParallel and only the first writes files; the result is the same as one process
    with the same global batch, and a checkpoint resumes on any number of processes.
    """
    from ..distributed import init, shutdown

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
    optimizer = make_optimizer(recipe, params, lr)
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
        from ..weights import read_weights

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
        train_loader, sampler, val_loader = make_loaders(
            options, world, train_set, val_set, per_batch, device, spec.input_shape
        )
        steps_per_epoch = -(-len(train_loader) // options.accumulate)
        scheduler = make_schedule(recipe, optimizer, steps_per_epoch, epochs)
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
        amp_dtype, scaler = amp_settings(options, device)
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
                    from ..progress import progress_bar

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
    return TrainResult(
        best_val_acc=best_acc,
        history=rows,
        labels=list(labels.names),
        out=out,
        device=str(device),
        world_size=world.size,
        global_batch=global_batch,
        writes_files=world.writes_files,
    )
