"""Reusable pycuda I/O for one GPU model call: page-locked host buffers, device buffers, a stream,
CUDA events per stage and an optional CUDA graph of the batch-1 launch.

The TensorRT backend hands ``run`` its ``execute_async_v3`` as the ``enqueue`` callable; anything
that enqueues work on the given stream handle works the same way, which is how this class is tested
on a GPU without TensorRT (``tests/test_cuda_buffers_gpu.py``, a pycuda kernel as the model).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from edge_squeeze.errors import INSTALL_HINTS, EdgeSqueezeError, require

Enqueue = Callable[[int], None]


def unavailable_reason() -> Optional[str]:
    """Why pycuda cannot run here, or None when it can (pycuda and a CUDA device)."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        return f"pycuda is not installed ({INSTALL_HINTS['pycuda']})"
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA device found"
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a driver
        return f"CUDA is not usable: {exc}"
    return None


def _cudart() -> Any:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (the current name, used on the GPU
    this was tested on), else the older ``cuda.cudart``; None without cuda-python."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[attr-defined,unused-ignore]

        return cudart
    except ImportError:
        return None


class CudaBuffers:
    """Buffers sized for ``max_batch`` once; ``run`` copies a batch in, enqueues, copies the result out.

    Works in the device's primary context (shared with cuda-python and TensorRT), pushed for each call
    and popped after, so several threads or libraries can use the device; calls are not thread-safe
    by themselves (the backend holds a lock around them).
    """

    def __init__(
        self,
        input_shape: Tuple[int, ...],
        output_shape: Tuple[int, ...],
        device_index: int = 0,
    ) -> None:
        cuda = require("pycuda.driver", "GPU buffers")
        self._cuda = cuda
        cuda.init()
        self._ctx = cuda.Device(device_index).retain_primary_context()
        self._ctx.push()
        try:
            self.stream = cuda.Stream()
            self.host_in = cuda.pagelocked_empty(input_shape, dtype=np.float32)
            self.host_out = cuda.pagelocked_empty(output_shape, dtype=np.float32)
            self.dev_in = cuda.mem_alloc(self.host_in.nbytes)
            self.dev_out = cuda.mem_alloc(self.host_out.nbytes)
            self._events = [cuda.Event() for _ in range(4)]
        finally:
            self._ctx.pop()
        self.stage_ms: Dict[str, float] = {}
        self._graph_exec: Any = None
        self._closed = False

    @property
    def max_batch(self) -> int:
        return int(self.host_in.shape[0])

    @property
    def input_address(self) -> int:
        return int(self.dev_in)

    @property
    def output_address(self) -> int:
        return int(self.dev_out)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def __enter__(self) -> CudaBuffers:
        self._ctx.push()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.pop()

    def capture_graph(self, enqueue: Enqueue) -> Optional[str]:
        """Capture one ``enqueue`` as a CUDA graph replayed by ``run`` for batch 1 (SqueezeNet is
        launch-bound there). Returns None on success, else why it was not captured. Call inside ``with``."""
        cudart = _cudart()
        if cudart is None:
            return "CUDA graphs need cuda-python (pip install cuda-python)"
        # The first enqueue may allocate or synchronise (TensorRT does), which capture forbids.
        enqueue(self.stream_handle)
        self.stream.synchronize()
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        (err,) = cudart.cudaStreamBeginCapture(self.stream_handle, mode)
        if err != cudart.cudaError_t.cudaSuccess:
            return f"cudaStreamBeginCapture: {err}"
        try:
            enqueue(self.stream_handle)
        finally:
            err, graph = cudart.cudaStreamEndCapture(self.stream_handle)
        if err != cudart.cudaError_t.cudaSuccess:
            return f"cudaStreamEndCapture: {err}"
        err, graph_exec = cudart.cudaGraphInstantiate(graph, 0)
        cudart.cudaGraphDestroy(graph)
        if err != cudart.cudaError_t.cudaSuccess:
            return f"cudaGraphInstantiate: {err}"
        self._graph_exec = graph_exec
        return None

    @property
    def has_graph(self) -> bool:
        return self._graph_exec is not None

    def run(self, batch: np.ndarray, enqueue: Enqueue, out_rows: Optional[int] = None) -> np.ndarray:
        """Copy ``batch`` in, enqueue (or replay the graph for batch 1), copy out; a new array.
        Stage times from CUDA events land in ``stage_ms``. Call inside ``with``."""
        n = batch.shape[0]
        if n > self.max_batch:
            raise EdgeSqueezeError(f"batch of {n} is over the buffers' maximum batch {self.max_batch}")
        cuda = self._cuda
        rows = n if out_rows is None else out_rows
        self.host_in[:n] = batch
        e0, e1, e2, e3 = self._events
        e0.record(self.stream)
        cuda.memcpy_htod_async(self.dev_in, self.host_in[:n], self.stream)
        e1.record(self.stream)
        if n == 1 and self._graph_exec is not None:
            cudart = _cudart()
            (err,) = cudart.cudaGraphLaunch(self._graph_exec, self.stream_handle)
            if err != cudart.cudaError_t.cudaSuccess:
                raise EdgeSqueezeError(f"CUDA graph launch failed: {err}")
        else:
            enqueue(self.stream_handle)
        e2.record(self.stream)
        cuda.memcpy_dtoh_async(self.host_out[:rows], self.dev_out, self.stream)
        e3.record(self.stream)
        self.stream.synchronize()
        self.stage_ms = {"h2d": e1.time_since(e0), "infer": e2.time_since(e1), "d2h": e3.time_since(e2)}
        return np.array(self.host_out[:rows], copy=True)

    def close(self) -> None:
        """Free the device memory and the graph and release the primary context; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._ctx.push()
        try:
            if self._graph_exec is not None:
                _cudart().cudaGraphExecDestroy(self._graph_exec)
                self._graph_exec = None
            self.dev_in.free()
            self.dev_out.free()
        finally:
            self._ctx.pop()
            self._ctx.detach()


__all__ = ["CudaBuffers", "Enqueue", "unavailable_reason"]
