"""What an export made and measured: :class:`ExportReport`, written as ``export-report.json``."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from edge_squeeze.results import Result


@dataclasses.dataclass(frozen=True)
class ExportedFile(Result):
    path: str  # file name inside the export folder (edge_squeeze.formats)
    bytes: int


@dataclasses.dataclass(frozen=True)
class Int8Summary(Result):
    """The INT8 files' calibration, as the CLI prints it."""

    calibration_images: int
    qdq_method: str  # calibration method of the Q/DQ file
    cpu_method: str  # ... and of the CPU file
    float_nodes: List[str]  # layers the Q/DQ file keeps in float
    agreement: float  # the Q/DQ file's top-1 agreement with fp32 on the calibration images
    sensitivity: List[Dict[str, Any]]  # per-layer table (--report), most sensitive first

    @classmethod
    def from_dict(cls, int8: Dict[str, Any]) -> Int8Summary:
        return cls(
            calibration_images=int(int8["calibration"]["images"]),
            qdq_method=str(int8["qdq_file"]["calibration_method"]),
            cpu_method=str(int8.get("cpu_file", {}).get("calibration_method", "")),
            float_nodes=list(int8["float_nodes"]),
            agreement=float(int8["steps"][-1]["top1_agreement"]),
            sensitivity=list(int8.get("sensitivity", [])),
        )


@dataclasses.dataclass(frozen=True)
class ExportReport(Result):
    """An export's files, its INT8 summary and accuracy rows (``eval``: model key -> top1, top5,
    agreement_with_fp32, ...); ``details`` is the whole report as ``export-report.json`` holds it."""

    files: Dict[str, ExportedFile]
    int8: Optional[Int8Summary]
    eval: Dict[str, Dict[str, Any]]
    details: Dict[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def from_dict(cls, report: Dict[str, Any]) -> ExportReport:
        rows = {k: v for k, v in report.get("eval", {}).items() if isinstance(v, dict)}
        return cls(
            files={k: ExportedFile(v["path"], int(v["bytes"])) for k, v in report.get("files", {}).items()},
            int8=Int8Summary.from_dict(report["int8"]) if "int8" in report else None,
            eval=rows,
            details=report,
        )

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.details)
