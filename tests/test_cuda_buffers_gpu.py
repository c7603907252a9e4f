"""The pycuda I/O under the TensorRT backend, run on a real GPU with a CUDA kernel standing in for the
engine (no TensorRT needed): page-locked and device buffers, async copies on one stream, CUDA events,
graph capture and replay, release. Skipped without pycuda and a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.runtimes.cuda_buffers import CudaBuffers, unavailable_reason

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(unavailable_reason() is not None, reason=f"pycuda GPU tests: {unavailable_reason()}"),
]

MAX_BATCH, C, H, W, K = 4, 3, 8, 8, 5

# y[r, j] = (j + 1) * mean(x[r, j % C]): a different, checkable number in every output cell.
KERNEL = r"""
__global__ void channel_means(const float* x, float* y, int n, int c, int hw, int k) {
    int row = blockIdx.x, j = threadIdx.x;
    if (row >= n || j >= k) return;
    const float* plane = x + (row * c + (j % c)) * hw;
    float s = 0.f;
    for (int i = 0; i < hw; ++i) s += plane[i];
    y[row * k + j] = (j + 1) * s / hw;
}
"""


def reference(x: np.ndarray) -> np.ndarray:
    means = x.reshape(x.shape[0], C, H * W).mean(axis=2)
    return np.stack([(j + 1) * means[:, j % C] for j in range(K)], axis=1)


class KernelModel:
    """Enqueues the kernel on the stream it is given, like TensorRT's execute_async_v3."""

    def __init__(self, buffers: CudaBuffers) -> None:
        from pycuda.compiler import SourceModule

        with buffers:
            self.fn = SourceModule(KERNEL).get_function("channel_means")
        self.fn.prepare("PPiiii")
        self.buffers = buffers
        self.batch = 1
        self.calls = 0

    def __call__(self, stream_handle: int) -> None:
        assert stream_handle == self.buffers.stream_handle
        self.calls += 1
        self.fn.prepared_async_call(
            (self.batch, 1),
            (32, 1, 1),
            self.buffers.stream,
            self.buffers.input_address,
            self.buffers.output_address,
            self.batch,
            C,
            H * W,
            K,
        )


@pytest.fixture()
def buffers():
    b = CudaBuffers((MAX_BATCH, C, H, W), (MAX_BATCH, K))
    yield b
    b.close()


def test_each_batch_size_matches_numpy_and_is_timed(buffers):
    model = KernelModel(buffers)
    rng = np.random.default_rng(0)
    addresses = (buffers.input_address, buffers.output_address)
    for n in (1, 3, 4, 2):
        x = rng.normal(size=(n, C, H, W)).astype(np.float32)
        model.batch = n
        with buffers:
            y = buffers.run(x, model)
        assert y.shape == (n, K)
        np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-6)
        assert set(buffers.stage_ms) == {"h2d", "infer", "d2h"}
        assert all(0.0 <= v < 1000.0 for v in buffers.stage_ms.values())
    assert (buffers.input_address, buffers.output_address) == addresses  # allocated once, reused


def test_result_is_a_copy_not_the_pinned_buffer(buffers):
    model = KernelModel(buffers)
    x = np.ones((1, C, H, W), np.float32)
    with buffers:
        first = buffers.run(x, model)
        buffers.run(2 * x, model)
    np.testing.assert_allclose(first, reference(x), rtol=1e-6)


def test_graph_replays_the_captured_launch_on_new_inputs(buffers):
    model = KernelModel(buffers)
    with buffers:
        assert buffers.capture_graph(model) is None
    assert buffers.has_graph
    calls_after_capture = model.calls
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.normal(size=(1, C, H, W)).astype(np.float32)
        with buffers:
            y = buffers.run(x, model)
        np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-6)
    assert model.calls == calls_after_capture  # batch 1 ran from the graph, not through enqueue
    model.batch = 2
    x = rng.normal(size=(2, C, H, W)).astype(np.float32)
    with buffers:
        np.testing.assert_allclose(buffers.run(x, model), reference(x), rtol=1e-5, atol=1e-6)
    assert model.calls == calls_after_capture + 1  # other batch sizes still enqueue


def test_a_launch_that_fails_under_capture_leaves_a_working_stream(buffers):
    model = KernelModel(buffers)
    calls = {"n": 0}

    def fails_the_second_time(handle):  # warm-up succeeds, the captured launch is refused
        calls["n"] += 1
        model(handle)
        if calls["n"] == 2:
            raise EdgeSqueezeError("TensorRT execution failed")

    with buffers:
        why = buffers.capture_graph(fails_the_second_time)
    assert why is not None and "TensorRT execution failed" in why and not buffers.has_graph
    x = np.random.default_rng(2).normal(size=(1, C, H, W)).astype(np.float32)
    with buffers:
        y = buffers.run(x, model)  # plain launches on the same stream still work
    np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-6)


def test_batch_over_the_maximum_is_a_clear_error(buffers):
    with pytest.raises(EdgeSqueezeError, match="maximum batch 4"), buffers:
        buffers.run(np.zeros((MAX_BATCH + 1, C, H, W), np.float32), lambda handle: None)


def test_close_releases_and_can_be_called_twice():
    import pycuda.driver as cuda

    b = CudaBuffers((MAX_BATCH, C, H, W), (MAX_BATCH, K))
    with b:
        free_before, _ = cuda.mem_get_info()
        assert b.capture_graph(KernelModel(b)) is None
    b.close()
    b.close()
    assert b.stream is None  # stream and events destroyed while the context was current
    b2 = CudaBuffers((MAX_BATCH, C, H, W), (MAX_BATCH, K))
    with b2:
        free_again, _ = cuda.mem_get_info()
    b2.close()
    assert free_again >= free_before  # nothing leaked by the first set
