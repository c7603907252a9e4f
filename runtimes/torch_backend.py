"""PyTorch eager backend: runs training checkpoints and ``.pth`` weights directly (reference numbers,
and a way to check an export against its source). Needs torch, so it is workstation side."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from edge_squeeze.errors import require
from edge_squeeze.metadata import ArtifactMetadata

from .base import BackendInfo, check_input


@dataclasses.dataclass
class TorchOptions:
    threads: int = 0  # torch's intra-op threads; 0 leaves torch's default
    arch: Optional[str] = None  # for a plain state dict that does not name its architecture


class TorchBackend:
    def __init__(self, model: Any, metadata: ArtifactMetadata, path: str, threads: int = 0) -> None:
        self.torch = require("torch", "the PyTorch backend")
        if threads:
            from .onnxruntime_backend import cap_threads

            self.torch.set_num_threads(cap_threads(threads))
        self.model = model.eval()
        self.metadata = metadata
        c, h, w = metadata.preprocess.input_shape
        self.info = BackendInfo("pytorch", "fp32", "cpu", "input", (None, c, h, w), model_path=path)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_input(batch, self.info)
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(batch)).numpy().astype(np.float32, copy=False)

    def last_stage_ms(self) -> Dict[str, float]:
        return {}

    def close(self) -> None:
        self.model = None


def from_onnx(path: Union[str, os.PathLike[str]], threads: int = 0) -> TorchBackend:
    """The PyTorch model an edge-squeeze fp32 ONNX file was exported from, rebuilt from its metadata
    and initializers (the exporter keeps parameter names): eager reference numbers, same weights."""

    torch = require("torch", "the PyTorch backend")
    from edge_squeeze.errors import EdgeSqueezeError
    from edge_squeeze.metadata import load_onnx_model, metadata_of
    from edge_squeeze.models import SqueezeNet, SqueezeNetConfig

    model_proto = load_onnx_model(path)
    metadata = metadata_of(model_proto, str(path))
    if not metadata.model_config or metadata.precision != "fp32":
        raise EdgeSqueezeError(
            f"{path} is not an fp32 edge-squeeze export; the PyTorch backend needs model.onnx"
        )
    model = SqueezeNet(SqueezeNetConfig.from_dict(metadata.model_config))
    numpy_helper = require("onnx.numpy_helper", "reading ONNX weights")
    arrays = {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise EdgeSqueezeError(f"{path} lacks parameters {missing[:3]}; export it with edge-squeeze")
    model.load_state_dict({k: torch.from_numpy(arrays[k].copy()) for k in wanted})
    return TorchBackend(model, metadata, str(path), threads)


def load(path: Union[str, os.PathLike[str]], options: Optional[TorchOptions] = None) -> TorchBackend:
    """A checkpoint (which names its own arch), a plain state dict with ``options.arch``, an ``.esqz``
    or ``.net`` file, or an fp32 export."""
    from edge_squeeze.models import load_model

    options = options or TorchOptions()
    if Path(path).suffix == ".onnx":
        return from_onnx(path, options.threads)
    bundle = load_model(path, arch=options.arch)
    metadata = ArtifactMetadata(
        arch=bundle.config.arch,
        labels=bundle.labels,
        preprocess=bundle.preprocess,
        weights_sha256=bundle.weights_sha256,
        model_config=bundle.config.to_dict(),
    )
    return TorchBackend(bundle.model, metadata, str(path), options.threads)
