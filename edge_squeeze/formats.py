"""The files an export writes, in one table that the exporter, the engine builder, the backend
selector, selftest and the CLI read (names are never typed in anywhere else).

Each row says the file's name, the precision inside it, the input it takes and the engine it is for.
``docs/int8.md`` says why there are two INT8 files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Tuple, Union


@dataclasses.dataclass(frozen=True)
class ExportFile:
    key: str  # the export report's key for the file
    name: str  # its file name in the export folder
    precision: str  # what is inside: fp32 | fp16 | int8
    input_format: str  # what it takes: "nchw-float32", or "pixels" / "nchw-float32" for the CPU file
    engine: str  # what it is for
    needs: str  # the export flag that writes it ("" : always)
    note: str = ""  # written into the file's ONNX doc_string (Netron and onnx.load show it)


EXPORT_FILES: Tuple[ExportFile, ...] = (
    ExportFile("fp32", "model.onnx", "fp32", "nchw-float32", "any: ONNX Runtime, TensorRT, DeepStream", ""),
    ExportFile(
        "fp16", "model.fp16.onnx", "fp16", "nchw-float32", "TensorRT fp16 engines (strong typing)", ""
    ),
    ExportFile(
        "int8",
        "model.int8.onnx",
        "int8",
        "nchw-float32",
        "TensorRT INT8 engines (Q/DQ)",
        "--int8",
        "edge-squeeze INT8 Q/DQ file for TensorRT: int8 symmetric activations, full-range int8 "
        "per-channel weights. Engines that run it with fused u8 x s8 kernels on x86 CPUs without VNNI "
        "(ONNX Runtime's default session, OpenVINO) saturate and lose accuracy: on those use "
        "model.int8.cpu.onnx, or compute this file's Q/DQ exactly (edge-squeeze does).",
    ),
    ExportFile(
        "int8_cpu",
        "model.int8.cpu.onnx",
        "int8",
        "pixels or nchw-float32 (its metadata's input_format)",
        "ONNX Runtime on CPUs (integer kernels)",
        "--int8",
        "edge-squeeze INT8 file for CPU engines (ONNX Runtime): uint8 activations, int8 weights with "
        "the first Conv's at 7 bits. Not for TensorRT: build engines from model.int8.onnx.",
    ),
)
FILES: Dict[str, ExportFile] = {f.key: f for f in EXPORT_FILES}
FILE_NAMED: Dict[str, ExportFile] = {f.name: f for f in EXPORT_FILES}
FP32 = FILES["fp32"].name
FP16 = FILES["fp16"].name
INT8_QDQ = FILES["int8"].name
INT8_CPU = FILES["int8_cpu"].name
TRT_CALIB_CACHE = "model.calib.cache"  # the INT8 ranges as a TensorRT calibration cache
REPORT = "export-report.json"
# which INT8 file of an export runs on ONNX Runtime's CPU provider: auto, the Q/DQ file or the CPU file
INT8_FILES = ("auto", "qdq", "cpu")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def is_qdq_file(path: Union[str, Path]) -> bool:
    """Whether ``path`` is named as an export's Q/DQ INT8 file (``*.int8.onnx``, not the CPU file)."""
    name = Path(path).name
    return name.endswith(".int8.onnx") and not name.endswith(".int8.cpu.onnx")


def is_int8_file(path: Union[str, Path]) -> bool:
    """Either INT8 file of an export, by name."""
    return Path(path).name.endswith((".int8.onnx", ".int8.cpu.onnx"))
