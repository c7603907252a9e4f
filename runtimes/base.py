"""The protocol every backend answers.

Building a backend and running it live apart, as in Polygraphy: each backend module has a loader,
``load(path, options) -> Backend`` with its own typed options object, and a runner class that
answers :class:`Backend`. :mod:`.select` picks the loader.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.metadata import ArtifactMetadata

try:  # Protocol is 3.8+, runtime_checkable too; kept in one place
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    name: str  # "onnxruntime" | "tensorrt" | "pytorch"
    precision: str  # "fp32" | "fp16" | "int8"
    device: str  # e.g. "cpu", "cuda:0 (Orin)", "CUDAExecutionProvider"
    input_name: str
    input_shape: Tuple[Optional[int], int, int, int]  # None: dynamic batch
    max_batch: Optional[int] = (
        None  # the most one launch takes (a TensorRT profile); larger batches run in slices
    )
    model_path: str = ""
    # "float32" (normalised NCHW) or "uint8" (raw NHWC pixels: PreprocessSpec.input_format)
    input_dtype: str = "float32"


class Backend(Protocol):
    info: BackendInfo
    metadata: ArtifactMetadata  # labels and preprocessing, from the artifact itself

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run a preprocessed batch (``info.input_dtype`` and ``info.input_shape``: what the model's
        own preprocessing makes); return float32 logits of shape (N, classes)."""
        ...

    def last_stage_ms(self) -> Dict[str, float]:
        """Device time of the last ``infer``'s stages in ms (TensorRT: ``h2d``, ``infer``, ``d2h``
        from CUDA events); empty where the runtime has none."""
        ...

    def close(self) -> None:
        """Release sessions, contexts and buffers."""
        ...


def check_input(batch: np.ndarray, info: BackendInfo) -> np.ndarray:
    """Validate a batch against the backend's input, with one clear line on any mismatch."""
    if not isinstance(batch, np.ndarray):
        raise EdgeSqueezeError(f"input must be a numpy array, got {type(batch).__name__}")
    if batch.dtype != np.dtype(info.input_dtype):
        raise EdgeSqueezeError(
            f"input dtype must be {info.input_dtype}, got {batch.dtype}: pass images through the "
            "model's own preprocessing first (Classifier.preprocess)"
        )
    expected = info.input_shape
    if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(expected[1:]):
        want = "x".join("N" if d is None else str(d) for d in expected)
        layout = "NHWC" if info.input_dtype == "uint8" else "NCHW"
        raise EdgeSqueezeError(
            f"input shape must be {want} ({layout}), got {tuple(batch.shape)}: use the model's own preprocessing"
        )
    if expected[0] is not None and batch.shape[0] != expected[0]:
        raise EdgeSqueezeError(f"this model takes batches of exactly {expected[0]}, got {batch.shape[0]}")
    if batch.shape[0] == 0:
        raise EdgeSqueezeError("input batch is empty")
    return np.ascontiguousarray(batch)
