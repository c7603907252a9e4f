"""What travels inside every artifact so that the file alone is enough to classify correctly.

In an ONNX model it is one JSON value under the ``edge_squeeze`` key of ``metadata_props``; beside a
TensorRT engine it is the sidecar JSON ``model.<precision>.engine.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ._version import __version__
from .errors import EdgeSqueezeError, require
from .labels import Labels
from .preprocess import PreprocessSpec

METADATA_KEY = "edge_squeeze"
FORMAT_VERSION = 1

log = logging.getLogger("edge_squeeze")


@dataclasses.dataclass
class ArtifactMetadata:
    arch: str
    labels: Labels
    preprocess: PreprocessSpec
    precision: str = "fp32"  # fp32 | fp16 | int8
    weights_sha256: str = ""
    model_config: Optional[Dict[str, Any]] = None
    # int8 only: "qdq-s8" (int8 symmetric activations: the Q/DQ file) or "qdq-u8-rr"
    # (uint8 activations, reduce_range: fast on x86 CPUs without VNNI)
    quantization: Optional[Dict[str, Any]] = None
    # sibling files of the same model, by role (e.g. {"cpu": "model.int8.cpu.onnx"})
    variants: Dict[str, str] = dataclasses.field(default_factory=dict)
    edge_squeeze_version: str = __version__
    format_version: int = FORMAT_VERSION
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format_version": self.format_version,
            "edge_squeeze_version": self.edge_squeeze_version,
            "arch": self.arch,
            "precision": self.precision,
            "weights_sha256": self.weights_sha256,
            "model_config": self.model_config,
            "labels": self.labels.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "quantization": self.quantization,
            "variants": dict(self.variants),
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> ArtifactMetadata:
        try:
            version = int(data.get("format_version", 1))
            if version > FORMAT_VERSION:
                raise EdgeSqueezeError(
                    f"artifact metadata format {version} is newer than this edge-squeeze understands "
                    f"({FORMAT_VERSION}); upgrade edge-squeeze"
                )
            return cls(
                arch=str(data["arch"]),
                labels=Labels.from_dict(data["labels"]),
                preprocess=PreprocessSpec.from_dict(data["preprocess"]),
                precision=str(data.get("precision", "fp32")),
                weights_sha256=str(data.get("weights_sha256", "")),
                model_config=data.get("model_config"),
                quantization=data.get("quantization"),
                variants=dict(data.get("variants") or {}),
                edge_squeeze_version=str(data.get("edge_squeeze_version", "")),
                format_version=version,
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeSqueezeError(f"artifact metadata is malformed ({exc}); re-export the model") from exc

    @classmethod
    def from_json(cls, text: str) -> ArtifactMetadata:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise EdgeSqueezeError(
                f"artifact metadata is not valid JSON ({exc}); re-export the model"
            ) from exc

    @classmethod
    def defaults(cls, num_classes: int) -> ArtifactMetadata:
        """For a model exported elsewhere: ImageNet preprocessing and numbered (or ImageNet) labels."""
        from .labels import imagenet_labels

        labels = imagenet_labels() if num_classes == 1000 else Labels.numbered(num_classes)
        return cls(arch="unknown", labels=labels, preprocess=PreprocessSpec.imagenet())


def read_onnx_metadata_props(props: Dict[str, str], source: str, num_classes: int) -> ArtifactMetadata:
    """Metadata from an ONNX model's ``metadata_props``; defaults with one warning when absent."""
    text = props.get(METADATA_KEY)
    if text is None:
        log.warning(
            "%s has no edge-squeeze metadata: assuming ImageNet preprocessing (256 -> 224, RGB, torchvision "
            "mean/std) and %s labels; export it with edge-squeeze to carry its own",
            source,
            "ImageNet" if num_classes == 1000 else "numbered",
        )
        return ArtifactMetadata.defaults(num_classes)
    return ArtifactMetadata.from_json(text)


def set_metadata(model: Any, metadata: ArtifactMetadata) -> None:
    """Store the metadata in an ``onnx.ModelProto``'s ``metadata_props`` (replacing any earlier value)."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = metadata.to_json()
    model.producer_name = "edge-squeeze"
    model.producer_version = metadata.edge_squeeze_version


def load_onnx_model(path: Union[str, os.PathLike[str]]) -> Any:
    """An ``onnx.ModelProto`` from ``path``, with one clear error for a missing or unreadable file."""
    onnx = require("onnx", "reading ONNX models")
    path = Path(path)
    if not path.is_file():
        raise EdgeSqueezeError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise EdgeSqueezeError(
            f"cannot read ONNX model {path}: truncated or not an ONNX file; re-export it"
        ) from exc


def metadata_of(model: Any, source: str = "model", num_classes: Optional[int] = None) -> ArtifactMetadata:
    """The metadata an ``onnx.ModelProto`` carries (ImageNet defaults, with a warning, when none)."""
    props = {p.key: p.value for p in model.metadata_props}
    return read_onnx_metadata_props(props, source, num_classes or 1000)
