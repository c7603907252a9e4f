"""Training data: class folders and their split, augmentation, the dataset, sampler and loaders."""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..distributed import World, per_process_batch, world_from_env
from ..errors import EdgeSqueezeError, require
from ..labels import Labels
from ..preprocess import PreprocessSpec, list_images, normalise, preprocess_one, read_image
from .options import VAL_FRACTION, LoaderSpeed, TrainOptions, resolved

log = logging.getLogger("edge_squeeze")
torch = require("torch", "training")


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


def make_loaders(
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


def profile_data(options: TrainOptions, batches: int = 50) -> LoaderSpeed:
    """Images per second the training loader alone delivers (decode, augment, normalise, collate),
    with ``options.workers`` workers: when it is below what the GPU trains at, data is the bottleneck."""
    world = world_from_env()
    global_batch = resolved(options)[2]
    train_items = find_splits(options.data, options.seed)[1]
    spec = PreprocessSpec.imagenet(options.image_size)
    per_batch = per_process_batch(global_batch, world.size, options.accumulate)
    train_set = ImageFolderDataset(train_items, spec, train=True, seed=options.seed)
    device = torch.device("cpu")
    loader, _, _ = make_loaders(options, world, train_set, train_set, per_batch, device, spec.input_shape)
    images, t0 = 0, time.perf_counter()
    for i, (x, _, _) in enumerate(loader):
        if i == 0:
            t0, images = time.perf_counter(), 0  # the first batch pays for starting the workers
            continue
        images += len(x)
        if i >= batches:
            break
    seconds = time.perf_counter() - t0
    return LoaderSpeed(images / seconds if seconds > 0 else 0.0, images, options.workers, per_batch)
