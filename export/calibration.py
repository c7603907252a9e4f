"""Calibration images: finding, sampling, preprocessing and batching them, and the cache key.

Plain functions with no GPU and no torch: ONNX Runtime's Q/DQ calibration and TensorRT's implicit
calibrator are fed by the same :class:`CalibrationSet`, with the model's own preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.preprocess import PreprocessSpec, list_images, preprocess_files, unreadable_warning

log = logging.getLogger("edge_squeeze")

MIN_CALIBRATION_IMAGES = 8


def select_calibration_images(
    folder: Union[str, os.PathLike[str]], count: Optional[int] = None, seed: int = 0
) -> List[Path]:
    """All images under ``folder`` (recursively), or a deterministic sample of ``count`` of them."""
    images = list_images(folder)
    if not images:
        raise EdgeSqueezeError(
            f"calibration folder {folder} holds no images (.jpg .jpeg .png .bmp .webp .tif); "
            "point --calib at a folder of typical input photos"
        )
    if count is not None and count < len(images):
        rng = random.Random(seed)
        images = sorted(rng.sample(images, count))
    return images


class CalibrationSet:
    """Preprocessed calibration images held in memory (SqueezeNet's inputs are small: 0.6 MB each).

    Unreadable files are skipped with one warning naming them; fewer than ``minimum`` readable
    images is an error, because ranges from a handful of photos generalise badly.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        spec: PreprocessSpec,
        minimum: int = MIN_CALIBRATION_IMAGES,
        progress: bool = False,
    ) -> None:
        self.spec = spec
        reasons: List[str] = []
        arrays, kept = preprocess_files(
            paths, spec, what="calibration image", progress=progress, warn=False, unreadable=reasons
        )
        kept_set = set(kept)
        self.paths: List[Path] = [Path(paths[i]) for i in kept]
        self.skipped: List[Path] = [Path(p) for i, p in enumerate(paths) if i not in kept_set]
        if len(arrays) < minimum:
            raise EdgeSqueezeError(
                f"only {len(arrays)} readable calibration image(s) of {len(paths)} (need at least {minimum}); "
                "add more typical photos to the --calib folder"
            )
        unreadable_warning("calibration image", reasons, len(paths))
        self.data = np.stack(arrays).astype(np.float32)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Full batches in order, then the remainder (ONNX Runtime takes any batch size)."""
        for start in range(0, len(self), batch_size):
            yield self.data[start : start + batch_size]

    def fixed_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Batches of exactly ``batch_size``, the last padded by repeating images from the start.

        TensorRT's implicit calibrator binds one fixed batch size; dropping the remainder would
        ignore images, so they are kept and the batch is filled up instead.
        """
        n = len(self)
        for start in range(0, n, batch_size):
            idx = np.arange(start, start + batch_size) % n
            yield np.ascontiguousarray(self.data[idx])

    def fingerprint(self) -> str:
        """Which files, at which sizes and times, preprocessed how: a rerun with the same answer reuses ranges."""
        return calibration_fingerprint(self.paths, self.spec)


def calibration_fingerprint(paths: Sequence[Path], spec: PreprocessSpec) -> str:
    """The identity of a calibration set without reading its images: each file's name, size and
    modification time, and the preprocessing applied to them."""
    digest = hashlib.sha256()
    for path in paths:
        st = Path(path).stat()
        digest.update(f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    digest.update(spec.to_json().encode())
    return digest.hexdigest()


def calibration_cache_key(
    model_sha256: str, calibration_fingerprint: str, method: str, **options: object
) -> str:
    """The key a calibration cache is stored under: model, calibration set + preprocessing, method."""
    payload = json.dumps(
        {"model": model_sha256, "calib": calibration_fingerprint, "method": method, "options": options},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
