"""How a TensorRT engine is built, decided without TensorRT: the build plan per TensorRT version and
GPU, batch profiles (calibration, DLA), cache keys and file names, the DLA placement summary and the
calibrator's batch feeding. Plain functions, tested on the CPU; :mod:`.tensorrt_build` carries them
out with TensorRT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.fileio import write_bytes_atomic
from edge_squeeze.formats import FP16
from edge_squeeze.metadata import ArtifactMetadata
from edge_squeeze.runtimes.engine_sidecar import PRECISIONS, BatchProfile, DeviceIdentity
from edge_squeeze.runtimes.tensorrt_options import (  # noqa: F401  (the plan's vocabulary, re-exported)
    CALIBRATION_BATCH,
    CALIBRATORS,
    DEFAULT_WORKSPACE_MB,
    INT8_MODES,
    BuildOptions,
)

log = logging.getLogger("edge_squeeze")

# TensorRT deprecated the weak-typing precision flags in 10.12 and removed them in 11.0
STRONG_TYPING_FROM = (10, 12)
WEAK_TYPING_UNTIL = (11, 0)  # exclusive
FP16_SIBLING = FP16


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


def model_source_kind(model: Any, metadata: ArtifactMetadata) -> str:
    """ "qdq" for a Q/DQ model, "fp16" for an fp16 export, else "fp32"."""
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return "qdq"
    return "fp16" if metadata.precision == "fp16" else "fp32"


def fp16_sibling(onnx_path: Path, metadata: ArtifactMetadata) -> Optional[Path]:
    """``model.fp16.onnx`` beside an fp32 ``model.onnx``, if it is the same model's (same weights)."""
    from edge_squeeze.metadata import load_onnx_model, metadata_of

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


def check_engine_source(metadata: ArtifactMetadata, onnx_path: Path) -> None:
    """TensorRT builds from the fp32, fp16 or TensorRT INT8 model, never ONNX Runtime's CPU INT8 file,
    whose uint8 pixel input and ``reduce_range`` weights are for ONNX Runtime on x86."""
    if metadata.preprocess.pixel_input:
        raise EdgeSqueezeError(
            f"{onnx_path.name} is ONNX Runtime's CPU file (uint8 pixel input); build TensorRT "
            "engines from model.int8.onnx or model.onnx"
        )


def iter_precisions(text: str) -> Iterator[str]:
    """``"fp32,fp16,int8"`` -> each precision, checked."""
    for item in text.split(","):
        item = item.strip()
        if item not in PRECISIONS:
            raise EdgeSqueezeError(f"precision must be one of {', '.join(PRECISIONS)}, not {item!r}")
        yield item
