"""TensorRT on a GPU: build fp32/fp16/int8 engines for SqueezeNet 1.1 and compare with ONNX Runtime;
implicit INT8 calibrated on the device, DLA, batches over the profile, CUDA graphs across shape
changes, and release. Skipped without TensorRT, pycuda and a CUDA device (every machine this project
has had so far: these have not run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_squeeze.runtimes.tensorrt_backend import unavailable_reason

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        unavailable_reason() is not None, reason=f"TensorRT GPU tests: {unavailable_reason()}"
    ),
]

# 500 photos: at ~90 % agreement the net top-1 difference between two models spreads by ~2 points
# (docs/int8.md), so INT8 is held to that, not to 1 point
INT8_TOP1_DROP = 0.02
INT8_AGREEMENT = 0.90


@pytest.fixture(scope="module")
def exported(imagenet_int8_export):
    return imagenet_int8_export


@pytest.fixture(scope="module")
def reference(exported, shared):
    from edge_squeeze import Classifier

    return _accuracy(Classifier(exported / "model.onnx", backend="onnxruntime"), shared)


def _accuracy(clf, shared, batch_size=32):
    from edge_squeeze.evaluate import evaluate

    return evaluate(clf.infer, shared.val, clf.labels, clf.spec, batch_size=batch_size)


def _trt_major():
    import tensorrt

    return int(tensorrt.__version__.split(".")[0])


def test_fp16_agrees_with_onnxruntime_fp32(exported, shared, reference):
    from edge_squeeze import Classifier

    trt = _accuracy(Classifier(exported / "model.onnx", backend="tensorrt", precision="fp16"), shared)
    assert np.mean(reference.predictions == trt.predictions) >= 0.98


def test_fp32_engine_matches(exported, shared, reference):
    from edge_squeeze import Classifier

    trt = _accuracy(Classifier(exported / "model.onnx", backend="tensorrt", precision="fp32"), shared)
    assert np.mean(reference.predictions == trt.predictions) >= 0.99


def test_explicit_int8_engine_is_within_the_noise(exported, shared, reference):
    from edge_squeeze import Classifier

    int8 = _accuracy(Classifier(exported / "model.int8.onnx", backend="tensorrt", precision="int8"), shared)
    assert reference.top1 - int8.top1 <= INT8_TOP1_DROP
    assert np.mean(reference.predictions == int8.predictions) >= INT8_AGREEMENT


def test_implicit_int8_calibrates_on_the_device(exported, shared, reference):
    from edge_squeeze import Classifier
    from edge_squeeze.runtimes.tensorrt_backend import BuildOptions, TensorRTOptions

    if _trt_major() >= 11:
        pytest.skip("TensorRT 11 has no implicit INT8")
    options = TensorRTOptions(
        build=BuildOptions(precision="int8", int8_mode="implicit", calib_dir=shared.calib, calib_count=64)
    )
    int8 = _accuracy(Classifier(exported / "model.onnx", backend="tensorrt", tensorrt=options), shared)
    assert reference.top1 - int8.top1 <= INT8_TOP1_DROP
    assert list(exported.glob("model.trt-entropy-*.calib")), "the calibration cache is written, keyed"


def test_dla_engine_reports_its_placement(exported):
    import tensorrt

    from edge_squeeze.runtimes.tensorrt_backend import BuildOptions, TensorRTOptions, load, make_logger

    if _trt_major() >= 11 or tensorrt.Builder(make_logger(tensorrt)).num_DLA_cores == 0:
        pytest.skip("no DLA core here (Xavier / Orin with TensorRT <= 10 only)")
    from edge_squeeze.runtimes.engine_sidecar import Sidecar

    backend = load(exported / "model.onnx", TensorRTOptions(build=BuildOptions(precision="fp16", dla_core=0)))
    sidecar = Sidecar.read(Path(backend.info.model_path))
    assert sidecar.dla_core == 0 and sidecar.profile.is_static and sidecar.dla_layers["on_dla"] > 0
    x = np.zeros((3, *backend.metadata.preprocess.input_shape), np.float32)
    assert backend.infer(x).shape == (3, len(backend.metadata.labels))  # static batch 1, three launches
    backend.close()


def test_batches_over_the_profile_maximum_are_sliced(exported, shared):
    from edge_squeeze import Classifier

    clf = Classifier(exported / "model.onnx", backend="tensorrt", precision="fp32")  # profile 1,1,8
    assert clf.info.max_batch == 8
    big = _accuracy(clf, shared, batch_size=32)
    small = _accuracy(clf, shared, batch_size=8)
    assert np.array_equal(big.predictions, small.predictions)


def test_cuda_graph_survives_shape_changes(exported, shared):
    pytest.importorskip("cuda")
    from edge_squeeze import Classifier

    graph = Classifier(exported / "model.onnx", backend="tensorrt", precision="fp32", cuda_graph=True)
    plain = Classifier(exported / "model.onnx", backend="tensorrt", precision="fp32")
    images = sorted(shared.val.iterdir())[:8]
    x = graph.preprocess([str(p) for p in images])
    outputs = [
        graph.infer(x[:1]),
        graph.infer(x),
        graph.infer(x[:3]),
        graph.infer(x[1:2]),
        graph.infer(x[:1]),
    ]
    assert graph.backend._buffers.has_graph
    np.testing.assert_allclose(outputs[0], plain.infer(x[:1]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outputs[3], plain.infer(x[1:2]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outputs[4], outputs[0], rtol=1e-5, atol=1e-5)
    graph.close()
    plain.close()


def test_close_releases_gpu_memory_and_can_be_called_twice(exported):
    import pycuda.driver as cuda

    from edge_squeeze.runtimes.cuda_buffers import primary_context
    from edge_squeeze.runtimes.tensorrt_backend import BuildOptions, TensorRTOptions, load

    load(
        exported / "model.onnx", TensorRTOptions(build=BuildOptions(precision="fp16"))
    ).close()  # build and warm up once
    with primary_context():
        before, _ = cuda.mem_get_info()
    for _ in range(3):
        backend = load(
            exported / "model.onnx", TensorRTOptions(cuda_graph=True, build=BuildOptions(precision="fp16"))
        )
        backend.infer(np.zeros((1, *backend.metadata.preprocess.input_shape), np.float32))
        backend.close()
        backend.close()
    with primary_context():
        after, _ = cuda.mem_get_info()
    assert after >= before - (16 << 20)  # no engine's worth of memory left behind


def test_engine_is_cached_next_to_the_model(exported):
    from edge_squeeze import Classifier

    Classifier(exported / "model.onnx", backend="tensorrt", precision="fp16")
    engines = list(exported.glob("model.fp16.trt*.engine"))
    assert len(engines) == 1 and engines[0].with_name(engines[0].name + ".json").is_file()
    mtime = engines[0].stat().st_mtime
    Classifier(exported / "model.onnx", backend="tensorrt", precision="fp16")
    assert engines[0].stat().st_mtime == mtime  # reused, not rebuilt
