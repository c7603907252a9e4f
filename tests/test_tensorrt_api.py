"""Every TensorRT name the builder and the runtime touch exists in every TensorRT they claim to run on.

``../shared/tensorrt-api/<version>.txt`` lists each name the Python bindings of TensorRT 8.5.2, 8.6.1,
10.3.0, 10.13.3, 11.0 and 11.1 expose (extracted from NVIDIA's binding sources). Here the real
build and run code runs against a fake ``tensorrt`` module made from one version's list: any
attribute outside the list raises, so a name that a version lacks (``BuilderFlag.FP16`` on 11) fails
on the CPU. The fake also plays TensorRT's part in calibration (it pulls batches from the calibrator
at the calibration profile's batch) and in execution (shapes, addresses, launches), so the checks
cover the paths as they run, not as they are spelled.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import types
from pathlib import Path
from typing import Any, Dict, Set

import numpy as np
import pytest

from edge_squeeze.errors import EdgeSqueezeError

VERSIONS = {
    "8.5.2": "8.5.2.2",
    "8.6.1": "8.6.1.6",
    "10.3.0": "10.3.0.30",
    "10.13.3": "10.13.3.9",
    "11.0": "11.0.0.9",
    "11.1": "11.1.0.5",
}
# nested enums are listed under their own short name (../shared/tensorrt-api/README.md)
ALIASES = {"ILogger.Severity": "Severity"}
SUBCLASSED = {"ILogger", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IProgressMonitor"}


class MissingName(AttributeError):
    pass


class Api:
    """One TensorRT version's names, and every one the code touched."""

    def __init__(self, version_file: Path, version: str) -> None:
        self.names: Set[str] = set(version_file.read_text().split())
        self.version = version
        self.touched: Set[str] = set()

    def check(self, name: str) -> None:
        name = ALIASES.get(name, name)
        self.touched.add(name)
        if name not in self.names:
            raise MissingName(f"TensorRT {self.version} has no {name}")


class EnumValue(int):
    def __new__(cls, qualified: str, value: int) -> EnumValue:
        obj = int.__new__(cls, value)
        obj.qualified = qualified  # type: ignore[attr-defined]
        return obj

    def __repr__(self) -> str:
        return self.qualified  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:  # members of different enums never compare equal
        return isinstance(other, EnumValue) and other.qualified == self.qualified  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.qualified)  # type: ignore[attr-defined]


class Obj:
    """An instance of a TensorRT class: attribute reads and writes are checked against the list and
    answered from ``behaviour`` (a property value, or a callable for a method)."""

    def __init__(self, fake: FakeTensorRT, kind: str, **state: Any) -> None:
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_state", dict(state))

    def __getattr__(self, member: str) -> Any:
        fake, kind = self._fake, self._kind
        fake.api.check(f"{kind}.{member}")
        return fake.behaviour(self, kind, member)

    def __setattr__(self, member: str, value: Any) -> None:
        self._fake.api.check(f"{self._kind}.{member}")
        self._state[member] = value

    def __bytes__(self) -> bytes:
        return self._state.get("data", b"")


class FakeTensorRT(types.ModuleType):
    def __init__(self, api: Api, full_version: str, classes: int, chw: tuple) -> None:
        super().__init__("tensorrt")
        self.api = api
        self.full_version = full_version
        self.classes = classes
        self.chw = chw
        self.calibrated: list = []  # (profile OPT batch, batches pulled, batch size)
        self.launches: list = []
        self.parse_ok = True
        self._enums: Dict[str, EnumValue] = {}
        self._classes: Dict[str, type] = {}

    def enum(self, qualified: str) -> EnumValue:
        if qualified not in self._enums:
            self._enums[qualified] = EnumValue(qualified, len(self._enums) % 30)
        return self._enums[qualified]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name != "__version__":
            raise AttributeError(name)
        self.api.check(name)
        if name == "__version__":
            return self.full_version
        if name not in self._classes:
            self._classes[name] = self._make_class(name)
        return self._classes[name]

    def _make_class(self, name: str) -> type:
        fake = self

        class Meta(type):
            def __getattr__(cls, member: str) -> Any:
                if member.startswith("__"):
                    raise AttributeError(member)
                qualified = ALIASES.get(f"{name}.{member}", f"{name}.{member}")
                fake.api.check(qualified)
                if qualified in ALIASES.values():  # a nested enum
                    return fake.__getattr__(qualified)
                return fake.enum(qualified)

        if name in SUBCLASSED:
            return Meta(name, (), {"__init__": lambda self: None})

        def construct(cls: type, *args: Any) -> Any:
            return fake.construct(name, *args)

        return Meta(name, (), {"__new__": construct})

    # --- what TensorRT does --------------------------------------------------------------------

    def construct(self, kind: str, *args: Any) -> Any:
        if kind == "Dims":
            return tuple(args[0])
        if kind == "Builder":
            logger = args[0]
            for level in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"):
                logger.log(getattr(self.Severity, level), "fake TensorRT message")
            return Obj(self, "Builder")
        if kind == "OnnxParser":
            return Obj(self, "OnnxParser", network=args[0])
        if kind == "Runtime":
            return Obj(self, "Runtime")
        raise AssertionError(f"the fake does not construct {kind}")

    def behaviour(self, obj: Obj, kind: str, member: str) -> Any:
        state = obj._state
        if member in state:
            return state[member]
        properties = {
            ("Builder", "num_DLA_cores"): 2,
            ("INetworkDefinition", "num_inputs"): 1,
            ("INetworkDefinition", "num_outputs"): 1,
            ("INetworkDefinition", "num_layers"): 3,
            ("OnnxParser", "num_errors"): 0,
            ("ICudaEngine", "num_io_tensors"): 2,
        }
        if (kind, member) in properties:
            return properties[(kind, member)]
        if kind == "ITensor" and member == "name":
            return state["tensor_name"]
        if kind == "ILayer" and member == "name":
            return state["layer_name"]
        methods = {
            ("Builder", "create_network"): lambda flags: Obj(self, "INetworkDefinition", flags=flags),
            ("Builder", "create_builder_config"): lambda: Obj(self, "IBuilderConfig", flags=set()),
            ("Builder", "create_optimization_profile"): lambda: Obj(self, "IOptimizationProfile", shapes={}),
            ("Builder", "build_serialized_network"): self._build,
            ("OnnxParser", "parse"): lambda data: self.parse_ok,
            ("OnnxParser", "get_error"): lambda i: "no error",
            ("INetworkDefinition", "get_input"): lambda i: Obj(self, "ITensor", tensor_name="input"),
            ("INetworkDefinition", "get_output"): lambda i: Obj(self, "ITensor", tensor_name="logits"),
            ("INetworkDefinition", "get_layer"): lambda i: Obj(self, "ILayer", layer_name=f"layer{i}"),
            ("IOptimizationProfile", "set_shape"): lambda name, lo, opt, hi: state["shapes"].update(
                {name: (lo, opt, hi)}
            ),
            ("IBuilderConfig", "set_memory_pool_limit"): lambda pool, size: None,
            ("IBuilderConfig", "set_flag"): lambda flag: state["flags"].add(repr(flag)),
            ("IBuilderConfig", "add_optimization_profile"): lambda profile: (
                state.setdefault("profiles", []).append(profile) or 0
            ),
            ("IBuilderConfig", "set_calibration_profile"): lambda profile: (
                state.update(calibration_profile=profile) or True
            ),
            ("IBuilderConfig", "can_run_on_DLA"): lambda layer: layer._state["layer_name"] != "layer2",
            ("IBuilderConfig", "create_timing_cache"): self._timing_cache,
            ("IBuilderConfig", "set_timing_cache"): lambda cache, ignore_mismatch: True,
            ("ITimingCache", "serialize"): lambda: Obj(self, "IHostMemory", data=b"timing"),
            ("Runtime", "deserialize_cuda_engine"): lambda data: Obj(self, "ICudaEngine") if data else None,
            ("ICudaEngine", "get_tensor_name"): lambda i: ["input", "logits"][i],
            ("ICudaEngine", "get_tensor_mode"): lambda name: self.enum(
                "TensorIOMode.INPUT" if name == "input" else "TensorIOMode.OUTPUT"
            ),
            ("ICudaEngine", "get_tensor_dtype"): lambda name: self.enum("DataType.FLOAT"),
            ("ICudaEngine", "get_tensor_shape"): lambda name: (
                (-1, *self.chw) if name == "input" else (-1, self.classes)
            ),
            ("ICudaEngine", "create_execution_context"): lambda: Obj(
                self, "IExecutionContext", addresses={}, batch=0
            ),
            ("IExecutionContext", "set_tensor_address"): lambda name, address: (
                state["addresses"].update({name: address}) or True
            ),
            ("IExecutionContext", "set_input_shape"): lambda name, shape: (
                state.update(batch=shape[0]) or True
            ),
            ("IExecutionContext", "get_tensor_shape"): lambda name: (state["batch"], self.classes),
            ("IExecutionContext", "execute_async_v3"): lambda stream: (
                self.launches.append(state["batch"]) or True
            ),
        }
        if (kind, member) not in methods:
            raise AssertionError(f"the fake has no behaviour for {kind}.{member}")
        return methods[(kind, member)]

    def _timing_cache(self, data: bytes) -> Obj:
        if data not in (b"", b"timing"):
            raise RuntimeError("[TRT] [E] timing cache: invalid header")  # as TensorRT on a damaged file
        return Obj(self, "ITimingCache")

    def _build(self, network: Obj, config: Obj) -> Obj:
        """TensorRT's build: runs the calibrator (if any) at the calibration profile's OPT batch and
        reports progress, as the real builder does."""
        calibrator = config._state.get("int8_calibrator")
        if calibrator is not None:
            profile = config._state["calibration_profile"]
            _, opt, _ = profile._state["shapes"]["input"]
            batch = calibrator.get_batch_size()
            assert opt[0] == batch, "TensorRT calibrates at the calibration profile's OPT batch"
            pulled = 0
            calibrator.read_calibration_cache()
            while calibrator.get_batch(["input"]) is not None:
                pulled += 1
            calibrator.write_calibration_cache(b"TRT-fake-EntropyCalibration2\n")
            self.calibrated.append((opt[0], pulled, batch))
        monitor = config._state.get("progress_monitor")
        if monitor is not None:
            monitor.phase_start("Building engine", None, 1)
            monitor.step_complete("Building engine", 0)
            monitor.phase_finish("Building engine")
        return Obj(self, "IHostMemory", data=b"fake plan")


class FakeAllocation:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.freed = False

    def __int__(self) -> int:
        return 0x1000

    def free(self) -> None:
        self.freed = True


def fake_pycuda(allocations: list) -> types.ModuleType:
    driver = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class Context:
        def push(self) -> None: ...
        def pop(self) -> None: ...
        def detach(self) -> None: ...

    class Device:
        @staticmethod
        def count() -> int:
            return 1

        def __init__(self, index: int) -> None: ...

        def name(self) -> str:
            return "Fake GPU"

        def compute_capability(self) -> tuple:
            return (8, 7)

        def retain_primary_context(self) -> Context:
            return Context()

    def mem_alloc(nbytes: int) -> FakeAllocation:
        allocations.append(FakeAllocation(nbytes))
        return allocations[-1]

    def memcpy_htod(dest: FakeAllocation, src: np.ndarray) -> None:
        assert src.nbytes <= dest.nbytes, "copy past the end of the device buffer"

    driver.Error = Error
    driver.Device = Device
    driver.init = lambda: None
    driver.mem_alloc = mem_alloc
    driver.memcpy_htod = memcpy_htod
    package = types.ModuleType("pycuda")
    package.driver = driver
    return package


class FakeBuffers:
    """CudaBuffers' interface on the CPU (the real one is tested on a GPU): ``run`` launches and
    returns the row means repeated as logits, so slicing and ordering can be checked."""

    def __init__(self, input_shape: tuple, output_shape: tuple) -> None:
        self.max_batch = input_shape[0]
        self.classes = output_shape[1]
        self.input_address, self.output_address = 0x2000, 0x3000
        self.has_graph = False
        self.graph_launches = 0
        self.closed = False
        self.stage_ms: Dict[str, float] = {}

    def __enter__(self) -> FakeBuffers:
        return self

    def __exit__(self, *exc: Any) -> None: ...

    def capture_graph(self, enqueue: Any) -> None:
        enqueue(1)
        enqueue(1)
        self.has_graph = True

    def release_graph(self) -> None:
        self.has_graph = False

    def run(self, batch: np.ndarray, enqueue: Any) -> np.ndarray:
        assert batch.shape[0] <= self.max_batch
        if batch.shape[0] == 1 and self.has_graph:
            self.graph_launches += 1
        else:
            enqueue(1)
        return np.repeat(batch.reshape(batch.shape[0], -1).mean(1, keepdims=True), self.classes, axis=1)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def api_lists(shared) -> Path:
    folder = shared.root / "tensorrt-api"
    if not folder.is_dir():
        pytest.skip(f"no TensorRT API lists at {folder}")
    return folder


@pytest.fixture()
def install_fake(monkeypatch, api_lists, tiny_int8_export):
    """Install a fake tensorrt (one version) and pycuda; returns the fake module."""
    from edge_squeeze.runtimes import tensorrt_backend

    installed = {}

    def install(version: str) -> FakeTensorRT:
        api = Api(api_lists / f"{version}.txt", version)
        fake = FakeTensorRT(api, VERSIONS[version], classes=10, chw=(3, 96, 96))
        allocations: list = []
        pycuda = fake_pycuda(allocations)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setitem(sys.modules, "pycuda", pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", pycuda.driver)
        monkeypatch.setattr(tensorrt_backend, "CudaBuffers", FakeBuffers)
        monkeypatch.setattr(tensorrt_backend, "unavailable_reason", lambda: None)
        fake.allocations = allocations  # type: ignore[attr-defined]
        installed["fake"] = fake
        return fake

    return install


# (precision, source file, DLA, implicit calibration): every build path the code has
PATHS = [
    ("fp32", "model.onnx", False, False),
    ("int8", "model.onnx", False, "minmax"),
    ("fp16", "model.onnx", False, False),
    ("fp16", "model.fp16.onnx", False, False),
    ("int8", "model.int8.onnx", False, False),
    ("int8", "model.onnx", False, True),
    ("fp16", "model.onnx", True, False),
    ("int8", "model.onnx", True, True),
]


def supported(version: str, precision: str, source: str, dla: bool, implicit: bool) -> bool:
    """Which paths each version claims: TensorRT 11 has no implicit INT8 and no DLA here."""
    major = int(version.split(".")[0])
    return major < 11 or not (dla or implicit)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_every_build_and_run_path_uses_only_names_its_tensorrt_has(
    version, install_fake, tiny_int8_export, pattern_dataset, tmp_path
):
    import shutil

    from edge_squeeze.export.tensorrt_build import build_engine
    from edge_squeeze.export.tensorrt_plan import BuildOptions, resolve_profile
    from edge_squeeze.runtimes import tensorrt_backend

    fake = install_fake(version)
    export = tmp_path / "export"
    shutil.copytree(tiny_int8_export, export)
    assert (export / "model.fp16.onnx").is_file(), "export writes model.fp16.onnx"
    (export / "fake.timing.cache").write_bytes(b"left by a killed build")  # replaced, not fatal
    for precision, source, dla, implicit in PATHS:
        options = BuildOptions(
            precision=precision,
            profile=resolve_profile(None, dla).text(),
            dla_core=1 if dla else None,
            int8_mode="implicit" if implicit else "auto",
            calibrator="minmax" if implicit == "minmax" else "entropy",
            calib_dir=pattern_dataset / "train" if implicit else None,
            calib_count=20,
            timing_cache=export / "fake.timing.cache",
            optimization_level=3,
        )
        label = f"{precision} from {source}{' on DLA' if dla else ''}"
        if not supported(version, precision, source, dla, implicit):
            with pytest.raises(EdgeSqueezeError):
                build_engine(export / source, options)
            continue
        engine, sidecar = build_engine(export / source, options)
        assert engine.is_file() and sidecar.precision == precision, label
        assert (export / "fake.timing.cache").read_bytes() == b"timing"
        if implicit:
            opt_batch, pulled, batch = fake.calibrated[-1]
            assert opt_batch == batch == 8 and pulled == 3, label  # 20 photos in 3 batches of 8, all used
            assert all(a.freed for a in fake.allocations), "the calibration buffer is freed"
        if dla:
            assert (
                sidecar.dla_layers == {"on_dla": 2, "total": 3, "gpu_layers": ["layer2"]}
                and ".dla1." in engine.name
            )
        # the runtime on the engine just built: batch 1 from a CUDA graph, a batch over the profile
        backend = tensorrt_backend.load(engine, tensorrt_backend.TensorRTOptions(cuda_graph=True))
        x = np.random.default_rng(0).standard_normal((20, 3, 96, 96)).astype(np.float32)
        out = backend.infer(x)
        np.testing.assert_allclose(out[:, 0], x.reshape(20, -1).mean(1), rtol=1e-5)
        backend.infer(x[:1])
        backend.close()
        backend.close()
    # the failure paths touch names too: a parse error, and an engine TensorRT cannot deserialize
    fake.parse_ok = False
    with pytest.raises(EdgeSqueezeError, match="TensorRT cannot parse"):
        build_engine(export / "model.int8.onnx", BuildOptions(precision="int8"))
    (export / "model.int8.engine").write_bytes(b"")
    with pytest.raises(EdgeSqueezeError, match="cannot deserialize"):
        tensorrt_backend.load(export / "model.int8.engine")
    assert fake.api.touched <= fake.api.names


def test_a_removed_name_on_the_11_path_fails_here(install_fake, tiny_int8_export, tmp_path, monkeypatch):
    """The check above can fail: asking TensorRT 11 for BuilderFlag.FP16, as the code once did."""
    from edge_squeeze.export import tensorrt_build
    from edge_squeeze.export.tensorrt_build import build_engine
    from edge_squeeze.export.tensorrt_plan import BuildOptions

    install_fake("11.0")
    real = tensorrt_build.plan_build

    def old_plan(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real(*args, **kwargs), strongly_typed=False, fp16_flag=True)

    monkeypatch.setattr(tensorrt_build, "plan_build", old_plan)
    with pytest.raises(MissingName, match=r"TensorRT 11\.0 has no BuilderFlag\.FP16"):
        build_engine(tiny_int8_export / "model.onnx", BuildOptions(precision="fp16"), tmp_path / "x.engine")


class RacyBuffers(FakeBuffers):
    """One shared host buffer, as the real backend has: without the backend's lock two threads'
    batches overwrite each other between the copy in and the answer out."""

    def run(self, batch: np.ndarray, enqueue: Any) -> np.ndarray:
        self.shared = batch.copy()
        time.sleep(0.002)  # the launch: another thread gets the GIL here
        enqueue(1)
        held = self.shared
        return np.repeat(held.reshape(held.shape[0], -1).mean(1, keepdims=True), self.classes, axis=1)


def test_the_tensorrt_backend_lock_keeps_threads_apart(install_fake, tiny_int8_export, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from edge_squeeze.export.tensorrt_build import build_engine
    from edge_squeeze.export.tensorrt_plan import BuildOptions
    from edge_squeeze.runtimes import tensorrt_backend

    install_fake("10.13.3")
    engine, _ = build_engine(
        tiny_int8_export / "model.onnx", BuildOptions(precision="fp16"), tmp_path / "m.engine"
    )
    monkeypatch.setattr(tensorrt_backend, "CudaBuffers", RacyBuffers)
    backend = tensorrt_backend.load(engine)
    batches = [np.full((1, 3, 96, 96), float(i), np.float32) for i in range(8)]

    def worker(i: int) -> bool:
        return all(float(backend.infer(batches[i])[0, 0]) == float(i) for _ in range(15))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(worker, range(8))), "a thread got another thread's answer"
    backend.close()


@pytest.fixture()
def engine_cache(install_fake, tiny_int8_export, pattern_dataset, tmp_path, monkeypatch):
    """``cached_engine`` on a copy of the tiny export with the fake TensorRT; ``builds`` counts the
    engine builds it asks for."""
    import shutil

    from edge_squeeze.export import tensorrt_build

    export = tmp_path / "export"
    shutil.copytree(tiny_int8_export, export)
    install_fake("10.13.3")
    builds: list = []
    real = tensorrt_build.build_engine

    def counting(onnx_path: Path, options: Any, out_path: Any = None) -> Any:
        builds.append((onnx_path.name, options))
        return real(onnx_path, options, out_path)

    monkeypatch.setattr(tensorrt_build, "build_engine", counting)
    return types.SimpleNamespace(
        export=export, builds=builds, install=install_fake, calib=pattern_dataset / "train"
    )


def test_the_engine_cache_reuses_an_engine_for_the_same_inputs(engine_cache):
    from edge_squeeze.export.tensorrt_build import cached_engine
    from edge_squeeze.runtimes.tensorrt_options import BuildOptions

    model = engine_cache.export / "model.onnx"
    first = cached_engine(model, BuildOptions(precision="fp16"))
    again = cached_engine(model, BuildOptions(precision="fp16"))
    assert first == again and first.is_file() and len(engine_cache.builds) == 1


def test_the_engine_cache_keys_everything_an_engine_depends_on(engine_cache):
    from edge_squeeze.export.tensorrt_build import cached_engine
    from edge_squeeze.runtimes.tensorrt_options import BuildOptions

    model = engine_cache.export / "model.onnx"
    base = cached_engine(model, BuildOptions(precision="fp16"))
    paths = {"base": base}
    paths["profile"] = cached_engine(model, BuildOptions(precision="fp16", profile="1,4,16"))
    paths["precision"] = cached_engine(model, BuildOptions(precision="fp32"))
    calib = BuildOptions(precision="int8", int8_mode="implicit", calib_dir=engine_cache.calib, calib_count=8)
    paths["calibration"] = cached_engine(model, calib)
    paths["other calibration set"] = cached_engine(model, dataclasses.replace(calib, calib_count=9))
    engine_cache.install("10.3.0")
    paths["tensorrt version"] = cached_engine(model, BuildOptions(precision="fp16"))
    engine_cache.install("10.13.3")
    import onnx

    changed = onnx.load(str(model))
    changed.doc_string = "new weights"  # other model bytes: a new hash
    onnx.save(changed, str(model))
    paths["model bytes"] = cached_engine(model, BuildOptions(precision="fp16"))
    assert len(set(paths.values())) == len(paths), paths
    assert len(engine_cache.builds) == len(paths)


def test_a_corrupt_or_foreign_cached_engine_is_rebuilt(engine_cache):
    import json

    from edge_squeeze.export.tensorrt_build import cached_engine
    from edge_squeeze.runtimes.engine_sidecar import sidecar_path
    from edge_squeeze.runtimes.tensorrt_options import BuildOptions

    model = engine_cache.export / "model.onnx"
    engine = cached_engine(model, BuildOptions(precision="fp16"))
    sidecar = sidecar_path(engine)
    sidecar.write_text("{ not json")
    assert cached_engine(model, BuildOptions(precision="fp16")) == engine and len(engine_cache.builds) == 2
    data = json.loads(sidecar.read_text())
    data["gpu_name"] = "Another GPU"  # a sidecar from another device
    sidecar.write_text(json.dumps(data))
    cached_engine(model, BuildOptions(precision="fp16"))
    assert len(engine_cache.builds) == 3
    engine.write_bytes(b"corrupt plan")  # the engine no longer matches its sidecar's hash
    cached_engine(model, BuildOptions(precision="fp16"))
    assert len(engine_cache.builds) == 4
