"""TensorRT backend: a deserialized engine run through pycuda buffers and a CUDA stream.

* page-locked host buffers, device buffers and one CUDA stream, allocated once for the profile's
  maximum batch and reused on every call;
* ``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3`` (TensorRT >= 8.5);
* CUDA events time host->device, inference and device->host (``last_stage_ms``);
* optional CUDA-graph capture of the batch-1 launch (SqueezeNet is launch-bound), via cuda-python;
* one execution context guarded by a lock (``Classifier`` adds one too), released by ``close``.

The buffers, stream, events and graph live in :mod:`.cuda_buffers`, which has run on a GPU
(docs/gpu-validation.md); this file adds TensorRT around them.

Engines are cached next to the ONNX model, keyed by TensorRT version, GPU, precision, batch
profile, DLA core and model hash; a cached engine for another TensorRT or GPU, or a corrupt one,
is rebuilt with one log line; a bare ``.engine`` from another device is a clear error.

**Unrun here**: no machine available to this project had TensorRT, so deserialisation,
``set_input_shape`` and ``execute_async_v3`` have never executed; the code is type-checked with
mypy against ``tensorrt-stubs`` and its GPU-free logic is tested on the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from edge_squeeze.environment import tensorrt_version
from edge_squeeze.errors import INSTALL_HINTS, EdgeSqueezeError, MissingDependencyError
from edge_squeeze.fileio import sha256_file

from .base import BackendInfo, check_input
from .cuda_buffers import CudaBuffers
from .cuda_buffers import unavailable_reason as cuda_unavailable_reason

log = logging.getLogger("edge_squeeze")


def unavailable_reason() -> Optional[str]:
    """Why TensorRT cannot run here, or None when it can (TensorRT, pycuda and a CUDA device)."""
    if tensorrt_version() is None:
        return f"TensorRT is not installed ({INSTALL_HINTS['tensorrt']})"
    return cuda_unavailable_reason()


@dataclasses.dataclass
class TensorRTOptions:
    profile: str = "1,1,8"  # min,opt,max batch of the optimization profile when building
    dla_core: Optional[int] = None
    workspace_mb: Optional[int] = None
    calib: Optional[str] = None  # calibration folder, for implicit INT8 from an fp32 model
    cuda_graph: bool = False


class TensorRTBackend:
    def __init__(self, engine_path: Path, sidecar: Any, cuda_graph: bool = False) -> None:
        import tensorrt as trt

        self.metadata = sidecar.metadata
        self._input = sidecar.input_name
        self._output = sidecar.output_name
        max_batch = sidecar.profile.max
        c, h, w = self.metadata.preprocess.input_shape
        classes = len(self.metadata.labels)
        self._buffers = CudaBuffers((max_batch, c, h, w), (max_batch, classes))
        with self._buffers:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if engine is None:
                self._buffers.close()
                raise EdgeSqueezeError(
                    f"TensorRT cannot deserialize {engine_path}: corrupt, or built for another TensorRT/GPU; "
                    "rebuild it with edge-squeeze build-engine"
                )
            self._engine = engine
            self._context = engine.create_execution_context()
            self._context.set_tensor_address(self._input, self._buffers.input_address)
            self._context.set_tensor_address(self._output, self._buffers.output_address)
        self._lock = threading.Lock()
        self._want_graph = cuda_graph
        self._bound_batch = 0
        self.info = BackendInfo(
            name="tensorrt",
            precision=sidecar.precision,
            device=f"cuda:0 ({sidecar.gpu_name})"
            + (f", DLA {sidecar.dla_core}" if sidecar.dla_core is not None else ""),
            input_name=self._input,
            input_shape=(None, c, h, w),
            max_batch=max_batch,
            model_path=str(engine_path),
        )

    def _enqueue(self, stream_handle: int) -> None:
        if not self._context.execute_async_v3(stream_handle):
            raise EdgeSqueezeError("TensorRT execution failed")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_input(batch, self.info)
        n = batch.shape[0]
        with self._lock, self._buffers:
            if n != self._bound_batch:
                c, h, w = batch.shape[1:]
                if not self._context.set_input_shape(self._input, (n, c, h, w)):
                    raise EdgeSqueezeError(f"TensorRT refused input shape {(n, c, h, w)}")
                self._bound_batch = n
                if n == 1 and self._want_graph and not self._buffers.has_graph:
                    self._want_graph = False  # one try: a failed capture falls back to plain launches
                    why_not = self._buffers.capture_graph(self._enqueue)
                    if why_not:
                        log.warning("no CUDA graph (%s); running without", why_not)
            return self._buffers.run(batch, self._enqueue)

    def last_stage_ms(self) -> Dict[str, float]:
        """GPU time of the last call's stages, from CUDA events (bench uses these)."""
        return dict(self._buffers.stage_ms)

    def close(self) -> None:
        if getattr(self, "_context", None) is None:
            return
        with self._buffers:
            self._context = None  # type: ignore[assignment]
            self._engine = None  # type: ignore[assignment]
        self._buffers.close()


def _load_engine(engine_path: Path, cuda_graph: bool) -> TensorRTBackend:
    from edge_squeeze.export.tensorrt_build import Sidecar, current_device, incompatibility

    sidecar = Sidecar.read(engine_path)
    problem = incompatibility(sidecar, current_device())
    if problem:
        raise EdgeSqueezeError(
            f"{engine_path} cannot run here: {problem}. Rebuild it on this device: "
            f"edge-squeeze build-engine <model.onnx> --precision {sidecar.precision}"
        )
    return TensorRTBackend(engine_path, sidecar, cuda_graph)


def cached_engine(onnx_path: Path, precision: str, options: TensorRTOptions) -> Path:
    """The engine for ``onnx_path`` cached beside it, built (or rebuilt, with one log line) as needed."""
    from edge_squeeze.export.tensorrt_build import (
        BatchProfile,
        BuildOptions,
        Sidecar,
        build_engine,
        current_device,
        engine_cache_path,
        incompatibility,
    )

    device = current_device()
    profile = BatchProfile.parse(options.profile)
    model_sha = sha256_file(onnx_path)
    path = engine_cache_path(onnx_path, model_sha, device, precision, profile, options.dla_core)
    if path.is_file():
        try:
            sidecar = Sidecar.read(path)
            problem = incompatibility(sidecar, device)
            if (
                problem is None
                and sidecar.onnx_sha256 == model_sha
                and sidecar.engine_sha256 == sha256_file(path)
            ):
                return path
            log.info("rebuilding cached engine %s: %s", path.name, problem or "model or engine changed")
        except EdgeSqueezeError as exc:
            log.info("rebuilding cached engine %s: %s", path.name, exc)
    build = BuildOptions(
        precision=precision,
        profile=profile,
        dla_core=options.dla_core,
        calib_dir=Path(options.calib) if options.calib else None,
        timing_cache=onnx_path.with_name(f"{device.slug()}.timing.cache"),
    )
    if options.workspace_mb:
        build.workspace_mb = options.workspace_mb
    built, _ = build_engine(onnx_path, build, path)
    return built


def load(
    path: Union[str, os.PathLike[str]], precision: Optional[str] = None, **options: Any
) -> TensorRTBackend:
    """An ``.engine`` (with its sidecar), or an ONNX model built once and cached beside it."""
    reason = unavailable_reason()
    if reason is not None:
        raise MissingDependencyError(f"the TensorRT backend cannot run here: {reason}")
    path = Path(path)
    known = {f.name for f in dataclasses.fields(TensorRTOptions)}
    trt_options = TensorRTOptions(**{k: v for k, v in options.items() if k in known})
    if path.suffix in (".engine", ".plan", ".trt"):
        return _load_engine(path, trt_options.cuda_graph)
    if precision is None:
        precision = "int8" if path.name.endswith(".int8.onnx") else "fp16"
    return _load_engine(cached_engine(path, precision, trt_options), trt_options.cuda_graph)


__all__: List[str] = ["TensorRTBackend", "TensorRTOptions", "load", "unavailable_reason"]
