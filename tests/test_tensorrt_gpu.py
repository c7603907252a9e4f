"""TensorRT on a GPU: build fp32/fp16/int8 engines for SqueezeNet 1.1 and compare with ONNX Runtime.
Skipped without TensorRT, pycuda and a CUDA device (every machine this project has had so far)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_squeeze.runtimes.tensorrt_backend import unavailable_reason

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        unavailable_reason() is not None, reason=f"TensorRT GPU tests: {unavailable_reason()}"
    ),
]


@pytest.fixture(scope="module")
def exported(imagenet_int8_export):
    return imagenet_int8_export


def _top1(clf, shared):
    from edge_squeeze.evaluate import evaluate

    return evaluate(clf.infer, shared.val, clf.labels, clf.spec)


def test_fp16_agrees_with_onnxruntime_fp32(exported, shared):
    from edge_squeeze import Classifier

    ort = _top1(Classifier(exported / "model.onnx", backend="onnxruntime"), shared)
    trt = _top1(Classifier(exported / "model.onnx", backend="tensorrt", precision="fp16"), shared)
    assert np.mean(ort.predictions == trt.predictions) >= 0.99


def test_fp32_engine_matches(exported, shared):
    from edge_squeeze import Classifier

    ort = _top1(Classifier(exported / "model.onnx", backend="onnxruntime"), shared)
    trt = _top1(Classifier(exported / "model.onnx", backend="tensorrt", precision="fp32"), shared)
    assert np.mean(ort.predictions == trt.predictions) >= 0.99


def test_int8_engine_within_one_point(exported, shared):
    from edge_squeeze import Classifier

    fp32 = _top1(Classifier(exported / "model.onnx", backend="onnxruntime"), shared)
    int8 = _top1(Classifier(exported / "model.int8.onnx", backend="tensorrt", precision="int8"), shared)
    assert fp32.top1 - int8.top1 <= 0.01


def test_engine_is_cached_next_to_the_model(exported):
    from edge_squeeze import Classifier

    Classifier(exported / "model.onnx", backend="tensorrt", precision="fp16")
    engines = list(exported.glob("model.fp16.*.engine"))
    assert len(engines) == 1 and engines[0].with_name(engines[0].name + ".json").is_file()
    mtime = engines[0].stat().st_mtime
    Classifier(exported / "model.onnx", backend="tensorrt", precision="fp16")
    assert engines[0].stat().st_mtime == mtime  # reused, not rebuilt
