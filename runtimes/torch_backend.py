"""PyTorch eager backend: runs training checkpoints and ``.pth`` weights directly (reference numbers,
and a way to check an export against its source). Needs torch, so it is workstation side."""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np

from edge_squeeze.errors import require
from edge_squeeze.metadata import ArtifactMetadata

from .base import BackendInfo, check_input


class TorchBackend:
    def __init__(self, model: Any, metadata: ArtifactMetadata, path: str, threads: int = 0) -> None:
        self.torch = require("torch", "the PyTorch backend")
        if threads:
            self.torch.set_num_threads(threads)
        self.model = model.eval()
        self.metadata = metadata
        c, h, w = metadata.preprocess.input_shape
        self.info = BackendInfo("pytorch", "fp32", "cpu", "input", (None, c, h, w), model_path=path)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_input(batch, self.info)
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(batch)).numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        self.model = None


def load(path: Union[str, os.PathLike[str]], threads: int = 0, arch: Any = None) -> TorchBackend:
    """A checkpoint (which names its own arch) or, with ``arch``, a plain state dict."""
    from edge_squeeze.weights import load_model

    bundle = load_model(path, arch=arch)
    metadata = ArtifactMetadata(
        arch=bundle.config.arch,
        labels=bundle.labels,
        preprocess=bundle.preprocess,
        weights_sha256=bundle.weights_sha256,
        model_config=bundle.config.to_dict(),
    )
    return TorchBackend(bundle.model, metadata, str(path), threads)
