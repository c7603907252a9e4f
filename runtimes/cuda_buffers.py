"""Reusable pycuda I/O for one GPU model call: page-locked host buffers, device buffers, a stream,
CUDA events per stage and an optional CUDA graph of the batch-1 launch.

The TensorRT backend hands ``run`` its ``execute_async_v3`` as the ``enqueue`` callable; anything
that enqueues work on the given stream handle works the same way, which is how this class is tested
on a GPU without TensorRT (``tests/test_cuda_buffers_gpu.py``, a pycuda kernel as the model).

Everything runs in the device's *primary* context, the one TensorRT and the CUDA runtime use:
:func:`primary_context` pushes it for a block of work (an engine build, a calibrator's buffers),
``with buffers:`` does the same around each call.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

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


@contextlib.contextmanager
def primary_context(device_index: int = 0) -> Iterator[Any]:
    """The device's primary context, retained and made current for the block, then popped and
    released. pycuda allocations (``mem_alloc``, streams) need a current context; TensorRT and the
    CUDA runtime use this same one, so memory allocated here is valid for them."""
    cuda = require("pycuda.driver", "GPU work")
    cuda.init()
    ctx = cuda.Device(device_index).retain_primary_context()
    ctx.push()
    try:
        yield ctx
    finally:
        ctx.pop()
        ctx.detach()


def _cudart() -> Any:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (cuda-python 12.6+ and 13), else the
    older ``cuda.cudart`` (cuda-python 11.x on JetPack 5, 12.x before 12.6); None without cuda-python."""
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


def capture_graph(cudart: Any, stream_handle: int, enqueue: Enqueue) -> Tuple[Any, Optional[str]]:
    """Capture one ``enqueue`` on ``stream_handle`` and instantiate it: ``(graph_exec, None)``, or
    ``(None, why)`` with nothing left behind when any step fails.

    A failed step ends the capture (a stream left capturing breaks every later launch on it),
    destroys the half-captured graph and clears CUDA's sticky last error, as trtexec's
    ``endCaptureOnError`` does. ``cudaGraphInstantiateWithFlags`` has the same signature and return
    tuple in cuda-python 11.x and 12/13, where ``cudaGraphInstantiate`` does not.
    """
    success = cudart.cudaError_t.cudaSuccess
    mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    (err,) = cudart.cudaStreamBeginCapture(stream_handle, mode)
    if err != success:
        cudart.cudaGetLastError()
        return None, f"cudaStreamBeginCapture: {err}"
    failure: Optional[str] = None
    try:
        enqueue(stream_handle)
    except Exception as exc:  # the launch itself refused to be captured (TensorRT returns False)
        failure = f"the launch failed under capture ({exc})"
    err, graph = cudart.cudaStreamEndCapture(stream_handle)
    if failure is None and err != success:
        failure = f"cudaStreamEndCapture: {err}"
    if failure is not None:
        if graph is not None and int(graph) != 0:
            cudart.cudaGraphDestroy(graph)
        cudart.cudaGetLastError()
        return None, failure
    err, graph_exec = cudart.cudaGraphInstantiateWithFlags(graph, 0)
    cudart.cudaGraphDestroy(graph)
    if err != success:
        cudart.cudaGetLastError()
        return None, f"cudaGraphInstantiateWithFlags: {err}"
    return graph_exec, None


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
        launch-bound there). ``enqueue`` must always run the batch-1 shape (the TensorRT backend
        gives it an execution context of its own). Returns None on success, else why it was not
        captured, with nothing left half-captured. Call inside ``with``."""
        cudart = _cudart()
        if cudart is None:
            return "CUDA graphs need cuda-python (pip install cuda-python)"
        # The first enqueue may allocate or synchronise (TensorRT does), which capture forbids.
        try:
            enqueue(self.stream_handle)
            self.stream.synchronize()
        except Exception as exc:
            return f"the launch failed before capture ({exc})"
        graph_exec, why_not = capture_graph(cudart, self.stream_handle, enqueue)
        if graph_exec is not None:
            self._graph_exec = graph_exec
        return why_not

    @property
    def has_graph(self) -> bool:
        return self._graph_exec is not None

    def release_graph(self) -> None:
        """Destroy the captured graph, if any (before the execution context it launches). Call inside
        ``with``."""
        if self._graph_exec is not None:
            _cudart().cudaGraphExecDestroy(self._graph_exec)
            self._graph_exec = None

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
        """Free the graph, device memory, page-locked host memory, stream and events, then release
        the primary context; safe to call twice.

        Everything is freed while the context is still current: pycuda frees a stream, event or
        pinned buffer whose context is already gone by skipping it silently, which leaks it.
        """
        if self._closed:
            return
        self._closed = True
        self._ctx.push()
        try:
            self.release_graph()
            self.dev_in.free()
            self.dev_out.free()
            for host in (self.host_in, self.host_out):
                host.base.free()  # the PagelockedHostAllocation under the array
            self.stream.synchronize()
            # dropping the last references runs pycuda's destructors now, in this context
            self._events = []
            self.stream = None
        finally:
            self._ctx.pop()
            self._ctx.detach()


__all__ = ["CudaBuffers", "Enqueue", "capture_graph", "primary_context", "unavailable_reason"]
