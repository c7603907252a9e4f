"""ONNX -> TensorRT engine (a raw plan file that trtexec and DeepStream load as is) + sidecar JSON,
as :mod:`.tensorrt_plan` decides, and the engine cache beside an ONNX model.

Written against TensorRT 8.5 ... 10.x and 11, type-checked with mypy against ``tensorrt-stubs``;
every TensorRT name each version's path touches is checked against that version's bindings
(``tests/test_tensorrt_api.py``); docs/gpu-validation.md says what has run on a device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.fileio import sha256_file, write_bytes_atomic, write_text_atomic
from edge_squeeze.formats import is_qdq_file
from edge_squeeze.metadata import ArtifactMetadata, load_onnx_model, metadata_of
from edge_squeeze.runtimes.cuda_buffers import primary_context
from edge_squeeze.runtimes.engine_sidecar import (
    BatchProfile,
    Sidecar,
    incompatibility,
    parse_trt_version,
    sidecar_path,
)
from edge_squeeze.runtimes.tensorrt_backend import (
    current_device,
    default_precision,
    import_tensorrt,
    make_logger,
)

from .tensorrt_plan import (
    CALIBRATORS,
    BuildOptions,
    BuildPlan,
    CalibrationFeeder,
    DlaPlacement,
    _version_text,
    calibration_profile,
    check_engine_source,
    dla_placement,
    engine_cache_path,
    engine_file_name,
    fp16_sibling,
    model_source_kind,
    plan_build,
    resolve_profile,
    tensorrt_calibration_cache_path,
)

log = logging.getLogger("edge_squeeze")


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
    """IInt8EntropyCalibrator2 (default) or IInt8MinMaxCalibrator over ``feeder``. Its device buffer
    is allocated in the current CUDA context (push one first: :func:`primary_context`) and freed by
    ``close()``."""
    import pycuda.driver as cuda

    if algorithm not in CALIBRATORS:
        raise EdgeSqueezeError(f"calibrator must be one of {', '.join(CALIBRATORS)}, not {algorithm!r}")
    base = trt_mod.IInt8EntropyCalibrator2 if algorithm == "entropy" else trt_mod.IInt8MinMaxCalibrator

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.device_input: Any = cuda.mem_alloc(feeder.nbytes)

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

        def close(self) -> None:
            if self.device_input is not None:
                self.device_input.free()
                self.device_input = None

    return Calibrator()


@dataclasses.dataclass
class BuiltEngine:
    plan: bytes
    input_name: str
    output_name: str
    dla: Optional[DlaPlacement] = None


@dataclasses.dataclass
class _Calibration:
    feeder: CalibrationFeeder
    key: str  # model + calibration set + calibrator


def _calibration_for(
    onnx_path: Path, model_sha: str, metadata: ArtifactMetadata, options: BuildOptions
) -> _Calibration:
    from .calibration import CalibrationSet, calibration_cache_key, select_calibration_images

    if options.calib_dir is None:
        raise EdgeSqueezeError("implicit INT8 needs --calib DIR (or build from model.int8.onnx instead)")
    calib = CalibrationSet(
        select_calibration_images(options.calib_dir, options.calib_count), metadata.preprocess
    )
    key = calibration_cache_key(
        model_sha, calib.fingerprint(), f"trt-{options.calibrator}", batch=options.calib_batch
    )
    cache = tensorrt_calibration_cache_path(onnx_path, key, options.calibrator)
    return _Calibration(CalibrationFeeder(list(calib.fixed_batches(options.calib_batch)), cache), key)


def build_engine(
    onnx_path: Path, options: BuildOptions, out_path: Optional[Path] = None
) -> Tuple[Path, Sidecar]:
    """Build and write ``model.<precision>[.dla<N>].engine`` (raw plan) plus its sidecar JSON."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EdgeSqueezeError(f"ONNX model not found: {onnx_path}")
    trt_mod = import_tensorrt()
    model = load_onnx_model(onnx_path)
    metadata = metadata_of(model, str(onnx_path))
    check_engine_source(metadata, onnx_path)
    kind = model_source_kind(model, metadata)
    dla = options.dla_core is not None
    profile = resolve_profile(options.profile, dla)
    precision = options.precision or default_precision(onnx_path)
    with primary_context():  # pycuda's calibration buffer needs a current context: TensorRT's own
        device = current_device()
        sibling = fp16_sibling(onnx_path, metadata) if kind == "fp32" else None
        plan = plan_build(
            precision,
            parse_trt_version(device.tensorrt_version),
            kind,
            device.compute_capability,
            options.int8_mode,
            dla=dla,
            fp16_onnx=sibling is not None,
        )
        log.info("build plan: %s", plan.reason)
        source_path = sibling if (plan.source == "fp16" and sibling is not None) else onnx_path
        calibration = None
        if plan.mode == "implicit":
            calibration = _calibration_for(onnx_path, sha256_file(onnx_path), metadata, options)
        built = _build_serialized(trt_mod, source_path, metadata, plan, options, profile, calibration)
    out_path = out_path or onnx_path.with_name(engine_file_name(onnx_path, plan.precision, options.dla_core))
    write_bytes_atomic(out_path, built.plan)
    sidecar = Sidecar(
        tensorrt_version=device.tensorrt_version,
        gpu_name=device.gpu_name,
        compute_capability=device.compute_capability,
        precision=plan.precision,
        profile=profile,
        dla_core=options.dla_core,
        onnx_sha256=sha256_file(onnx_path),
        engine_sha256=hashlib.sha256(built.plan).hexdigest(),
        input_name=built.input_name,
        output_name=built.output_name,
        metadata=dataclasses.replace(metadata, precision=plan.precision),
        int8_mode=plan.mode,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        strongly_typed=plan.strongly_typed,
        source=source_path.name,
        dla_layers=built.dla.to_dict() if built.dla else None,
    )
    write_text_atomic(sidecar_path(out_path), sidecar.to_json())
    log.info("wrote %s (%.1f MB) and %s", out_path, len(built.plan) / 1e6, sidecar_path(out_path).name)
    return out_path, sidecar


def _build_serialized(
    trt_mod: Any,
    onnx_path: Path,
    metadata: ArtifactMetadata,
    plan: BuildPlan,
    options: BuildOptions,
    profile: BatchProfile,
    calibration: Optional[_Calibration],
) -> BuiltEngine:
    """Parse ``onnx_path`` and build it as ``plan`` says. Call with a CUDA context current."""
    import tensorrt as trt  # typed by tensorrt-stubs

    logger = make_logger(trt_mod)
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
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise EdgeSqueezeError(
            f"{onnx_path} has {network.num_inputs} inputs and {network.num_outputs} outputs; edge-squeeze "
            "models have one of each"
        )
    inp = network.get_input(0)
    out = network.get_output(0)
    chw = metadata.preprocess.input_shape
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    build_profile = builder.create_optimization_profile()
    build_profile.set_shape(inp.name, *_dims(trt, profile.shapes(chw)))
    config.add_optimization_profile(build_profile)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    calibrator = None
    try:
        if plan.mode == "implicit":
            assert calibration is not None
            calibrator = make_calibrator(trt_mod, calibration.feeder, options.calibrator)
            config.int8_calibrator = calibrator
            calib_profile = builder.create_optimization_profile()
            calib_shapes = calibration_profile(calibration.feeder.batch_size).shapes(chw)
            calib_profile.set_shape(inp.name, *_dims(trt, calib_shapes))
            if not config.set_calibration_profile(calib_profile):
                raise EdgeSqueezeError("TensorRT refused the calibration profile")
        placement = None
        if options.dla_core is not None:
            cores = builder.num_DLA_cores
            if not 0 <= options.dla_core < cores:
                raise EdgeSqueezeError(
                    f"DLA core {options.dla_core} does not exist: this device has {cores} DLA core(s)"
                    + (" (DLA needs a Xavier or an Orin other than the Orin Nano)" if cores == 0 else "")
                )
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(options.dla_core)
            if options.gpu_fallback:
                config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            layers = [network.get_layer(i) for i in range(network.num_layers)]
            placement = dla_placement(
                [(layer.name, config.can_run_on_DLA(layer)) for layer in layers], options.gpu_fallback
            )
            log.info("DLA core %d: %s", options.dla_core, placement.describe())
        if options.optimization_level is not None:
            if version >= (8, 6):
                config.builder_optimization_level = int(options.optimization_level)
            else:
                log.warning(
                    "--optimization-level needs TensorRT 8.6 or newer; TensorRT %s ignores it",
                    _version_text(version),
                )
        timing_cache = None
        if options.timing_cache is not None:
            timing_cache = _attach_timing_cache(config, options.timing_cache)
        if version >= (10, 0):
            config.progress_monitor = _progress_monitor(trt_mod)
        log.info(
            "building a %s TensorRT engine from %s (minutes on a Jetson) ...", plan.precision, onnx_path.name
        )
        started = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EdgeSqueezeError("TensorRT failed to build the engine; run with -vv for TensorRT's log")
        log.info("engine built in %.0f s", time.perf_counter() - started)
        if timing_cache is not None and options.timing_cache is not None:
            write_bytes_atomic(options.timing_cache, bytes(timing_cache.serialize()))
        return BuiltEngine(bytes(serialized), inp.name, out.name, placement)
    finally:
        if calibrator is not None:
            calibrator.close()


def _dims(trt_mod: Any, shapes: Sequence[Tuple[int, ...]]) -> List[Any]:
    return [trt_mod.Dims(list(shape)) for shape in shapes]


def _attach_timing_cache(config: Any, path: Path) -> Any:
    """The timing cache stored at ``path`` set on ``config``; one that is unreadable, damaged or from
    another TensorRT or GPU is replaced by a new, empty one (written back after the build), with
    one warning. None if TensorRT refuses even an empty cache."""
    data = _read_timing_cache(path)
    for attempt in (data, b"") if data else (b"",):
        try:
            cache = config.create_timing_cache(attempt)
        except Exception:  # TensorRT raises on a cache it cannot parse
            cache = None
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
        if attempt:
            log.warning(
                "timing cache %s does not fit this TensorRT or GPU, or is damaged; starting a new one", path
            )
    log.warning("TensorRT refused a timing cache; building without one")
    return None


def _read_timing_cache(path: Path) -> bytes:
    """A timing cache's bytes; an unreadable one is ignored with a warning (TensorRT rebuilds it)."""
    if not path.is_file():
        return b""
    try:
        return path.read_bytes()
    except OSError as exc:
        log.warning("ignoring unreadable timing cache %s (%s)", path, exc)
        return b""


def cached_engine(onnx_path: Path, options: BuildOptions) -> Path:
    """The engine for ``onnx_path`` cached beside it, built (or rebuilt, with one log line) as needed:
    the TensorRT backend's engine builder for ONNX models."""
    from .calibration import calibration_fingerprint, select_calibration_images

    precision = options.precision or default_precision(onnx_path)
    device = current_device()
    dla = options.dla_core is not None
    profile = resolve_profile(options.profile, dla)
    model_sha = sha256_file(onnx_path)
    calibration = None
    if options.calib_dir and precision == "int8" and not is_qdq_file(onnx_path):
        spec = metadata_of(load_onnx_model(onnx_path), str(onnx_path)).preprocess
        images = select_calibration_images(options.calib_dir, options.calib_count)
        calibration = calibration_fingerprint(images, spec)
    path = engine_cache_path(onnx_path, model_sha, device, precision, profile, options.dla_core, calibration)
    if path.is_file():
        try:
            sidecar = Sidecar.read(path)
            problem = incompatibility(sidecar, device)
            if (
                problem is None
                and sidecar.onnx_sha256 == model_sha
                and sidecar.engine_sha256 == sha256_file(path)
            ):
                return path
            log.info("rebuilding cached engine %s: %s", path.name, problem or "model or engine changed")
        except (EdgeSqueezeError, OSError) as exc:
            log.info("rebuilding cached engine %s: %s", path.name, exc)
    build = dataclasses.replace(
        options,
        precision=precision,
        timing_cache=options.timing_cache or onnx_path.with_name(f"{device.slug()}.timing.cache"),
    )
    built, _ = build_engine(onnx_path, build, path)
    return built
