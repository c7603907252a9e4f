"""edge-squeeze: SqueezeNet from PyTorch to the edge.

from edge_squeeze import Classifier
clf = Classifier("out/model.int8.onnx")
print(clf.predict("dog.jpg"))
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .errors import EdgeSqueezeError
from .labels import Labels
from .preprocess import PreprocessSpec, preprocess

__all__ = [
    "Classifier",
    "EdgeSqueezeError",
    "Labels",
    "Prediction",
    "PreprocessSpec",
    "__version__",
    "preprocess",
]


def __getattr__(name: str) -> Any:
    # Classifier pulls in onnxruntime; importing the package for preprocessing alone stays light
    if name in ("Classifier", "Prediction"):
        from . import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'edge_squeeze' has no attribute {name!r}")
