"""Property-based: whatever array a caller hands the Python API, the answer is a prediction or one
EdgeSqueezeError, never another exception."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_squeeze import EdgeSqueezeError, PreprocessSpec, preprocess

DTYPES = st.sampled_from(
    [
        np.uint8,
        np.uint16,
        np.int8,
        np.int32,
        np.int64,
        np.float16,
        np.float32,
        np.float64,
        np.bool_,
        np.complex64,
    ]
)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=48)


def arrays():
    return DTYPES.flatmap(
        lambda dtype: hnp.arrays(
            dtype,
            SHAPES,
            elements=hnp.from_dtype(np.dtype(dtype), allow_nan=True, allow_infinity=True)
            if np.dtype(dtype).kind in "fc"
            else None,
        )
    )


SPECS = [
    PreprocessSpec.imagenet(64),
    PreprocessSpec.caffe(48),
    PreprocessSpec(resize=0, crop=32, input_format="uint8-nhwc4"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=arrays(), spec=st.sampled_from(SPECS), order=st.sampled_from(["BGR", "RGB", "bgr", ""]))
def test_preprocess_gives_an_input_or_one_clear_error(image, spec, order):
    try:
        batch = preprocess(image, spec, order)
    except EdgeSqueezeError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert batch.dtype == spec.dtype and batch.shape[1:] == spec.input_shape
    if spec.dtype == np.float32:
        assert np.all(np.isfinite(batch))


@pytest.fixture(scope="module")
def classifier(tiny_int8_export):
    from edge_squeeze import Classifier

    return Classifier(tiny_int8_export / "model.int8.cpu.onnx")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(image=arrays())
def test_predict_gives_a_prediction_or_one_clear_error(classifier, image):
    try:
        prediction = classifier.predict(image)
    except EdgeSqueezeError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert 0 <= prediction.index < len(classifier.labels) and 0.0 <= prediction.score <= 1.0
