"""ONNX -> TensorRT engine (a raw plan file that trtexec and DeepStream load as is) + sidecar JSON.

The GPU-free parts (version parsing, INT8 strategy, profiles, cache keys, sidecar, calibrator batch
feeding) are plain functions tested on the CPU. Everything that touches ``tensorrt`` or ``pycuda``
is written against TensorRT 8.5 ... 10.x (and 11 where it differs) and type-checked with mypy
against ``tensorrt-stubs``, but is **unrun**: no machine available to this project had TensorRT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError, MissingDependencyError
from edge_squeeze.fileio import sha256_file, write_bytes_atomic, write_text_atomic
from edge_squeeze.metadata import ArtifactMetadata

if TYPE_CHECKING:
    pass

log = logging.getLogger("edge_squeeze")

PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_FORMAT = 1
# a 4 GB Jetson (Nano, Orin Nano 4GB) shares that memory with the OS; 512 MiB is safe there
DEFAULT_WORKSPACE_MB = 512


# --- GPU-free logic ----------------------------------------------------------------------------


def parse_trt_version(version: str) -> Tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise EdgeSqueezeError(f"cannot parse TensorRT version {version!r}") from exc


def has_fast_int8(compute_capability: Tuple[int, int]) -> bool:
    """INT8 tensor math is fast from sm_61 (DP4A) and sm_70+; Jetson Nano (sm_53) and TX2 (sm_62)
    lack it, so INT8 there is slower than FP16."""
    return compute_capability == (6, 1) or compute_capability >= (7, 0)


@dataclasses.dataclass(frozen=True)
class Int8Plan:
    precision: str  # what will be built: int8, or fp16 when INT8 is slow here
    mode: str  # "explicit" (Q/DQ model), "implicit" (calibrator), or "none"
    strongly_typed: bool
    reason: str


def plan_precision(
    requested: str,
    trt_version: Tuple[int, int],
    onnx_has_qdq: bool,
    compute_capability: Tuple[int, int],
    int8_mode: str = "auto",
) -> Int8Plan:
    """Decide how to build ``requested`` precision on this TensorRT and GPU."""
    if requested not in PRECISIONS:
        raise EdgeSqueezeError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    strongly_typed_ok = trt_version >= (10, 0)
    if requested != "int8":
        if onnx_has_qdq:
            raise EdgeSqueezeError(
                f"a {requested} engine needs the fp32 model (model.onnx), not a Q/DQ int8 model"
            )
        return Int8Plan(requested, "none", False, f"{requested} as asked")
    if not has_fast_int8(compute_capability):
        return Int8Plan(
            "fp16",
            "none",
            False,
            f"INT8 is slow on sm_{compute_capability[0]}{compute_capability[1]} (no fast int8 path); building FP16",
        )
    if int8_mode == "implicit" or (int8_mode == "auto" and not onnx_has_qdq):
        if trt_version >= (11, 0):
            raise EdgeSqueezeError(
                "TensorRT 11 removed implicit INT8 calibration: build from the Q/DQ model (model.int8.onnx, "
                "made by edge-squeeze export --int8)"
            )
        if onnx_has_qdq:
            raise EdgeSqueezeError("implicit calibration needs the fp32 model (model.onnx), not a Q/DQ model")
        return Int8Plan("int8", "implicit", False, "implicit INT8 with a calibrator (TensorRT <= 10)")
    if not onnx_has_qdq:
        raise EdgeSqueezeError(
            "explicit INT8 needs the Q/DQ model (model.int8.onnx from edge-squeeze export --int8)"
        )
    # TensorRT 10 deprecates weakly typed precision flags; a strongly typed network takes its
    # precisions from the Q/DQ nodes themselves
    return Int8Plan("int8", "explicit", strongly_typed_ok, "explicit INT8 from Q/DQ nodes")


@dataclasses.dataclass(frozen=True)
class BatchProfile:
    min: int = 1
    opt: int = 1
    max: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise EdgeSqueezeError(
                f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}"
            )

    def shapes(self, chw: Sequence[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        c, h, w = chw
        return (self.min, c, h, w), (self.opt, c, h, w), (self.max, c, h, w)

    def to_dict(self) -> Dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"1,4,8"`` (min, opt, max) or ``"8"`` (1, 8, 8)."""
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError as exc:
            raise EdgeSqueezeError(f"batch profile {text!r}: give MAX or MIN,OPT,MAX") from exc
        if len(values) == 1:
            return cls(1, values[0], values[0])
        if len(values) == 3:
            return cls(*values)
        raise EdgeSqueezeError(f"batch profile {text!r}: give MAX or MIN,OPT,MAX")


@dataclasses.dataclass(frozen=True)
class DeviceIdentity:
    """What an engine is tied to: TensorRT version and the GPU it was tuned on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: Tuple[int, int]

    def slug(self) -> str:
        name = "".join(ch if ch.isalnum() else "-" for ch in self.gpu_name).strip("-").lower()
        return f"trt{self.tensorrt_version}-{name}-sm{self.compute_capability[0]}{self.compute_capability[1]}"


def engine_cache_key(
    model_sha256: str, device: DeviceIdentity, precision: str, profile: BatchProfile, dla_core: Optional[int]
) -> str:
    payload = json.dumps(
        {
            "model": model_sha256,
            "device": device.slug(),
            "precision": precision,
            "profile": profile.to_dict(),
            "dla": dla_core,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def engine_cache_path(
    onnx_path: Path,
    model_sha256: str,
    device: DeviceIdentity,
    precision: str,
    profile: BatchProfile,
    dla_core: Optional[int] = None,
) -> Path:
    """``model.<precision>.<key>.engine`` next to the model (jetson-inference's convention)."""
    key = engine_cache_key(model_sha256, device, precision, profile, dla_core)
    stem = onnx_path.name[: -len(".onnx")] if onnx_path.name.endswith(".onnx") else onnx_path.stem
    stem = stem.replace(".int8", "")
    return onnx_path.with_name(f"{stem}.{precision}.{device.slug()}.{key}.engine")


@dataclasses.dataclass
class Sidecar:
    """``<engine>.json``: everything needed to trust and use a raw plan file."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: Tuple[int, int]
    precision: str
    profile: BatchProfile
    dla_core: Optional[int]
    onnx_sha256: str
    engine_sha256: str
    input_name: str
    output_name: str
    metadata: ArtifactMetadata
    int8_mode: str = "none"
    built_at: str = ""
    format: int = SIDECAR_FORMAT

    @property
    def device(self) -> DeviceIdentity:
        return DeviceIdentity(self.tensorrt_version, self.gpu_name, tuple(self.compute_capability))  # type: ignore[arg-type]

    def to_json(self) -> str:
        data = {
            "format": self.format,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "precision": self.precision,
            "batch_profile": self.profile.to_dict(),
            "dla_core": self.dla_core,
            "onnx_sha256": self.onnx_sha256,
            "engine_sha256": self.engine_sha256,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "int8_mode": self.int8_mode,
            "built_at": self.built_at,
            # preprocessing and labels travel with the engine, like ONNX metadata does
            "preprocess": self.metadata.preprocess.to_dict(),
            "labels": self.metadata.labels.to_dict(),
            "edge_squeeze": self.metadata.to_dict(),
        }
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "sidecar") -> Sidecar:
        try:
            data = json.loads(text)
            if int(data.get("format", 1)) > SIDECAR_FORMAT:
                raise EdgeSqueezeError(f"{source} was written by a newer edge-squeeze; upgrade edge-squeeze")
            profile = data["batch_profile"]
            return cls(
                tensorrt_version=str(data["tensorrt_version"]),
                gpu_name=str(data["gpu_name"]),
                compute_capability=tuple(data["compute_capability"]),  # type: ignore[arg-type]
                precision=str(data["precision"]),
                profile=BatchProfile(int(profile["min"]), int(profile["opt"]), int(profile["max"])),
                dla_core=data.get("dla_core"),
                onnx_sha256=str(data["onnx_sha256"]),
                engine_sha256=str(data.get("engine_sha256", "")),
                input_name=str(data["input_name"]),
                output_name=str(data["output_name"]),
                metadata=ArtifactMetadata.from_dict(data["edge_squeeze"]),
                int8_mode=str(data.get("int8_mode", "none")),
                built_at=str(data.get("built_at", "")),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise EdgeSqueezeError(
                f"{source} is not a valid engine sidecar ({exc}); rebuild the engine"
            ) from exc

    @classmethod
    def read(cls, engine_path: Path) -> Sidecar:
        path = sidecar_path(engine_path)
        if not path.is_file():
            raise EdgeSqueezeError(
                f"{engine_path} has no sidecar {path.name}: edge-squeeze needs it for labels and preprocessing; "
                "build engines with edge-squeeze build-engine"
            )
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))


def sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def incompatibility(sidecar: Sidecar, here: DeviceIdentity) -> Optional[str]:
    """Why an engine built as ``sidecar`` says cannot run here (plans are tied to both), or None."""
    if parse_trt_version(sidecar.tensorrt_version) != parse_trt_version(here.tensorrt_version) or (
        sidecar.tensorrt_version.split(".")[:3] != here.tensorrt_version.split(".")[:3]
    ):
        return f"built with TensorRT {sidecar.tensorrt_version}, this is TensorRT {here.tensorrt_version}"
    if (
        tuple(sidecar.compute_capability) != tuple(here.compute_capability)
        or sidecar.gpu_name != here.gpu_name
    ):
        cc = sidecar.compute_capability
        return f"built for {sidecar.gpu_name} (sm_{cc[0]}{cc[1]}), this GPU is {here.gpu_name} (sm_{here.compute_capability[0]}{here.compute_capability[1]})"
    return None


class CalibrationFeeder:
    """The GPU-free half of TensorRT's implicit calibrator: fixed-size batches from the calibration
    set (the model's own preprocessing), and the calibration cache file read and written as bytes."""

    def __init__(self, batches: Sequence[np.ndarray], cache_path: Optional[Path]) -> None:
        self._batches = list(batches)
        if not self._batches:
            raise EdgeSqueezeError("no calibration batches")
        self.batch_size = int(self._batches[0].shape[0])
        self.nbytes = int(self._batches[0].nbytes)
        self.cache_path = cache_path
        self._next = 0

    def next_batch(self) -> Optional[np.ndarray]:
        if self._next >= len(self._batches):
            return None
        batch = np.ascontiguousarray(self._batches[self._next], dtype=np.float32)
        self._next += 1
        return batch

    def read_cache(self) -> Optional[bytes]:
        if self.cache_path is not None and self.cache_path.is_file():
            log.info("reusing TensorRT calibration cache %s", self.cache_path)
            return self.cache_path.read_bytes()
        return None

    def write_cache(self, data: bytes) -> None:
        if self.cache_path is not None:
            write_bytes_atomic(self.cache_path, bytes(data))


@dataclasses.dataclass
class BuildOptions:
    precision: str = "fp16"
    profile: BatchProfile = dataclasses.field(default_factory=BatchProfile)
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Optional[Path] = None
    dla_core: Optional[int] = None
    gpu_fallback: bool = True
    optimization_level: Optional[int] = None  # 0..5 where supported (TensorRT >= 8.6)
    int8_mode: str = "auto"  # auto | explicit | implicit
    calibrator: str = "entropy"  # entropy (IInt8EntropyCalibrator2) | minmax
    calib_dir: Optional[Path] = None
    calib_count: Optional[int] = None
    calib_batch: int = 8


# --- TensorRT (unrun here: typed against tensorrt-stubs) -----------------------------------------


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
    """TensorRT version and GPU 0, via pycuda (unrun here)."""
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


class _Logger:
    """Forwards TensorRT's log to ours, so build progress shows as log lines."""

    def __new__(cls, trt_mod: Any) -> Any:
        class Forwarder(trt_mod.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt_mod.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                if severity <= trt_mod.ILogger.Severity.ERROR:
                    log.error("TensorRT: %s", msg)
                elif severity == trt_mod.ILogger.Severity.WARNING:
                    log.warning("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)

        return Forwarder()


def _progress_monitor(trt_mod: Any) -> Any:
    """TensorRT >= 10's IProgressMonitor, printing one line per finished build phase."""

    class Monitor(trt_mod.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_mod.IProgressMonitor.__init__(self)
            self._started: Dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            self._started[phase_name] = time.perf_counter()
            if parent_phase is None:
                log.info("TensorRT build: %s (%d steps) ...", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            began = self._started.pop(phase_name, time.perf_counter())
            log.info("TensorRT build: %s done in %.1f s", phase_name, time.perf_counter() - began)

    return Monitor()


def make_calibrator(trt_mod: Any, feeder: CalibrationFeeder, algorithm: str) -> Any:
    """IInt8EntropyCalibrator2 (default; what DLA needs) or IInt8MinMaxCalibrator over ``feeder``."""
    import pycuda.driver as cuda

    base = trt_mod.IInt8EntropyCalibrator2 if algorithm == "entropy" else trt_mod.IInt8MinMaxCalibrator

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.device_input = cuda.mem_alloc(feeder.nbytes)

        def get_batch_size(self) -> int:
            return feeder.batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            batch = feeder.next_batch()
            if batch is None:
                return None
            cuda.memcpy_htod(self.device_input, batch)
            return [int(self.device_input)]

        def read_calibration_cache(self) -> Optional[bytes]:
            return feeder.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            feeder.write_cache(bytes(cache))

    return Calibrator()


def check_engine_source(metadata: ArtifactMetadata, onnx_path: Path) -> None:
    """TensorRT builds from the fp32 model or the TensorRT INT8 flavour, never the CPU flavour,
    whose uint8 pixel input and ``reduce_range`` weights are for ONNX Runtime on x86."""
    if metadata.preprocess.pixel_input:
        raise EdgeSqueezeError(
            f"{onnx_path.name} is ONNX Runtime's CPU flavour (uint8 pixel input); build TensorRT "
            "engines from model.int8.onnx or model.onnx"
        )


def build_engine(
    onnx_path: Path, options: BuildOptions, out_path: Optional[Path] = None
) -> Tuple[Path, Sidecar]:
    """Build and write ``model.<precision>.engine`` (raw plan) plus its sidecar JSON. Unrun here."""
    from .onnx_export import load_onnx_model, metadata_of

    trt_mod = import_tensorrt()
    device = current_device()
    onnx_path = Path(onnx_path)
    model = load_onnx_model(onnx_path)
    metadata = metadata_of(model, str(onnx_path))
    check_engine_source(metadata, onnx_path)
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    version = parse_trt_version(device.tensorrt_version)
    plan = plan_precision(options.precision, version, qdq, device.compute_capability, options.int8_mode)
    if plan.precision != options.precision or plan.mode == "implicit":
        log.info("%s", plan.reason)
    engine_bytes, input_name, output_name = _build_serialized(
        trt_mod, onnx_path, model, metadata, plan, options
    )
    out_path = out_path or onnx_path.with_name(f"model.{plan.precision}.engine")
    write_bytes_atomic(out_path, engine_bytes)
    sidecar = Sidecar(
        tensorrt_version=device.tensorrt_version,
        gpu_name=device.gpu_name,
        compute_capability=device.compute_capability,
        precision=plan.precision,
        profile=options.profile,
        dla_core=options.dla_core,
        onnx_sha256=sha256_file(onnx_path),
        engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        input_name=input_name,
        output_name=output_name,
        metadata=dataclasses.replace(metadata, precision=plan.precision),
        int8_mode=plan.mode,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    write_text_atomic(sidecar_path(out_path), sidecar.to_json())
    log.info("wrote %s (%.1f MB) and %s", out_path, len(engine_bytes) / 1e6, sidecar_path(out_path).name)
    return out_path, sidecar


def _build_serialized(
    trt_mod: Any,
    onnx_path: Path,
    model: Any,
    metadata: ArtifactMetadata,
    plan: Int8Plan,
    options: BuildOptions,
) -> Tuple[bytes, str, str]:
    import tensorrt as trt  # typed by tensorrt-stubs

    logger = _Logger(trt_mod)
    builder = trt.Builder(logger)
    version = parse_trt_version(str(trt.__version__))
    flags = 0
    if version < (10, 0):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeSqueezeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    inp = network.get_input(0)
    out = network.get_output(0)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    min_s, opt_s, max_s = options.profile.shapes(metadata.preprocess.input_shape)
    profile.set_shape(inp.name, trt.Dims(list(min_s)), trt.Dims(list(opt_s)), trt.Dims(list(max_s)))
    config.add_optimization_profile(profile)
    if plan.precision == "fp16" and not plan.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.precision == "int8" and not plan.strongly_typed:
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers without int8 kernels fall back to fp16, not fp32
    if plan.mode == "implicit":
        config.int8_calibrator = _calibrator_for(trt_mod, onnx_path, metadata, options)
        config.set_calibration_profile(profile)
    if options.dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise EdgeSqueezeError("this device has no DLA cores (--dla-core needs a Xavier or Orin)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if options.optimization_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(options.optimization_level)
    timing_cache = None
    if options.timing_cache is not None:
        data = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        timing_cache = config.create_timing_cache(data)
        config.set_timing_cache(timing_cache, False)
    if version >= (10, 0):
        config.progress_monitor = _progress_monitor(trt_mod)
    log.info(
        "building a %s TensorRT engine from %s (this takes minutes on a Jetson) ...",
        plan.precision,
        onnx_path.name,
    )
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeSqueezeError("TensorRT failed to build the engine; run with -vv for TensorRT's log")
    log.info("engine built in %.0f s", time.perf_counter() - started)
    if timing_cache is not None and options.timing_cache is not None:
        write_bytes_atomic(options.timing_cache, bytes(timing_cache.serialize()))
    return bytes(serialized), inp.name, out.name


def _calibrator_for(trt_mod: Any, onnx_path: Path, metadata: ArtifactMetadata, options: BuildOptions) -> Any:
    from .calibration import CalibrationSet, select_calibration_images

    if options.calib_dir is None:
        raise EdgeSqueezeError("implicit INT8 needs --calib DIR (or build from model.int8.onnx instead)")
    calib = CalibrationSet(
        select_calibration_images(options.calib_dir, options.calib_count), metadata.preprocess
    )
    cache = onnx_path.with_name(f"{onnx_path.stem}.trt-{options.calibrator}-{calib.fingerprint()[:12]}.calib")
    feeder = CalibrationFeeder(list(calib.fixed_batches(options.calib_batch)), cache)
    return make_calibrator(trt_mod, feeder, options.calibrator)


def build_engine_cli(onnx_path: Path, args: Any) -> int:
    """``edge-squeeze build-engine`` and ``export --engine``."""
    precision = getattr(args, "engine_precision", None) or getattr(args, "precision", None)
    if precision is None:
        precision = "int8" if onnx_path.name.endswith(".int8.onnx") else "fp16"
    options = BuildOptions(
        precision=precision,
        profile=BatchProfile.parse(getattr(args, "batch_profile", None) or "1,1,8"),
        workspace_mb=getattr(args, "workspace", None) or DEFAULT_WORKSPACE_MB,
        timing_cache=Path(args.timing_cache) if getattr(args, "timing_cache", None) else None,
        dla_core=getattr(args, "dla_core", None),
        optimization_level=getattr(args, "optimization_level", None),
        int8_mode=getattr(args, "int8_mode", None) or "auto",
        calibrator=getattr(args, "calibrator", None) or "entropy",
        calib_dir=Path(args.calib) if getattr(args, "calib", None) else None,
        calib_count=getattr(args, "calib_count", None),
    )
    if not onnx_path.is_file():
        raise EdgeSqueezeError(f"ONNX model not found: {onnx_path}")
    out = Path(args.output) if getattr(args, "output", None) else None
    build_engine(onnx_path, options, out)
    return 0
