"""ONNX -> TensorRT engine (a raw plan file that trtexec and DeepStream load as is) + sidecar JSON.

The GPU-free parts (version parsing, the build plan per TensorRT version, profiles, cache keys,
sidecar, calibrator batch feeding, DLA placement summary) are plain functions tested on the CPU.
Everything that touches ``tensorrt`` or ``pycuda`` is written against TensorRT 8.5 ... 10.x and 11,
type-checked with mypy against ``tensorrt-stubs``, and every TensorRT name it touches on each
version's path is checked against that version's bindings (``tests/test_tensorrt_api.py``); it has
not run on a GPU (docs/gpu-validation.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError, MissingDependencyError
from edge_squeeze.fileio import sha256_file, write_bytes_atomic, write_text_atomic
from edge_squeeze.metadata import ArtifactMetadata

log = logging.getLogger("edge_squeeze")

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("auto", "explicit", "implicit")
CALIBRATORS = ("entropy", "minmax")
SIDECAR_FORMAT = 1
# a 4 GB Jetson (Orin Nano 4GB) shares that memory with the OS; 512 MiB is safe there
DEFAULT_WORKSPACE_MB = 512
# TensorRT deprecated the weak-typing precision flags in 10.12 and removed them in 11.0
STRONG_TYPING_FROM = (10, 12)
WEAK_TYPING_UNTIL = (11, 0)  # exclusive
# the calibrator's fixed batch; calibration gets a static profile of exactly this batch
CALIBRATION_BATCH = 8
FP16_SIBLING = "model.fp16.onnx"


# --- GPU-free logic ----------------------------------------------------------------------------


def parse_trt_version(version: str) -> Tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise EdgeSqueezeError(f"cannot parse TensorRT version {version!r}") from exc


def has_fast_int8(compute_capability: Tuple[int, int]) -> bool:
    """INT8 tensor math is fast from sm_61 (DP4A) and sm_70+; sm_5x, sm_60 and sm_62 lack it."""
    return compute_capability == (6, 1) or compute_capability >= (7, 0)


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """How one engine is built on one TensorRT version and GPU."""

    precision: str  # what will be built: fp32, fp16 or int8
    mode: str  # INT8 quantization: "explicit" (Q/DQ model), "implicit" (calibrator), or "none"
    strongly_typed: bool  # precisions come from the network's own types (Q/DQ, fp16 tensors)
    fp16_flag: bool  # BuilderFlag.FP16 (weak typing only)
    int8_flag: bool  # BuilderFlag.INT8 (weak typing only)
    source: (
        str  # which file is parsed: "fp32" (model.onnx), "qdq" (model.int8.onnx), "fp16" (model.fp16.onnx)
    )
    reason: str


def _version_text(version: Tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def plan_build(
    requested: str,
    trt_version: Tuple[int, int],
    source: str,
    compute_capability: Tuple[int, int],
    int8_mode: str = "auto",
    dla: bool = False,
    fp16_onnx: bool = False,
) -> BuildPlan:
    """Decide how to build ``requested`` precision from a ``source`` model ("fp32", "fp16" or "qdq")
    on this TensorRT and GPU; ``fp16_onnx`` says whether an fp16 ONNX sibling of an fp32 source exists.

    The rules, from NVIDIA's documentation:

    * weak typing (``BuilderFlag.FP16``/``INT8``) is what TensorRT 8.5 ... 10.11 build best with; it was
      deprecated in 10.12 and removed in 11.0, where every network is strongly typed: an fp16 engine
      then needs an fp16 ONNX, INT8 needs Q/DQ nodes;
    * a Q/DQ network needs the INT8 flag under weak typing (8.x refuses it otherwise), and is built
      with FP16 too, so that its float layers run in FP16 as they would strongly typed in fp16;
    * implicit INT8 (a calibrator) exists up to 10.x only;
    * DLA runs FP16 or calibrated INT8 of the fp32 network (TensorRT 8.x DLA cannot take Q/DQ, and a
      strongly typed network's float layers stay FP32, which DLA cannot run).
    """
    if requested not in PRECISIONS:
        raise EdgeSqueezeError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if int8_mode not in INT8_MODES:
        raise EdgeSqueezeError(f"int8 mode must be one of {', '.join(INT8_MODES)}, not {int8_mode!r}")
    weak_ok = trt_version < WEAK_TYPING_UNTIL
    strong = trt_version >= STRONG_TYPING_FROM
    here = f"TensorRT {_version_text(trt_version)}"
    if dla:
        if not weak_ok:
            raise EdgeSqueezeError(
                f"{here}: edge-squeeze builds DLA engines with TensorRT 8.5-10.x (JetPack 5 and 6); "
                "drop --dla-core to build for the GPU"
            )
        if source != "fp32":
            raise EdgeSqueezeError(
                "DLA engines are built from the fp32 model (model.onnx): DLA takes FP16 or calibrated INT8 "
                "of it, not a Q/DQ or fp16 ONNX file"
            )
        if requested == "fp32":
            raise EdgeSqueezeError("DLA runs FP16 or INT8, not FP32: use --precision fp16 or int8")
        if requested == "fp16":
            return BuildPlan("fp16", "none", False, True, False, "fp32", f"DLA FP16 ({here})")
        if int8_mode == "explicit":
            raise EdgeSqueezeError(
                "DLA cannot take explicit (Q/DQ) INT8: use --int8-mode implicit with --calib DIR"
            )
        return BuildPlan(
            "int8", "implicit", False, True, True, "fp32", f"DLA INT8, calibrated on the device ({here})"
        )
    if requested == "fp32":
        if source != "fp32":
            raise EdgeSqueezeError("an fp32 engine needs the fp32 model (model.onnx)")
        return BuildPlan("fp32", "none", strong, False, False, "fp32", f"fp32 ({here})")
    if requested == "fp16":
        if source == "qdq":
            raise EdgeSqueezeError(
                "an fp16 engine needs the fp32 model (model.onnx) or model.fp16.onnx, not a Q/DQ int8 model"
            )
        if source == "fp16":
            return BuildPlan(
                "fp16",
                "none",
                trt_version >= (10, 0),
                trt_version < (10, 0),
                False,
                "fp16",
                f"fp16 ONNX ({here})",
            )
        if strong and fp16_onnx:
            return BuildPlan(
                "fp16", "none", True, False, False, "fp16", f"{FP16_SIBLING}, strongly typed ({here})"
            )
        if weak_ok:
            reason = f"BuilderFlag.FP16 ({here})"
            if strong:
                reason += f"; deprecated since 10.12: re-export to get {FP16_SIBLING}"
            return BuildPlan("fp16", "none", False, True, False, "fp32", reason)
        raise EdgeSqueezeError(
            f"{here} builds fp16 engines only from an fp16 ONNX model, and {FP16_SIBLING} is not beside this "
            "model: re-export with edge-squeeze export (it writes one), or build-engine model.fp16.onnx"
        )
    # int8
    if source == "fp16":
        raise EdgeSqueezeError("INT8 engines come from model.int8.onnx (Q/DQ) or model.onnx with --calib DIR")
    if not has_fast_int8(compute_capability):
        sm = f"sm_{compute_capability[0]}{compute_capability[1]}"
        if source == "qdq":
            raise EdgeSqueezeError(
                f"this GPU ({sm}) has no fast INT8 path: build an fp16 engine from model.onnx instead"
            )
        fp16 = plan_build("fp16", trt_version, source, compute_capability, fp16_onnx=fp16_onnx)
        return dataclasses.replace(fp16, reason=f"INT8 is slow on {sm} (no fast INT8 path); building FP16")
    if source == "qdq":
        if int8_mode == "implicit":
            raise EdgeSqueezeError("implicit calibration needs the fp32 model (model.onnx), not a Q/DQ model")
        if strong:
            return BuildPlan("int8", "explicit", True, False, False, "qdq", f"Q/DQ, strongly typed ({here})")
        return BuildPlan(
            "int8",
            "explicit",
            False,
            True,
            True,
            "qdq",
            f"Q/DQ with INT8 + FP16 flags: float layers in FP16 ({here})",
        )
    if int8_mode == "explicit":
        raise EdgeSqueezeError(
            "explicit INT8 needs the Q/DQ model (model.int8.onnx from edge-squeeze export --int8)"
        )
    if not weak_ok:
        raise EdgeSqueezeError(
            f"{here} removed implicit INT8 calibration: build from the Q/DQ model (model.int8.onnx, made by "
            "edge-squeeze export --int8)"
        )
    return BuildPlan(
        "int8", "implicit", False, True, True, "fp32", f"implicit INT8 with a calibrator ({here})"
    )


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

    @classmethod
    def static(cls, batch: int) -> BatchProfile:
        return cls(batch, batch, batch)

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def shapes(self, chw: Sequence[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        c, h, w = chw
        return (self.min, c, h, w), (self.opt, c, h, w), (self.max, c, h, w)

    def to_dict(self) -> Dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def text(self) -> str:
        return f"{self.min},{self.opt},{self.max}"

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


def resolve_profile(text: Optional[str], dla: bool) -> BatchProfile:
    """The build's batch profile: as given, else 1,1,8 on the GPU and a static batch of 1 on DLA,
    which has no dynamic shapes (its profile needs min = opt = max, and runs that batch only)."""
    if text is None:
        return BatchProfile.static(1) if dla else BatchProfile()
    profile = BatchProfile.parse(text)
    if dla and not profile.is_static:
        raise EdgeSqueezeError(
            f"DLA does not support dynamic shapes: give a static --batch-profile N,N,N (not {text})"
        )
    return profile


def calibration_profile(feeder_batch: int) -> BatchProfile:
    """The profile TensorRT calibrates at. It calibrates at a profile's OPT shape (the calibration
    profile's MIN and MAX are overwritten by OPT: ``IBuilderConfig.set_calibration_profile``), so
    calibration gets its own static profile of exactly the feeder's batch: every image it hands over
    is used, and TensorRT never reads past the feeder's device buffer."""
    return BatchProfile.static(feeder_batch)


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
    model_sha256: str,
    device: DeviceIdentity,
    precision: str,
    profile: BatchProfile,
    dla_core: Optional[int],
    calibration: Optional[str] = None,
) -> str:
    """What a cached engine depends on; ``calibration`` names the calibration set and calibrator of
    an implicit-INT8 engine (None for the others, whose model file says everything)."""
    payload = json.dumps(
        {
            "model": model_sha256,
            "device": device.slug(),
            "precision": precision,
            "profile": profile.to_dict(),
            "dla": dla_core,
            "calibration": calibration,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _model_stem(onnx_path: Path) -> str:
    stem = onnx_path.name[: -len(".onnx")] if onnx_path.name.endswith(".onnx") else onnx_path.stem
    for tag in (".int8", ".fp16"):
        stem = stem.replace(tag, "")
    return stem


def engine_file_name(onnx_path: Path, precision: str, dla_core: Optional[int]) -> str:
    """``model.<precision>[.dla<N>].engine``: the DLA core an engine is bound to is in its name."""
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return f"{_model_stem(onnx_path)}.{precision}{dla}.engine"


def engine_cache_path(
    onnx_path: Path,
    model_sha256: str,
    device: DeviceIdentity,
    precision: str,
    profile: BatchProfile,
    dla_core: Optional[int] = None,
    calibration: Optional[str] = None,
) -> Path:
    """``model.<precision>[.dla<N>].<device>.<key>.engine`` next to the model (jetson-inference's convention)."""
    key = engine_cache_key(model_sha256, device, precision, profile, dla_core, calibration)
    name = engine_file_name(onnx_path, precision, dla_core)[: -len(".engine")]
    return onnx_path.with_name(f"{name}.{device.slug()}.{key}.engine")


def tensorrt_calibration_cache_path(onnx_path: Path, key: str, calibrator: str) -> Path:
    """Where an implicit calibrator's cache lives: keyed by model, calibration set and calibrator,
    so new weights or new photos never reuse old scales."""
    return onnx_path.with_name(f"{_model_stem(onnx_path)}.trt-{calibrator}-{key}.calib")


@dataclasses.dataclass(frozen=True)
class DlaPlacement:
    """Which layers of a network TensorRT can place on DLA (``IBuilderConfig.can_run_on_DLA``)."""

    on_dla: int
    total: int
    gpu_layers: Tuple[str, ...]

    def to_dict(self) -> Dict[str, Any]:
        return {"on_dla": self.on_dla, "total": self.total, "gpu_layers": list(self.gpu_layers)}

    def describe(self) -> str:
        text = f"{self.on_dla} of {self.total} layers on DLA"
        if self.gpu_layers:
            shown = ", ".join(self.gpu_layers[:5]) + (" ..." if len(self.gpu_layers) > 5 else "")
            text += f"; on the GPU (fallback): {shown}"
        return text


def dla_placement(layers: Sequence[Tuple[str, bool]], gpu_fallback: bool) -> DlaPlacement:
    """Summarise (layer name, can run on DLA) pairs; refuse a build that would put nothing on DLA, or
    that needs the GPU with fallback off."""
    gpu = tuple(name for name, ok in layers if not ok)
    placement = DlaPlacement(len(layers) - len(gpu), len(layers), gpu)
    if placement.on_dla == 0:
        raise EdgeSqueezeError("no layer of this network can run on DLA; build for the GPU (drop --dla-core)")
    if gpu and not gpu_fallback:
        raise EdgeSqueezeError(f"{len(gpu)} layers cannot run on DLA ({gpu[0]}, ...) and GPU fallback is off")
    return placement


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
    strongly_typed: bool = False
    source: str = ""  # the ONNX file TensorRT parsed
    dla_layers: Optional[Dict[str, Any]] = None
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
            "dla_layers": self.dla_layers,
            "onnx_sha256": self.onnx_sha256,
            "engine_sha256": self.engine_sha256,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "int8_mode": self.int8_mode,
            "strongly_typed": self.strongly_typed,
            "source": self.source,
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
                strongly_typed=bool(data.get("strongly_typed", False)),
                source=str(data.get("source", "")),
                dla_layers=data.get("dla_layers"),
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
        if any(b.shape != self._batches[0].shape for b in self._batches):
            raise EdgeSqueezeError("calibration batches must all have the same shape")
        self.nbytes = int(self._batches[0].astype(np.float32, copy=False).nbytes)
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
            try:
                data = self.cache_path.read_bytes()
            except OSError as exc:
                log.warning("ignoring unreadable TensorRT calibration cache %s (%s)", self.cache_path, exc)
                return None
            log.info("reusing TensorRT calibration cache %s", self.cache_path)
            return data
        return None

    def write_cache(self, data: bytes) -> None:
        if self.cache_path is not None:
            write_bytes_atomic(self.cache_path, bytes(data))


@dataclasses.dataclass
class BuildOptions:
    precision: str = "fp16"
    profile: Optional[BatchProfile] = None  # None: resolve_profile's default (1,1,8; static 1 on DLA)
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Optional[Path] = None
    dla_core: Optional[int] = None
    gpu_fallback: bool = True
    optimization_level: Optional[int] = None  # 0..5 where supported (TensorRT >= 8.6)
    int8_mode: str = "auto"  # auto | explicit | implicit
    calibrator: str = "entropy"  # entropy (IInt8EntropyCalibrator2) | minmax
    calib_dir: Optional[Path] = None
    calib_count: Optional[int] = None
    calib_batch: int = CALIBRATION_BATCH


def model_source_kind(model: Any, metadata: ArtifactMetadata) -> str:
    """ "qdq" for a Q/DQ model, "fp16" for an fp16 export, else "fp32"."""
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return "qdq"
    return "fp16" if metadata.precision == "fp16" else "fp32"


def fp16_sibling(onnx_path: Path, metadata: ArtifactMetadata) -> Optional[Path]:
    """``model.fp16.onnx`` beside an fp32 ``model.onnx``, if it is the same model's (same weights)."""
    from .onnx_export import load_onnx_model, metadata_of

    path = onnx_path.with_name(FP16_SIBLING)
    if path == onnx_path or not path.is_file():
        return None
    try:
        sibling = metadata_of(load_onnx_model(path), str(path))
    except EdgeSqueezeError as exc:
        log.warning("not using %s: %s", path, exc)
        return None
    if sibling.weights_sha256 != metadata.weights_sha256 or sibling.precision != "fp16":
        log.warning("%s is not the fp16 export of %s (other weights); not using it", path, onnx_path.name)
        return None
    return path


# --- TensorRT (type-checked against tensorrt-stubs; not run on a GPU) ---------------------------


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
    """TensorRT version and GPU 0, via pycuda."""
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


def make_logger(trt_mod: Any) -> Any:
    """A TensorRT ``ILogger`` that forwards to ours, so TensorRT's messages show as log lines."""
    severity = trt_mod.ILogger.Severity

    class Forwarder(trt_mod.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt_mod.ILogger.__init__(self)

        def log(self, level: Any, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                log.error("TensorRT: %s", msg)
            elif level == severity.WARNING:
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


def check_engine_source(metadata: ArtifactMetadata, onnx_path: Path) -> None:
    """TensorRT builds from the fp32, fp16 or TensorRT INT8 model, never ONNX Runtime's CPU INT8 file,
    whose uint8 pixel input and ``reduce_range`` weights are for ONNX Runtime on x86."""
    if metadata.preprocess.pixel_input:
        raise EdgeSqueezeError(
            f"{onnx_path.name} is ONNX Runtime's CPU flavour (uint8 pixel input); build TensorRT "
            "engines from model.int8.onnx or model.onnx"
        )


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
    from edge_squeeze.runtimes.cuda_buffers import primary_context

    from .onnx_export import load_onnx_model, metadata_of

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EdgeSqueezeError(f"ONNX model not found: {onnx_path}")
    trt_mod = import_tensorrt()
    model = load_onnx_model(onnx_path)
    metadata = metadata_of(model, str(onnx_path))
    check_engine_source(metadata, onnx_path)
    kind = model_source_kind(model, metadata)
    dla = options.dla_core is not None
    profile = options.profile or resolve_profile(None, dla)
    if dla and not profile.is_static:
        raise EdgeSqueezeError(
            f"DLA does not support dynamic shapes: give a static batch profile, not {profile.text()}"
        )
    with primary_context():  # pycuda's calibration buffer needs a current context: TensorRT's own
        device = current_device()
        sibling = fp16_sibling(onnx_path, metadata) if kind == "fp32" else None
        plan = plan_build(
            options.precision,
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


def iter_precisions(text: str) -> Iterator[str]:
    """``"fp32,fp16,int8"`` -> each precision, checked."""
    for item in text.split(","):
        item = item.strip()
        if item not in PRECISIONS:
            raise EdgeSqueezeError(f"precision must be one of {', '.join(PRECISIONS)}, not {item!r}")
        yield item
