"""TensorRT's GPU-free logic, on the CPU: version handling, INT8 strategy, profiles, cache keys,
sidecars and their mismatch checks, the calibrator's batch feeding, and the CLI without TensorRT."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_squeeze.cli import main
from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.export.tensorrt_build import (
    BatchProfile,
    CalibrationFeeder,
    DeviceIdentity,
    Sidecar,
    check_engine_source,
    engine_cache_key,
    engine_cache_path,
    has_fast_int8,
    incompatibility,
    parse_trt_version,
    plan_precision,
    sidecar_path,
)
from edge_squeeze.labels import Labels
from edge_squeeze.metadata import ArtifactMetadata
from edge_squeeze.preprocess import PreprocessSpec

ORIN = DeviceIdentity("10.3.0.30", "Orin", (8, 7))
NANO = DeviceIdentity("8.2.1.8", "NVIDIA Tegra X1", (5, 3))


def test_versions_and_fast_int8():
    assert parse_trt_version("8.5.2.2") == (8, 5)
    assert parse_trt_version("10.3.0.30") == (10, 3)
    assert has_fast_int8((8, 7)) and has_fast_int8((7, 2)) and has_fast_int8((6, 1))
    assert not has_fast_int8((5, 3)) and not has_fast_int8((6, 2))  # Nano, TX2


def test_int8_plan_per_version():
    explicit = plan_precision("int8", (10, 3), True, (8, 7))
    assert (explicit.mode, explicit.strongly_typed) == ("explicit", True)
    old = plan_precision("int8", (8, 5), True, (7, 2))
    assert (old.mode, old.strongly_typed) == ("explicit", False)
    implicit = plan_precision("int8", (8, 5), False, (7, 2))
    assert implicit.mode == "implicit"
    with pytest.raises(EdgeSqueezeError, match="TensorRT 11 removed implicit"):
        plan_precision("int8", (11, 0), False, (8, 7))
    assert plan_precision("int8", (11, 0), True, (8, 7)).mode == "explicit"


def test_int8_falls_back_to_fp16_where_it_is_slow():
    plan = plan_precision("int8", (8, 2), True, (5, 3))
    assert plan.precision == "fp16" and "slow" in plan.reason


def test_fp16_needs_the_fp32_model():
    with pytest.raises(EdgeSqueezeError, match="fp32 model"):
        plan_precision("fp16", (10, 3), True, (8, 7))
    assert plan_precision("fp16", (10, 3), False, (8, 7)).precision == "fp16"


def test_batch_profile():
    assert BatchProfile.parse("8") == BatchProfile(1, 8, 8)
    assert BatchProfile.parse("1,4,16").shapes((3, 224, 224)) == (
        (1, 3, 224, 224),
        (4, 3, 224, 224),
        (16, 3, 224, 224),
    )
    for bad in ("0", "4,2,8", "a", "1,2"):
        with pytest.raises(EdgeSqueezeError):
            BatchProfile.parse(bad)


def test_cache_key_changes_with_everything_it_is_keyed_on(tmp_path):
    base = engine_cache_key("abc", ORIN, "int8", BatchProfile(), None)
    assert base == engine_cache_key("abc", ORIN, "int8", BatchProfile(), None)
    others = [
        engine_cache_key("abd", ORIN, "int8", BatchProfile(), None),
        engine_cache_key("abc", DeviceIdentity("10.4.0.1", "Orin", (8, 7)), "int8", BatchProfile(), None),
        engine_cache_key(
            "abc", DeviceIdentity("10.3.0.30", "RTX 4090", (8, 9)), "int8", BatchProfile(), None
        ),
        engine_cache_key("abc", ORIN, "fp16", BatchProfile(), None),
        engine_cache_key("abc", ORIN, "int8", BatchProfile(1, 1, 16), None),
        engine_cache_key("abc", ORIN, "int8", BatchProfile(), 0),
    ]
    assert base not in others and len(set(others)) == len(others)
    path = engine_cache_path(tmp_path / "model.int8.onnx", "abc", ORIN, "int8", BatchProfile())
    assert path.parent == tmp_path
    assert path.name.startswith("model.int8.trt10.3.0.30-orin-sm87.") and path.suffix == ".engine"


def _sidecar(device: DeviceIdentity) -> Sidecar:
    meta = ArtifactMetadata(arch="squeezenet1_1", labels=Labels(["a", "b"]), preprocess=PreprocessSpec())
    return Sidecar(
        device.tensorrt_version,
        device.gpu_name,
        device.compute_capability,
        "int8",
        BatchProfile(1, 1, 8),
        None,
        "f" * 64,
        "e" * 64,
        "input",
        "logits",
        meta,
        int8_mode="explicit",
    )


def test_sidecar_round_trip_and_mismatch(tmp_path):
    sidecar = _sidecar(ORIN)
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text(sidecar.to_json())
    again = Sidecar.read(engine)
    assert again.device == ORIN and again.profile == BatchProfile(1, 1, 8)
    assert again.metadata.labels.names == ["a", "b"] and again.metadata.preprocess == PreprocessSpec()
    assert incompatibility(again, ORIN) is None
    assert "TensorRT 10.3.0.30, this is TensorRT 10.4.0.1" in incompatibility(
        again, DeviceIdentity("10.4.0.1", "Orin", (8, 7))
    )
    assert "built for Orin (sm_87), this GPU is NVIDIA Tegra X1 (sm_53)" in incompatibility(
        again, DeviceIdentity("10.3.0.30", "NVIDIA Tegra X1", (5, 3))
    )


def test_bare_engine_without_sidecar_and_corrupt_sidecar(tmp_path):
    engine = tmp_path / "other.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(EdgeSqueezeError, match="has no sidecar"):
        Sidecar.read(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(EdgeSqueezeError, match="not a valid engine sidecar"):
        Sidecar.read(engine)


def test_calibration_feeder_batches_and_cache(tmp_path):
    batches = [np.full((4, 3, 8, 8), i, np.float32) for i in range(3)]
    cache = tmp_path / "calib.cache"
    feeder = CalibrationFeeder(batches, cache)
    assert feeder.batch_size == 4 and feeder.nbytes == 4 * 3 * 8 * 8 * 4
    got = []
    while (b := feeder.next_batch()) is not None:
        got.append(b)
    assert [float(b[0, 0, 0, 0]) for b in got] == [0.0, 1.0, 2.0]
    assert all(b.flags["C_CONTIGUOUS"] for b in got)
    assert feeder.read_cache() is None
    feeder.write_cache(b"TRT-8501-EntropyCalibration2\ninput: 3c010a14\n")
    assert CalibrationFeeder(batches, cache).read_cache().startswith(b"TRT-8501")


def test_tensorrt_calibration_cache_from_ranges():
    from edge_squeeze.export.ranges import parse_tensorrt_calibration_cache, tensorrt_calibration_cache

    text = tensorrt_calibration_cache({"input": (-2.0, 2.54), "relu": (0.0, 12.7)})
    assert text.splitlines()[0] == "TRT-8501-EntropyCalibration2"
    scales = parse_tensorrt_calibration_cache(text)
    assert scales["input"] == pytest.approx(2.54 / 127) and scales["relu"] == pytest.approx(0.1)


def test_engines_are_not_built_from_the_cpu_flavour():
    meta = ArtifactMetadata(arch="squeezenet1_1", labels=Labels(["a", "b"]), preprocess=PreprocessSpec())
    check_engine_source(meta, Path("model.int8.onnx"))
    pixels = dataclasses.replace(meta, preprocess=PreprocessSpec(input_format="uint8-nhwc"))
    with pytest.raises(EdgeSqueezeError, match=r"CPU flavour.*model\.int8\.onnx"):
        check_engine_source(pixels, Path("model.int8.cpu.onnx"))


def test_build_engine_without_tensorrt_is_one_line(tmp_path, capsys):
    from edge_squeeze.runtimes.tensorrt_backend import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")
    assert main(["build-engine", str(model)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-squeeze: error: cannot build a TensorRT engine here: ")
    assert "TensorRT is not installed" in err[0] or "pycuda" in err[0] or "CUDA" in err[0]


def test_classifier_tensorrt_backend_without_tensorrt(tmp_path):
    from edge_squeeze import Classifier
    from edge_squeeze.runtimes.tensorrt_backend import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(EdgeSqueezeError, match="TensorRT backend cannot run here"):
        Classifier(tmp_path / "m.engine")
