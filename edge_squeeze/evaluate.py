"""Top-1/top-5 accuracy on a folder of labelled images.

Ground truth comes from class subfolders (named by label or class id) or, when the labels carry
ImageNet wnids, from file names such as ``n01440764_10026.JPEG``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import EdgeSqueezeError
from .labels import Labels
from .preprocess import PreprocessSpec, list_images, preprocess_files, preprocess_one, unreadable_warning
from .results import Result

log = logging.getLogger("edge_squeeze")


def ground_truth(root: Union[str, os.PathLike[str]], labels: Labels) -> Tuple[List[Path], np.ndarray]:
    """Images under ``root`` with a known class, and their class indices."""
    root = Path(root)
    images = list_images(root)
    if not images:
        raise EdgeSqueezeError(f"no images under {root} to evaluate on")
    by_name = {name: i for i, name in enumerate(labels.names)}
    by_id = labels.index_of_id()
    paths, classes, unknown = [], [], 0
    for path in images:
        rel = path.relative_to(root)
        index: Optional[int] = None
        if len(rel.parts) > 1:
            folder = rel.parts[0]
            index = by_id.get(folder, by_name.get(folder))
        if index is None and by_id:
            index = by_id.get(path.name.split("_", 1)[0])
        if index is None:
            unknown += 1
            continue
        paths.append(path)
        classes.append(index)
    if not paths:
        raise EdgeSqueezeError(
            f"cannot tell the class of any image under {root}: use one subfolder per class named as in the "
            "labels, or ImageNet file names (n01440764_*.JPEG) with wnid labels"
        )
    if unknown:
        log.warning("%d image(s) under %s have no recognisable class and were left out", unknown, root)
    return paths, np.asarray(classes, dtype=np.int64)


@dataclasses.dataclass
class Accuracy(Result):
    """Top-1 and top-5 on ``n`` labelled images; ``predictions`` (left out of the JSON) holds the top-1
    index per image, for agreement between models (:func:`edge_squeeze.results.top1_agreement`)."""

    top1: float
    top5: float
    n: int
    predictions: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)


def accuracy_from_logits(logits: np.ndarray, truth: np.ndarray) -> Accuracy:
    k = min(5, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return Accuracy(
        top1=float(np.mean(logits.argmax(1) == truth)),
        top5=float(np.mean([t in row for t, row in zip(truth, top)])),
        n=len(truth),
        predictions=logits.argmax(1),
    )


def load_eval_set(
    paths: Sequence[Path], truth: np.ndarray, spec: PreprocessSpec
) -> Tuple[np.ndarray, np.ndarray]:
    """Preprocess every readable image; unreadable ones are skipped with one warning."""
    reasons: List[str] = []
    arrays, kept = preprocess_files(paths, spec, warn=False, unreadable=reasons)
    if not arrays:
        raise EdgeSqueezeError("none of the evaluation images could be read")
    unreadable_warning("image", reasons, len(paths))
    return np.stack(arrays), truth[kept]


def infer_batched(
    infer: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """``infer`` over ``inputs`` in batches of ``batch_size``, outputs concatenated."""
    return np.concatenate([infer(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def evaluate(
    infer: Callable[[np.ndarray], np.ndarray],
    data: Union[str, os.PathLike[str]],
    labels: Labels,
    spec: PreprocessSpec,
    batch_size: int = 32,
) -> Accuracy:
    """Accuracy of ``infer`` (a preprocessed batch -> logits) on the labelled images under ``data``.

    Images are read, preprocessed and classified ``batch_size`` at a time, so memory does not grow
    with the folder (ImageNet's 50,000 val photos held at once would take ~40 GB); unreadable ones
    are skipped, and said in one warning at the end (none when every image is unreadable: the error
    says so).
    """
    paths, truth = ground_truth(data, labels)
    logits, kept, reasons = [], [], []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        arrays, ok = [], []
        for i, path in enumerate(chunk):
            try:
                arrays.append(preprocess_one(path, spec))
                ok.append(start + i)
            except EdgeSqueezeError as exc:
                reasons.append(str(exc))
        if arrays:
            logits.append(infer(np.stack(arrays)))
            kept.extend(ok)
    if not kept:
        raise EdgeSqueezeError(f"none of the {len(paths)} evaluation images under {data} could be read")
    unreadable_warning("image", reasons, len(paths))
    return accuracy_from_logits(np.concatenate(logits), truth[kept])
