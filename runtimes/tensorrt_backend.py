"""TensorRT backend: a deserialized engine run through pycuda buffers and a CUDA stream.

* page-locked host buffers, device buffers and one CUDA stream, allocated once for the profile's
  maximum batch and reused on every call; larger batches run in slices of that maximum;
* the engine's I/O tensors (names, modes, dtypes, shapes) checked against the sidecar at load, and
  the output shape after every shape change;
* ``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3`` (TensorRT >= 8.5);
* CUDA events time host->device, inference and device->host (``last_stage_ms``);
* optional CUDA-graph capture of the batch-1 launch (SqueezeNet is launch-bound), on an execution
  context of its own that never changes shape, via cuda-python; a capture that fails leaves plain
  launches, not an error;
* one lock around the contexts (``Classifier`` adds one too), everything released by ``close``.

The buffers, stream, events and graph live in :mod:`.cuda_buffers`; what of this has run on which
device is listed in docs/gpu-validation.md.

Engines are cached next to the ONNX model, keyed by TensorRT version, GPU, precision, batch
profile, DLA core, model hash and (implicit INT8) the calibration set, by
``edge_squeeze.export.tensorrt_build.cached_engine``, which ``load`` takes as its engine builder;
a bare ``.engine`` from another device is a clear error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_squeeze.environment import tensorrt_version
from edge_squeeze.errors import INSTALL_HINTS, EdgeSqueezeError, MissingDependencyError
from edge_squeeze.formats import ENGINE_SUFFIXES, is_qdq_file

from .base import BackendInfo, check_input
from .cuda_buffers import CudaBuffers
from .cuda_buffers import unavailable_reason as cuda_unavailable_reason
from .engine_sidecar import DeviceIdentity, Sidecar, incompatibility
from .tensorrt_options import BuildOptions, TensorRTOptions

log = logging.getLogger("edge_squeeze")


def unavailable_reason() -> Optional[str]:
    """Why TensorRT cannot run here, or None when it can (TensorRT, pycuda and a CUDA device)."""
    if tensorrt_version() is None:
        return f"TensorRT is not installed ({INSTALL_HINTS['tensorrt']})"
    return cuda_unavailable_reason()


# --- GPU-free logic ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorDesc:
    """One engine I/O tensor as TensorRT describes it."""

    name: str
    is_input: bool
    dtype: str  # "float32" for TensorRT's DataType.FLOAT, else TensorRT's own name
    shape: Tuple[int, ...]  # -1 for a dynamic dimension


def check_engine_io(
    tensors: Sequence[TensorDesc],
    input_name: str,
    output_name: str,
    chw: Sequence[int],
    classes: int,
    source: str,
) -> None:
    """The engine must take one float32 N x C x H x W input and give one float32 N x classes output,
    named as its sidecar says: the buffers are sized and typed from that."""
    inputs = [t for t in tensors if t.is_input]
    outputs = [t for t in tensors if not t.is_input]
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgeSqueezeError(
            f"{source} has {len(inputs)} inputs and {len(outputs)} outputs; edge-squeeze engines have one of each"
        )
    inp, out = inputs[0], outputs[0]
    if (inp.name, out.name) != (input_name, output_name):
        raise EdgeSqueezeError(
            f"{source}'s tensors are {inp.name!r} -> {out.name!r}, its sidecar says {input_name!r} -> "
            f"{output_name!r}: the sidecar belongs to another engine; rebuild it"
        )
    for t in (inp, out):
        if t.dtype != "float32":
            raise EdgeSqueezeError(f"{source}: tensor {t.name} is {t.dtype}, edge-squeeze runs float32 I/O")
    if len(inp.shape) != 4 or tuple(inp.shape[1:]) != tuple(chw):
        raise EdgeSqueezeError(
            f"{source}: input {inp.name} has shape {inp.shape}, its preprocessing makes N x {tuple(chw)}"
        )
    if len(out.shape) != 2 or out.shape[1] != classes:
        raise EdgeSqueezeError(
            f"{source}: output {out.name} has shape {out.shape}, expected N x {classes} classes"
        )


def check_output_shape(shape: Sequence[int], batch: int, classes: int) -> None:
    """After ``set_input_shape``: TensorRT must report the output as batch x classes."""
    if tuple(shape) != (batch, classes):
        raise EdgeSqueezeError(
            f"TensorRT reports output shape {tuple(shape)} for a batch of {batch}; expected {(batch, classes)}"
        )


def batch_slices(n: int, max_batch: int) -> List[slice]:
    """Consecutive slices of at most ``max_batch`` rows covering ``n`` rows."""
    if max_batch < 1:
        raise EdgeSqueezeError(f"maximum batch must be at least 1, not {max_batch}")
    return [slice(start, min(start + max_batch, n)) for start in range(0, n, max_batch)]


def infer_in_slices(batch: np.ndarray, max_batch: int, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``run`` on slices of at most ``max_batch`` rows (an engine's profile maximum), outputs joined."""
    parts = [run(batch[s]) for s in batch_slices(batch.shape[0], max_batch)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


# --- TensorRT (type-checked against tensorrt-stubs; not run on a GPU) ---------------------------


def import_tensorrt() -> Any:
    from edge_squeeze.environment import tensorrt_version

    if tensorrt_version() is None:
        raise MissingDependencyError(
            "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer); elsewhere "
            "pip install tensorrt (see docs/jetson.md)"
        )
    import tensorrt

    return tensorrt


def current_device() -> DeviceIdentity:
    """TensorRT version and GPU 0, via pycuda."""
    trt_mod = import_tensorrt()
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise MissingDependencyError(
            "pycuda is not installed: pip install pycuda (built on the device)"
        ) from exc
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise EdgeSqueezeError("no CUDA GPU found: TensorRT needs an NVIDIA GPU")
        dev = cuda.Device(0)
        return DeviceIdentity(str(trt_mod.__version__), str(dev.name()), tuple(dev.compute_capability()))  # type: ignore[arg-type]
    except cuda.Error as exc:
        raise EdgeSqueezeError(f"CUDA is not usable here: {exc}") from exc


def make_logger(trt_mod: Any) -> Any:
    """A TensorRT ``ILogger`` that forwards to ours, so TensorRT's messages show as log lines."""
    severity = trt_mod.ILogger.Severity

    class Forwarder(trt_mod.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_mod.ILogger.__init__(self)

        def log(self, level: Any, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                log.error("TensorRT: %s", msg)
            elif level == severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Forwarder()


def read_engine_io(engine: Any) -> List[TensorDesc]:
    import tensorrt as trt

    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = engine.get_tensor_dtype(name)
        tensors.append(
            TensorDesc(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype="float32" if dtype == trt.DataType.FLOAT else str(dtype),
                shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
            )
        )
    return tensors


class TensorRTBackend:
    def __init__(self, engine_path: Path, sidecar: Any, cuda_graph: bool = False) -> None:
        import tensorrt as trt

        self.metadata = sidecar.metadata
        self._input = sidecar.input_name
        self._output = sidecar.output_name
        self._max_batch = sidecar.profile.max
        self._min_batch = sidecar.profile.min
        c, h, w = self.metadata.preprocess.input_shape
        self._classes = len(self.metadata.labels)
        self._lock = threading.Lock()
        self._context: Any = None
        self._graph_context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._buffers = CudaBuffers((self._max_batch, c, h, w), (self._max_batch, self._classes))
        try:
            with self._buffers:
                self._logger = make_logger(trt)
                self._runtime = trt.Runtime(self._logger)
                engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
                if engine is None:
                    raise EdgeSqueezeError(
                        f"TensorRT cannot deserialize {engine_path}: corrupt, or built for another TensorRT/GPU; "
                        "rebuild it with edge-squeeze build-engine"
                    )
                self._engine = engine
                check_engine_io(
                    read_engine_io(engine),
                    self._input,
                    self._output,
                    (c, h, w),
                    self._classes,
                    str(engine_path),
                )
                self._context = self._new_context()
                # the batch-1 graph gets a context of its own, whose shape never changes: a graph
                # replayed on a context that has since run other shapes would skip their setup
                if cuda_graph and self._min_batch == 1:
                    self._graph_context = self._new_context()
                    self._set_shape(self._graph_context, 1)
        except BaseException:
            self.close()
            raise
        self._want_graph = self._graph_context is not None
        if cuda_graph and self._graph_context is None:
            log.warning("no CUDA graph: the engine's batch profile starts at %d, not 1", self._min_batch)
        self._bound_batch = 0
        self.info = BackendInfo(
            name="tensorrt",
            precision=sidecar.precision,
            device=f"cuda:0 ({sidecar.gpu_name})"
            + (f", DLA {sidecar.dla_core}" if sidecar.dla_core is not None else ""),
            input_name=self._input,
            input_shape=(None, c, h, w),
            max_batch=self._max_batch,
            model_path=str(engine_path),
        )

    def _new_context(self) -> Any:
        context = self._engine.create_execution_context()
        if context is None:
            raise EdgeSqueezeError("TensorRT could not create an execution context (out of GPU memory?)")
        for name, address in (
            (self._input, self._buffers.input_address),
            (self._output, self._buffers.output_address),
        ):
            if not context.set_tensor_address(name, address):
                raise EdgeSqueezeError(f"TensorRT refused the device address of tensor {name}")
        return context

    def _set_shape(self, context: Any, n: int) -> None:
        c, h, w = self.metadata.preprocess.input_shape
        if not context.set_input_shape(self._input, (n, c, h, w)):
            raise EdgeSqueezeError(
                f"TensorRT refused input shape {(n, c, h, w)} (the engine's batch profile is "
                f"{self._min_batch}..{self._max_batch})"
            )
        check_output_shape(context.get_tensor_shape(self._output), n, self._classes)

    def _enqueue(self, stream_handle: int) -> None:
        if not self._context.execute_async_v3(stream_handle):
            raise EdgeSqueezeError("TensorRT execution failed")

    def _enqueue_graph_context(self, stream_handle: int) -> None:
        if not self._graph_context.execute_async_v3(stream_handle):
            raise EdgeSqueezeError("TensorRT execution failed")

    def _run_slice(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n < self._min_batch:  # a static or min>1 profile: pad up, keep the real rows
            padded = np.concatenate([batch, np.repeat(batch[-1:], self._min_batch - n, axis=0)])
            return self._run_slice(padded)[:n]
        if n == 1 and self._want_graph and not self._buffers.has_graph:
            self._want_graph = False  # one try: a failed capture leaves plain launches
            why_not = self._buffers.capture_graph(self._enqueue_graph_context)
            if why_not:
                log.warning("no CUDA graph (%s); running without", why_not)
        if n == 1 and self._buffers.has_graph:
            return self._buffers.run(batch, self._enqueue_graph_context)
        if n != self._bound_batch:
            self._set_shape(self._context, n)
            self._bound_batch = n
        return self._buffers.run(batch, self._enqueue)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a preprocessed batch of any size: batches over the engine's profile maximum run
        in slices of that maximum."""
        batch = check_input(batch, self.info)
        with self._lock:
            if self._context is None:
                raise EdgeSqueezeError("this TensorRT backend is closed")
            with self._buffers:
                return infer_in_slices(batch, self._max_batch, self._run_slice)

    def last_stage_ms(self) -> Dict[str, float]:
        """GPU time of the last call's stages, from CUDA events (bench uses these)."""
        return dict(self._buffers.stage_ms)

    def close(self) -> None:
        """Release the graph, then the execution contexts, the engine and the runtime, then the
        buffers and the CUDA context; safe to call twice."""
        with self._lock:
            buffers = getattr(self, "_buffers", None)
            if buffers is None:
                return
            with buffers:
                buffers.release_graph()
                self._graph_context = None
                self._context = None
                self._engine = None
                self._runtime = None
            buffers.close()
            self._buffers = None  # type: ignore[assignment]


def _load_engine(engine_path: Path, cuda_graph: bool) -> TensorRTBackend:
    sidecar = Sidecar.read(engine_path)
    problem = incompatibility(sidecar, current_device())
    if problem:
        raise EdgeSqueezeError(
            f"{engine_path} cannot run here: {problem}. Rebuild it on this device: "
            f"edge-squeeze build-engine <model.onnx> --precision {sidecar.precision}"
        )
    return TensorRTBackend(engine_path, sidecar, cuda_graph)


def default_precision(path: Path) -> str:
    """What an ONNX file builds by default: int8 for the Q/DQ model, fp16 otherwise."""
    return "int8" if is_qdq_file(path) else "fp16"


EngineBuilder = Callable[[Path, BuildOptions], Path]


def load(
    path: Union[str, os.PathLike[str]],
    options: Optional[TensorRTOptions] = None,
    engine_builder: Optional[EngineBuilder] = None,
) -> TensorRTBackend:
    """An ``.engine`` (with its sidecar); or an ONNX model, turned into an engine by ``engine_builder``
    (``edge_squeeze.export.tensorrt_build.cached_engine``: built once, cached beside the model)."""
    options = options or TensorRTOptions()
    reason = unavailable_reason()
    if reason is not None:
        raise MissingDependencyError(f"the TensorRT backend cannot run here: {reason}")
    path = Path(path)
    if path.suffix not in ENGINE_SUFFIXES:
        if engine_builder is None:
            raise EdgeSqueezeError(
                f"{path} is not an engine: build one with edge-squeeze build-engine {path}"
            )
        path = engine_builder(path, options.build)
    return _load_engine(path, options.cuda_graph)


__all__: List[str] = [
    "BuildOptions",
    "EngineBuilder",
    "TensorDesc",
    "TensorRTBackend",
    "TensorRTOptions",
    "batch_slices",
    "check_engine_io",
    "infer_in_slices",
    "load",
    "unavailable_reason",
]
