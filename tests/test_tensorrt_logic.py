"""TensorRT's GPU-free logic, on the CPU: the build plan per TensorRT version, profiles (calibration,
DLA), cache keys, sidecars and their mismatch checks, the calibrator's batch feeding, engine I/O
checks, batch slicing, CUDA-graph capture and its failure handling (against a fake cuda-python), the
backend fallback, and the CLI without TensorRT."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_squeeze.cli import main
from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.export.tensorrt_plan import (
    CalibrationFeeder,
    calibration_profile,
    check_engine_source,
    dla_placement,
    engine_cache_key,
    engine_cache_path,
    engine_file_name,
    has_fast_int8,
    plan_build,
    resolve_profile,
    tensorrt_calibration_cache_path,
)
from edge_squeeze.labels import Labels
from edge_squeeze.metadata import ArtifactMetadata
from edge_squeeze.preprocess import PreprocessSpec
from edge_squeeze.runtimes.cuda_buffers import capture_graph
from edge_squeeze.runtimes.engine_sidecar import (
    BatchProfile,
    DeviceIdentity,
    Sidecar,
    incompatibility,
    parse_trt_version,
    sidecar_path,
)
from edge_squeeze.runtimes.tensorrt_backend import (
    TensorDesc,
    batch_slices,
    check_engine_io,
    check_output_shape,
    infer_in_slices,
)

ORIN = DeviceIdentity("10.3.0.30", "Orin", (8, 7))
XAVIER = (7, 2)
AMPERE = (8, 6)


def test_versions_and_fast_int8():
    assert parse_trt_version("8.5.2.2") == (8, 5)
    assert parse_trt_version("10.3.0.30") == (10, 3)
    assert has_fast_int8((8, 7)) and has_fast_int8((7, 2)) and has_fast_int8((6, 1))
    assert not has_fast_int8((5, 3)) and not has_fast_int8((6, 2)) and not has_fast_int8((6, 0))


def _flags(plan):
    return (plan.precision, plan.mode, plan.strongly_typed, plan.fp16_flag, plan.int8_flag, plan.source)


def test_qdq_int8_is_weakly_typed_with_int8_and_fp16_until_10_12_then_strongly_typed():
    weak = ("int8", "explicit", False, True, True, "qdq")
    strong = ("int8", "explicit", True, False, False, "qdq")
    for version, expected in (((8, 5), weak), ((8, 6), weak), ((10, 3), weak), ((10, 11), weak)):
        assert _flags(plan_build("int8", version, "qdq", XAVIER)) == expected, version
    for version in ((10, 12), (10, 13), (11, 0), (11, 1)):
        assert _flags(plan_build("int8", version, "qdq", AMPERE)) == strong, version


def test_implicit_int8_exists_up_to_10_x_only():
    for version in ((8, 5), (10, 3), (10, 13)):
        assert _flags(plan_build("int8", version, "fp32", XAVIER)) == (
            "int8",
            "implicit",
            False,
            True,
            True,
            "fp32",
        )
    with pytest.raises(EdgeSqueezeError, match=r"TensorRT 11\.0 removed implicit INT8"):
        plan_build("int8", (11, 0), "fp32", AMPERE)
    with pytest.raises(EdgeSqueezeError, match="implicit calibration needs the fp32 model"):
        plan_build("int8", (8, 5), "qdq", XAVIER, int8_mode="implicit")
    with pytest.raises(EdgeSqueezeError, match="explicit INT8 needs the Q/DQ model"):
        plan_build("int8", (8, 5), "fp32", XAVIER, int8_mode="explicit")


def test_fp16_uses_the_flag_where_it_exists_and_the_fp16_onnx_where_it_must():
    assert _flags(plan_build("fp16", (8, 5), "fp32", XAVIER)) == ("fp16", "none", False, True, False, "fp32")
    assert _flags(plan_build("fp16", (10, 3), "fp32", AMPERE, fp16_onnx=True))[3] is True  # flag before 10.12
    assert _flags(plan_build("fp16", (10, 13), "fp32", AMPERE, fp16_onnx=True)) == (
        "fp16",
        "none",
        True,
        False,
        False,
        "fp16",
    )
    deprecated = plan_build("fp16", (10, 13), "fp32", AMPERE, fp16_onnx=False)
    assert deprecated.fp16_flag and "re-export" in deprecated.reason
    assert _flags(plan_build("fp16", (11, 0), "fp32", AMPERE, fp16_onnx=True))[2:5] == (True, False, False)
    with pytest.raises(EdgeSqueezeError, match=r"model\.fp16\.onnx is not beside this model"):
        plan_build("fp16", (11, 0), "fp32", AMPERE, fp16_onnx=False)
    # an fp16 ONNX given directly
    assert _flags(plan_build("fp16", (11, 1), "fp16", AMPERE))[2:5] == (True, False, False)
    assert _flags(plan_build("fp16", (8, 5), "fp16", XAVIER))[2:5] == (False, True, False)
    with pytest.raises(EdgeSqueezeError, match="not a Q/DQ int8 model"):
        plan_build("fp16", (10, 3), "qdq", AMPERE)


def test_no_tensorrt_11_path_sets_a_precision_flag():
    """TensorRT 11 has no BuilderFlag.FP16/INT8: no plan for it may ask for one."""
    for precision, source in (("fp32", "fp32"), ("fp16", "fp16"), ("fp16", "fp32"), ("int8", "qdq")):
        for version in ((11, 0), (11, 1)):
            plan = plan_build(precision, version, source, AMPERE, fp16_onnx=True)
            assert plan.strongly_typed and not plan.fp16_flag and not plan.int8_flag, (precision, source)


def test_fp32_engines_need_the_fp32_model():
    assert plan_build("fp32", (8, 5), "fp32", XAVIER).fp16_flag is False
    assert plan_build("fp32", (10, 13), "fp32", AMPERE).strongly_typed
    for source in ("qdq", "fp16"):
        with pytest.raises(EdgeSqueezeError, match="fp32 model"):
            plan_build("fp32", (10, 3), source, AMPERE)


def test_slow_int8_gpu_builds_fp16_from_the_fp32_model_and_refuses_qdq():
    plan = plan_build("int8", (8, 5), "fp32", (6, 0))
    assert plan.precision == "fp16" and plan.fp16_flag and "slow on sm_60" in plan.reason
    # TensorRT 8.x refuses a Q/DQ network without the INT8 flag, so no FP16 build from it
    with pytest.raises(EdgeSqueezeError, match="no fast INT8 path"):
        plan_build("int8", (8, 5), "qdq", (6, 0))


def test_dla_builds_fp16_or_calibrated_int8_from_the_fp32_model():
    assert _flags(plan_build("fp16", (8, 5), "fp32", XAVIER, dla=True)) == (
        "fp16",
        "none",
        False,
        True,
        False,
        "fp32",
    )
    assert _flags(plan_build("int8", (10, 3), "fp32", (8, 7), dla=True)) == (
        "int8",
        "implicit",
        False,
        True,
        True,
        "fp32",
    )
    with pytest.raises(EdgeSqueezeError, match="from the fp32 model"):
        plan_build("int8", (8, 5), "qdq", XAVIER, dla=True)
    with pytest.raises(EdgeSqueezeError, match="not FP32"):
        plan_build("fp32", (8, 5), "fp32", XAVIER, dla=True)
    with pytest.raises(EdgeSqueezeError, match="cannot take explicit"):
        plan_build("int8", (8, 5), "fp32", XAVIER, int8_mode="explicit", dla=True)
    with pytest.raises(EdgeSqueezeError, match=r"8\.5-10\.x"):
        plan_build("fp16", (11, 1), "fp32", AMPERE, dla=True)


def test_batch_profiles_and_the_dla_static_rule():
    assert BatchProfile.parse("8") == BatchProfile(1, 8, 8)
    assert BatchProfile.parse("1,4,16").shapes((3, 224, 224)) == (
        (1, 3, 224, 224),
        (4, 3, 224, 224),
        (16, 3, 224, 224),
    )
    for bad in ("0", "4,2,8", "a", "1,2"):
        with pytest.raises(EdgeSqueezeError):
            BatchProfile.parse(bad)
    assert resolve_profile(None, dla=False) == BatchProfile(1, 1, 8)
    assert resolve_profile(None, dla=True) == BatchProfile(1, 1, 1)
    assert resolve_profile("4,4,4", dla=True).is_static
    with pytest.raises(EdgeSqueezeError, match="DLA does not support dynamic shapes"):
        resolve_profile("1,1,8", dla=True)


def test_calibration_profile_is_static_at_the_feeders_batch():
    """TensorRT calibrates at the calibration profile's OPT shape; the feeder hands batches of its own
    size from a buffer of exactly that size. Both must agree, whatever the build profile says."""
    batches = [np.zeros((8, 3, 16, 16), np.float32) for _ in range(3)]
    feeder = CalibrationFeeder(batches, None)
    for build_profile in (BatchProfile(1, 1, 8), BatchProfile(1, 16, 32), BatchProfile.static(1)):
        shapes = calibration_profile(feeder.batch_size).shapes((3, 16, 16))
        assert shapes[0] == shapes[1] == shapes[2] == (8, 3, 16, 16), build_profile
        assert int(np.prod(shapes[1])) * 4 == feeder.nbytes


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
        engine_cache_key("abc", ORIN, "int8", BatchProfile(), None, calibration="photos-a"),
        engine_cache_key("abc", ORIN, "int8", BatchProfile(), None, calibration="photos-b"),
    ]
    assert base not in others and len(set(others)) == len(others)
    path = engine_cache_path(tmp_path / "model.int8.onnx", "abc", ORIN, "int8", BatchProfile())
    assert path.parent == tmp_path
    assert path.name.startswith("model.int8.trt10.3.0.30-orin-sm87.") and path.suffix == ".engine"
    dla = engine_cache_path(tmp_path / "model.onnx", "abc", ORIN, "fp16", BatchProfile.static(1), 1)
    assert dla.name.startswith("model.fp16.dla1.trt10.3.0.30-orin-sm87.")


def test_engine_names_carry_precision_and_dla_core():
    assert engine_file_name(Path("out/model.int8.onnx"), "int8", None) == "model.int8.engine"
    assert engine_file_name(Path("out/model.onnx"), "fp16", None) == "model.fp16.engine"
    assert engine_file_name(Path("out/model.fp16.onnx"), "fp16", None) == "model.fp16.engine"
    assert engine_file_name(Path("out/model.onnx"), "int8", 0) == "model.int8.dla0.engine"


def test_tensorrt_calibration_cache_is_keyed_by_model_and_photos(tmp_path):
    from edge_squeeze.export.calibration import calibration_cache_key

    a = calibration_cache_key("model-a", "photos", "trt-entropy", batch=8)
    b = calibration_cache_key("model-b", "photos", "trt-entropy", batch=8)
    c = calibration_cache_key("model-a", "other-photos", "trt-entropy", batch=8)
    paths = {tensorrt_calibration_cache_path(tmp_path / "model.onnx", k, "entropy") for k in (a, b, c)}
    assert len(paths) == 3
    assert all(p.name.startswith("model.trt-entropy-") and p.suffix == ".calib" for p in paths)


def test_dla_placement_is_reported_and_refuses_nothing_on_dla():
    placement = dla_placement([("conv1", True), ("relu1", True), ("pool10", False)], gpu_fallback=True)
    assert (placement.on_dla, placement.total, placement.gpu_layers) == (2, 3, ("pool10",))
    assert "2 of 3 layers on DLA" in placement.describe() and "pool10" in placement.describe()
    with pytest.raises(EdgeSqueezeError, match="no layer of this network can run on DLA"):
        dla_placement([("a", False), ("b", False)], gpu_fallback=True)
    with pytest.raises(EdgeSqueezeError, match="GPU fallback is off"):
        dla_placement([("a", True), ("b", False)], gpu_fallback=False)


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
        strongly_typed=True,
        source="model.int8.onnx",
        dla_layers={"on_dla": 3, "total": 4, "gpu_layers": ["pool"]},
    )


def test_sidecar_round_trip_and_mismatch(tmp_path):
    sidecar = _sidecar(ORIN)
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text(sidecar.to_json())
    again = Sidecar.read(engine)
    assert again.device == ORIN and again.profile == BatchProfile(1, 1, 8)
    assert again.metadata.labels.names == ["a", "b"] and again.metadata.preprocess == PreprocessSpec()
    assert (again.strongly_typed, again.source, again.dla_layers["on_dla"]) == (True, "model.int8.onnx", 3)
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
    with pytest.raises(EdgeSqueezeError, match="same shape"):
        CalibrationFeeder([np.zeros((4, 3, 8, 8)), np.zeros((2, 3, 8, 8))], None)


def test_tensorrt_calibration_cache_from_ranges():
    from edge_squeeze.export.ranges import parse_tensorrt_calibration_cache, tensorrt_calibration_cache

    text = tensorrt_calibration_cache({"input": (-2.0, 2.54), "relu": (0.0, 12.7)})
    assert text.splitlines()[0] == "TRT-8501-EntropyCalibration2"
    scales = parse_tensorrt_calibration_cache(text)
    assert scales["input"] == pytest.approx(2.54 / 127) and scales["relu"] == pytest.approx(0.1)


def test_engines_are_not_built_from_the_cpu_file():
    meta = ArtifactMetadata(arch="squeezenet1_1", labels=Labels(["a", "b"]), preprocess=PreprocessSpec())
    check_engine_source(meta, Path("model.int8.onnx"))
    pixels = dataclasses.replace(meta, preprocess=PreprocessSpec(input_format="uint8-nhwc"))
    with pytest.raises(EdgeSqueezeError, match=r"CPU file.*model\.int8\.onnx"):
        check_engine_source(pixels, Path("model.int8.cpu.onnx"))


# --- engine I/O, batch slicing ------------------------------------------------------------------

GOOD_IO = [
    TensorDesc("input", True, "float32", (-1, 3, 224, 224)),
    TensorDesc("logits", False, "float32", (-1, 1000)),
]


def test_engine_io_is_checked_against_the_sidecar():
    check_engine_io(GOOD_IO, "input", "logits", (3, 224, 224), 1000, "m.engine")
    cases = [
        (GOOD_IO[:1], "1 inputs and 0 outputs"),
        ([GOOD_IO[0], dataclasses.replace(GOOD_IO[1], name="prob")], "sidecar belongs to another engine"),
        ([dataclasses.replace(GOOD_IO[0], dtype="DataType.HALF"), GOOD_IO[1]], "is DataType.HALF"),
        ([dataclasses.replace(GOOD_IO[0], shape=(-1, 3, 227, 227)), GOOD_IO[1]], "preprocessing makes"),
        ([GOOD_IO[0], dataclasses.replace(GOOD_IO[1], shape=(-1, 10))], "expected N x 1000 classes"),
    ]
    for tensors, message in cases:
        with pytest.raises(EdgeSqueezeError, match=message):
            check_engine_io(tensors, "input", "logits", (3, 224, 224), 1000, "m.engine")
    check_output_shape((4, 1000), 4, 1000)
    with pytest.raises(EdgeSqueezeError, match="output shape"):
        check_output_shape((8, 1000), 4, 1000)


def test_batches_over_the_profile_maximum_run_in_slices():
    assert batch_slices(20, 8) == [slice(0, 8), slice(8, 16), slice(16, 20)]
    assert batch_slices(8, 8) == [slice(0, 8)]
    launches = []

    def fake_enqueue(chunk):  # stands in for one execute_async_v3 of at most the profile maximum
        assert chunk.shape[0] <= 8
        launches.append(chunk.shape[0])
        return chunk.reshape(chunk.shape[0], -1)[:, :2] * 10

    batch = np.arange(20 * 2, dtype=np.float32).reshape(20, 2, 1, 1)
    out = infer_in_slices(batch, 8, fake_enqueue)
    assert launches == [8, 8, 4]
    np.testing.assert_array_equal(out, batch.reshape(20, 2) * 10)  # every row, in order


# --- CUDA-graph capture against a fake cuda-python ------------------------------------------------


class FakeCudart:
    """cuda-python's runtime, as far as capture_graph uses it: every call returns cuda-python's tuples
    (the same in 11.x and 12/13 for these functions) and is recorded."""

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorStreamCaptureInvalidated = 901

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self, end_error=0, instantiate_error=0):
        self.calls = []
        self.capturing = False
        self.end_error = end_error
        self.instantiate_error = instantiate_error
        self.live_graphs = set()
        self.sticky_error = 0

    def cudaStreamBeginCapture(self, stream, mode):
        self.calls.append("begin")
        self.capturing = True
        return (0,)

    def cudaStreamEndCapture(self, stream):
        self.calls.append("end")
        self.capturing = False
        self.live_graphs.add(77)
        return (self.end_error, 77)

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        self.calls.append("instantiate")
        return (self.instantiate_error, None if self.instantiate_error else 99)

    def cudaGraphDestroy(self, graph):
        self.calls.append("destroy")
        self.live_graphs.discard(graph)
        return (0,)

    def cudaGetLastError(self):
        self.calls.append("clear")
        self.sticky_error = 0
        return (0,)


def test_graph_capture_success_keeps_only_the_executable():
    cudart = FakeCudart()
    enqueued = []
    graph_exec, why = capture_graph(cudart, 5, lambda handle: enqueued.append((handle, cudart.capturing)))
    assert (graph_exec, why) == (99, None)
    assert enqueued == [(5, True)]  # launched while the stream was capturing
    assert cudart.calls == ["begin", "end", "instantiate", "destroy"] and not cudart.live_graphs


def test_failed_launch_under_capture_ends_capture_destroys_graph_and_clears_the_error():
    cudart = FakeCudart()

    def refuses(handle):  # TensorRT's execute_async_v3 returning False
        cudart.sticky_error = 900
        raise EdgeSqueezeError("TensorRT execution failed")

    graph_exec, why = capture_graph(cudart, 5, refuses)
    assert graph_exec is None and "TensorRT execution failed" in why
    assert not cudart.capturing and not cudart.live_graphs and cudart.sticky_error == 0
    assert cudart.calls == ["begin", "end", "destroy", "clear"]


def test_invalidated_capture_and_failed_instantiation_leave_nothing_behind():
    cudart = FakeCudart(end_error=901)
    graph_exec, why = capture_graph(cudart, 5, lambda handle: None)
    assert graph_exec is None and "cudaStreamEndCapture" in why and not cudart.live_graphs
    assert cudart.calls[-1] == "clear"
    cudart = FakeCudart(instantiate_error=1)
    graph_exec, why = capture_graph(cudart, 5, lambda handle: None)
    assert graph_exec is None and "cudaGraphInstantiateWithFlags" in why and not cudart.live_graphs
    assert cudart.calls[-1] == "clear"


# --- backend choice and the CLI without TensorRT ------------------------------------------------


def test_auto_falls_back_on_any_tensorrt_failure_with_one_reason(tiny_int8_export, monkeypatch, caplog):
    from edge_squeeze import Classifier
    from edge_squeeze.runtimes import tensorrt_backend
    from edge_squeeze.runtimes.select import _LOGGED_FALLBACKS

    def broken_load(path, options=None, engine_builder=None):
        raise RuntimeError("pycuda._driver.LogicError: cuMemAlloc failed: out of memory")

    monkeypatch.setattr(tensorrt_backend, "unavailable_reason", lambda: None)
    monkeypatch.setattr(tensorrt_backend, "load", broken_load)
    _LOGGED_FALLBACKS.clear()
    with caplog.at_level(logging.INFO, logger="edge_squeeze"):
        clf = Classifier(tiny_int8_export / "model.onnx", cuda_graph=True, precision="fp16")
    assert clf.info.name == "onnxruntime"
    reasons = [r.getMessage() for r in caplog.records if "TensorRT not used" in r.getMessage()]
    assert len(reasons) == 1 and "out of memory" in reasons[0]
    with pytest.raises(RuntimeError, match="out of memory"):  # asked for by name: no fallback
        Classifier(tiny_int8_export / "model.onnx", backend="tensorrt")


def test_tensorrt_options_do_not_reach_onnxruntime(tiny_int8_export):
    from edge_squeeze import Classifier
    from edge_squeeze.runtimes.tensorrt_backend import BuildOptions, TensorRTOptions, unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    clf = Classifier(
        tiny_int8_export / "model.onnx",
        tensorrt=TensorRTOptions(cuda_graph=True, build=BuildOptions(profile="1,4,16", dla_core=0)),
    )
    assert clf.info.name == "onnxruntime"


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
    assert main(["build-engine", str(tmp_path / "missing.onnx")]) == 1
    assert "ONNX model not found" in capsys.readouterr().err


def test_export_engine_builds_from_the_file_its_precision_needs(tmp_path, monkeypatch):
    from edge_squeeze.cli import build_engine
    from edge_squeeze.export.report import ExportReport

    built = []
    monkeypatch.setattr(
        build_engine,
        "build_from",
        lambda model, options, out=None, exported=False: built.append((model.name, options.precision)),
    )
    monkeypatch.setattr(
        "edge_squeeze.export.pipeline.run_export", lambda options: ExportReport.from_dict({"files": {}})
    )
    common = ["export", "--weights", "w.pth", "--out", str(tmp_path), "--engine"]
    for extra, expected in (
        (["--int8", "--calib", "c"], ("model.int8.onnx", "int8")),
        (["--int8", "--calib", "c", "--engine-precision", "fp16"], ("model.onnx", "fp16")),
        (["--int8", "--calib", "c", "--engine-precision", "fp32"], ("model.onnx", "fp32")),
        ([], ("model.onnx", "fp16")),
        (["--engine-precision", "int8", "--calib", "c"], ("model.onnx", "int8")),
    ):
        built.clear()
        assert main(["-q", *common, *extra]) == 0
        assert built == [expected], extra


def test_classifier_tensorrt_backend_without_tensorrt(tmp_path):
    from edge_squeeze import Classifier
    from edge_squeeze.runtimes.tensorrt_backend import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(EdgeSqueezeError, match="TensorRT backend cannot run here"):
        Classifier(tmp_path / "m.engine")
