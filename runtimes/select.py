"""Which backend runs a model file here, and which of an export's INT8 files it runs.

``backend="auto"`` tries, in order: a TensorRT engine file; TensorRT from an ONNX model (built once
by an engine builder the caller passes, ``edge_squeeze.export.tensorrt_build.cached_engine``:
this package never imports the builder); ONNX Runtime with CUDA; ONNX Runtime on the CPU. An
optional backend that cannot load here (not installed, no GPU, a failed build, any error) is
skipped with one logged reason.

On ONNX Runtime's CPU provider an INT8 export has two files: the Q/DQ file (``model.int8.onnx``)
and the CPU file (``model.int8.cpu.onnx``, named in the Q/DQ file's metadata). ``int8_file="auto"``
on an x86 CPU times both at batch 1 and runs the faster (measured once per process); on any other
CPU (a Jetson's aarch64) it runs the CPU file without timing. ONNX Runtime runs only the CPU file on
integer kernels (its uint8 activations let every Conv -> ReLU -> Quantize fuse; the Q/DQ file's
symmetric int8 ones keep the ReLU between them, so most of its Convs run in float; how many, per
ONNX Runtime version, is in docs/int8.md), and ARM's kernels widen every product, so there the CPU
file is also computed exactly (docs/int8.md, "Which file goes to which engine").
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
from pathlib import Path
from typing import Dict, Optional, Set, Tuple, Union

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.formats import INT8_FILES
from edge_squeeze.metadata import ArtifactMetadata

from . import onnxruntime_backend as ortb
from . import tensorrt_backend as trtb
from .base import Backend
from .onnxruntime_backend import OrtOptions
from .tensorrt_backend import EngineBuilder, TensorRTOptions
from .torch_backend import TorchOptions

log = logging.getLogger("edge_squeeze")

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cuda", "pytorch")
TORCH_SUFFIXES = (".pt", ".pth")  # training checkpoints and state dicts: PyTorch only
COMPRESSED_SUFFIXES = (".esqz", ".net")  # ONNX Runtime on the decompressed graph, or PyTorch
_LOGGED_FALLBACKS: Set[str] = set()
_INT8_FILE_CHOICE: Dict[Tuple[str, str, int], str] = {}


@dataclasses.dataclass
class BackendOptions:
    """Each backend's own options; only the chosen backend's are used."""

    tensorrt: TensorRTOptions = dataclasses.field(default_factory=TensorRTOptions)
    onnxruntime: OrtOptions = dataclasses.field(default_factory=OrtOptions)
    pytorch: TorchOptions = dataclasses.field(default_factory=TorchOptions)


def _log_fallback_once(message: str) -> None:
    if message not in _LOGGED_FALLBACKS:
        _LOGGED_FALLBACKS.add(message)
        log.info(message)


def load_backend(
    path: Union[str, os.PathLike[str]],
    backend: str = "auto",
    options: Optional[BackendOptions] = None,
    engine_builder: Optional[EngineBuilder] = None,
) -> Backend:
    """Open ``path`` with the named backend (``BACKENDS``), or the best one here for ``"auto"``."""
    path = Path(path)
    options = options or BackendOptions()
    if backend not in BACKENDS:
        raise EdgeSqueezeError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if not path.exists():
        raise EdgeSqueezeError(
            f"model not found: {path} (check the path, or export one with edge-squeeze export)"
        )
    if backend == "pytorch" or (path.suffix in TORCH_SUFFIXES and backend == "auto"):
        from . import torch_backend

        return torch_backend.load(path, options.pytorch)
    if path.suffix in COMPRESSED_SUFFIXES:
        if backend not in ("auto", "onnxruntime"):
            raise EdgeSqueezeError(
                f"{path.name} runs on ONNX Runtime or PyTorch (backend 'auto', 'onnxruntime' or 'pytorch')"
            )
        return ortb.load_compressed(path, options.onnxruntime)
    if path.suffix in trtb.ENGINE_SUFFIXES or backend == "tensorrt":
        return trtb.load(path, options.tensorrt, engine_builder)
    if backend == "auto":
        reason = trtb.unavailable_reason()
        if reason is None:
            try:
                return trtb.load(path, options.tensorrt, engine_builder)
            except Exception as exc:  # any failure of the optional backend falls back, with its reason
                _log_fallback_once(f"TensorRT not used for {path.name}: {exc}")
        else:
            _log_fallback_once(f"TensorRT not used: {reason}")
    ort_options = options.onnxruntime
    if backend in ("auto", "onnxruntime-cuda"):
        if "CUDAExecutionProvider" in ortb.available_providers():
            return load_onnxruntime(path, dataclasses.replace(ort_options, providers=("cuda",)))
        if backend == "onnxruntime-cuda":
            raise EdgeSqueezeError(
                "ONNX Runtime's CUDA provider is not installed: pip install onnxruntime-gpu"
            )
        _log_fallback_once("ONNX Runtime CUDA not used: onnxruntime-gpu is not installed; running on the CPU")
    return load_onnxruntime(path, ort_options)


def load_onnxruntime(path: Path, options: OrtOptions) -> ortb.OnnxRuntimeBackend:
    """ONNX Runtime on ``path``, or, for the Q/DQ file of an INT8 export on a CPU, on whichever of
    its two INT8 files ``options.int8_file`` picks."""
    if options.int8_file not in INT8_FILES:
        raise EdgeSqueezeError(f"int8_file must be one of {', '.join(INT8_FILES)}, not {options.int8_file!r}")
    qdq = ortb.load(path, options)
    sibling = qdq.metadata.variants.get("cpu")
    if not sibling or qdq.info.device != "cpu" or options.int8_file == "qdq":
        return qdq
    cpu_path = path.with_name(sibling)
    if not cpu_path.is_file():
        log.warning("%s names a CPU INT8 file %s that is missing; using the Q/DQ file", path, cpu_path.name)
        return qdq
    cpu = ortb.load(cpu_path, options)
    mismatch = sibling_mismatch(qdq.metadata, cpu.metadata)
    if mismatch:
        log.warning(
            "%s is not %s's CPU INT8 file (%s); using the Q/DQ file", cpu_path.name, path.name, mismatch
        )
        cpu.close()
        return qdq
    if (
        options.int8_file == "auto"
        and int8_pair_sums_saturate()
        and _faster_int8_file(qdq, cpu, options) == "qdq"
    ):
        cpu.close()
        return qdq
    qdq.close()
    return cpu


def sibling_mismatch(qdq: ArtifactMetadata, cpu: ArtifactMetadata) -> Optional[str]:
    """Why a CPU INT8 file is not from the same export as the Q/DQ file naming it (other weights, or
    another calibration), or None: a stale or foreign file beside it would otherwise answer with its
    own weights and labels."""
    if qdq.weights_sha256 != cpu.weights_sha256:
        return "made from other weights"
    keys = [(m.quantization or {}).get("calibration_key") for m in (qdq, cpu)]
    if keys[0] != keys[1]:
        return "calibrated separately"
    if qdq.labels != cpu.labels:
        return "other labels"
    return None


def int8_pair_sums_saturate(machine: Optional[str] = None) -> bool:
    """Whether ONNX Runtime's CPU integer kernels on ``machine`` (default: this one) may saturate on
    the Q/DQ file: x86 (AVX2's u8 x s8 instruction sums pairs of products in 16 bits; the CPU file
    exists for it). ARM's kernels (NEON widening multiply-accumulate, UDOT, UMMLA) sum in 32 bits."""
    name = (machine if machine is not None else platform.machine()).lower()
    return name in ("x86_64", "amd64", "x86", "i386", "i686")


def _faster_int8_file(qdq: ortb.OnnxRuntimeBackend, cpu: ortb.OnnxRuntimeBackend, options: OrtOptions) -> str:
    """ "qdq" or "cpu": which file runs batch 1 faster on this machine (timed once per process)."""
    key = (
        str(Path(qdq.info.model_path).resolve()),
        str(Path(cpu.info.model_path).resolve()),
        int(options.threads),
    )
    if key not in _INT8_FILE_CHOICE:
        t_qdq = ortb.time_session(qdq.session, qdq.metadata.preprocess)
        t_cpu = ortb.time_session(cpu.session, cpu.metadata.preprocess)
        _INT8_FILE_CHOICE[key] = "cpu" if t_cpu < t_qdq else "qdq"
        log.info(
            "INT8 files timed here at batch 1: Q/DQ %.2f ms, CPU %.2f ms; running %s",
            t_qdq * 1e3,
            t_cpu * 1e3,
            Path(cpu.info.model_path if _INT8_FILE_CHOICE[key] == "cpu" else qdq.info.model_path).name,
        )
    return _INT8_FILE_CHOICE[key]


__all__ = [
    "BACKENDS",
    "INT8_FILES",
    "BackendOptions",
    "int8_pair_sums_saturate",
    "load_backend",
    "load_onnxruntime",
]
