"""ONNX Runtime backend: CPU by default; CUDA or TensorRT execution providers when installed and asked for."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edge_squeeze.errors import EdgeSqueezeError, require
from edge_squeeze.formats import INT8_FILES
from edge_squeeze.metadata import ArtifactMetadata, read_onnx_metadata_props
from edge_squeeze.options import IntRange, flag, internal, validate
from edge_squeeze.preprocess import PreprocessSpec

from .base import BackendInfo, check_input

log = logging.getLogger("edge_squeeze")

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclasses.dataclass
class OrtOptions:
    """Options as a plain object, like ``onnxruntime.SessionOptions``."""

    providers: Sequence[str] = internal(
        ("cpu",), why="short names from PROVIDERS or ONNX Runtime's own; the CLI's --backend picks them"
    )
    threads: int = flag(
        "--threads",
        0,
        type=IntRange(0),
        help="CPU threads (0: the runtime's default, one per physical core; at most the cores)",
    )
    # an INT8 export has two files: the Q/DQ file and the CPU file (edge_squeeze.formats); "auto" times
    # both on x86 and runs the faster, runs the CPU file on ARM (the one ONNX Runtime computes with
    # integer kernels, exactly there); "qdq" or "cpu" force one
    int8_file: str = flag(
        "--int8-file",
        "auto",
        choices=INT8_FILES,
        help="ONNX Runtime on a CPU: which INT8 file of an export runs (auto: the faster on x86, the CPU file elsewhere)",
    )

    def __post_init__(self) -> None:
        validate(self)


def available_providers() -> List[str]:
    ort = require("onnxruntime", "the ONNX Runtime backend")
    return list(ort.get_available_providers())


def cap_threads(threads: int) -> int:
    """``threads``, at most this machine's cores (more only add contention, many times slower), with
    one warning when capped."""
    cores = os.cpu_count() or 1
    if threads > cores:
        log.warning("%d threads asked for, %d cores here: using %d", threads, cores, cores)
        return cores
    return int(threads)


def _resolve_providers(requested: Sequence[str]) -> List[str]:
    available = available_providers()
    resolved = []
    for name in requested:
        full = PROVIDERS.get(name.lower(), name)
        if full not in available:
            hint = (
                "pip install onnxruntime-gpu" if full != "CPUExecutionProvider" else "reinstall onnxruntime"
            )
            raise EdgeSqueezeError(
                f"ONNX Runtime provider {full} is not available here (available: {', '.join(available)}); {hint}"
            )
        resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")  # ONNX Runtime's own fallback for unsupported nodes
    return resolved


def open_session(
    path: Union[str, os.PathLike[str]],
    options: OrtOptions,
    exact_qdq: bool = False,
    model: Optional[bytes] = None,
) -> Any:
    """An ``InferenceSession`` on the file at ``path`` (or on ``model``, serialized bytes made from
    it), with one clear error for a missing, truncated or foreign file.

    ``exact_qdq`` keeps Q/DQ nodes as written instead of fusing them into integer kernels. For the
    int8-symmetric Q/DQ file on x86 CPUs without VNNI this is needed for correct results:
    ONNX Runtime's fused u8 x s8 AVX2 kernels saturate their int16 pair sums with full-range int8
    weights (docs/int8.md, section 1, has the measurement).
    """
    ort = require("onnxruntime", "the ONNX Runtime backend")
    path = Path(path)
    if model is None and not path.is_file():
        raise EdgeSqueezeError(
            f"model not found: {path} (check the path, or export one with edge-squeeze export)"
        )
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if options.threads:
        so.intra_op_num_threads = cap_threads(options.threads)
    so.log_severity_level = 3
    if exact_qdq:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    try:
        return ort.InferenceSession(
            model if model is not None else str(path),
            sess_options=so,
            providers=_resolve_providers(options.providers),
        )
    except EdgeSqueezeError:
        raise
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise EdgeSqueezeError(
            f"cannot load ONNX model {path}: truncated, corrupt or not an ONNX file ({first}); re-export it"
        ) from exc


def read_metadata(session: Any, source: str) -> ArtifactMetadata:
    props = dict(session.get_modelmeta().custom_metadata_map)
    out_shape = session.get_outputs()[0].shape
    classes = out_shape[-1] if isinstance(out_shape[-1], int) else 1000
    return read_onnx_metadata_props(props, source, classes)


class OnnxRuntimeBackend:
    """One ``InferenceSession``; ``infer`` is safe to call from several threads (ONNX Runtime's ``run`` is)."""

    def __init__(self, session: Any, metadata: ArtifactMetadata, path: str) -> None:
        self.session = session
        self.metadata = metadata
        inp = session.get_inputs()[0]
        spec = metadata.preprocess
        want = "tensor(uint8)" if spec.pixel_input else "tensor(float)"
        if inp.type != want:
            raise EdgeSqueezeError(
                f"{path}: input {inp.name} is {inp.type} but its metadata says {spec.input_format}; "
                "re-export it"
            )
        shape = inp.shape
        if len(shape) != 4:
            raise EdgeSqueezeError(f"{path}: input {inp.name} has shape {shape}; expected {spec.layout}")
        batch = shape[0] if isinstance(shape[0], int) else None
        dims = tuple(int(d) if isinstance(d, int) else 0 for d in shape[1:])
        if 0 in dims:  # dynamic spatial dims: take them from the preprocessing spec
            dims = metadata.preprocess.input_shape
        self._output_name = session.get_outputs()[0].name
        provider = session.get_providers()[0]
        self.info = BackendInfo(
            name="onnxruntime",
            precision=metadata.precision,
            device={"CPUExecutionProvider": "cpu"}.get(provider, provider),
            input_name=inp.name,
            input_shape=(batch, dims[0], dims[1], dims[2]),
            model_path=path,
            input_dtype=np.dtype(spec.dtype).name,
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_input(batch, self.info)
        (logits,) = self.session.run([self._output_name], {self.info.input_name: batch})
        return np.asarray(logits, dtype=np.float32).reshape(batch.shape[0], -1)

    def last_stage_ms(self) -> Dict[str, float]:
        """ONNX Runtime reports no stages of its own; ``bench`` times the call."""
        return {}

    def close(self) -> None:
        self.session = None

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.info.model_path}, {self.info.precision}, {self.info.device})"


def time_session(session: Any, spec: PreprocessSpec, runs: int = 20) -> float:
    """Median seconds per batch-1 ``run`` on the input ``spec`` makes, after warm-up; used to pick an
    INT8 file."""
    rng = np.random.default_rng(0)
    shape = (1, *spec.input_shape)
    if spec.pixel_input:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
    input_name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {input_name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {input_name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def needs_exact_qdq(metadata: ArtifactMetadata) -> bool:
    return bool(metadata.quantization) and metadata.quantization.get("flavour") == "s8"  # type: ignore[union-attr]


def load(path: Union[str, os.PathLike[str]], options: Optional[OrtOptions] = None) -> OnnxRuntimeBackend:
    """One ONNX file in one ``InferenceSession``. The Q/DQ INT8 file runs with exact Q/DQ arithmetic on
    the CPU (:func:`open_session`); which INT8 file of an export to run is :mod:`.select`'s choice."""
    options = options or OrtOptions()
    path = Path(path)
    session = open_session(path, options)
    metadata = read_metadata(session, str(path))
    if session.get_providers()[0] == "CPUExecutionProvider" and needs_exact_qdq(metadata):
        session = open_session(path, options, exact_qdq=True)
    return OnnxRuntimeBackend(session, metadata, str(path))


def load_compressed(
    path: Union[str, os.PathLike[str]], options: Optional[OrtOptions] = None
) -> OnnxRuntimeBackend:
    """A compressed model (``.esqz``, or the paper's ``.net``) without torch: its weights decompressed
    with numpy into the fp32 graph :func:`edge_squeeze.onnx_graph.squeezenet_graph` builds, in memory."""
    from edge_squeeze.compress.esqz import read_model_file
    from edge_squeeze.config import SqueezeNetConfig
    from edge_squeeze.fileio import sha256_file
    from edge_squeeze.onnx_graph import squeezenet_graph

    options = options or OrtOptions()
    path = Path(path)
    compressed = read_model_file(path)
    config = SqueezeNetConfig.from_dict(compressed.config)
    metadata = ArtifactMetadata(
        arch=config.arch,
        labels=compressed.labels,
        preprocess=compressed.preprocess,
        weights_sha256=sha256_file(path),
        model_config=compressed.config,
    )
    graph = squeezenet_graph(config, compressed.state_dict).SerializeToString()
    return OnnxRuntimeBackend(open_session(path, options, model=graph), metadata, str(path))
