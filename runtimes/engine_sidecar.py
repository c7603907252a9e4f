"""What describes a TensorRT engine file: its sidecar JSON (``model.<precision>.engine.json``), the
device and TensorRT version a plan is tied to, and its batch profile.

Plain data, no TensorRT: the runtime reads sidecars to trust and use a plan, the builder
(``edge_squeeze.export.tensorrt_build``) writes them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.metadata import ArtifactMetadata

PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_FORMAT = 1


def parse_trt_version(version: str) -> Tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise EdgeSqueezeError(f"cannot parse TensorRT version {version!r}") from exc


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


@dataclasses.dataclass(frozen=True)
class DeviceIdentity:
    """What an engine is tied to: TensorRT version and the GPU it was tuned on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: Tuple[int, int]

    def slug(self) -> str:
        name = "".join(ch if ch.isalnum() else "-" for ch in self.gpu_name).strip("-").lower()
        return f"trt{self.tensorrt_version}-{name}-sm{self.compute_capability[0]}{self.compute_capability[1]}"


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
