"""``Classifier``: an artifact in, labelled predictions out, on whatever backend this machine has.

    from edge_squeeze import Classifier
    clf = Classifier("out/model.int8.onnx")      # backend="auto"
    result = clf.predict("samoyed.jpg")          # or a BGR frame from cv2.VideoCapture
    print(result.label, result.score)

Arrays are **BGR** by default (as OpenCV decodes files and delivers camera frames); pass
``input_order="RGB"`` for arrays from PIL or imageio.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import EdgeSqueezeError
from .metadata import ArtifactMetadata
from .preprocess import ImageInput, preprocess
from .runtimes import select
from .runtimes.base import Backend, BackendInfo
from .runtimes.onnxruntime_backend import OrtOptions
from .runtimes.select import BackendOptions
from .runtimes.tensorrt_options import BuildOptions, TensorRTOptions
from .runtimes.torch_backend import TorchOptions

log = logging.getLogger("edge_squeeze")


@dataclasses.dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float
    topk: List[Tuple[int, str, float]]  # (index, label, probability), best first

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "label": self.label,
            "score": self.score,
            "topk": [{"index": i, "label": name, "score": s} for i, name, s in self.topk],
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def build_engine_from_onnx(path: Path, options: BuildOptions) -> Path:
    """The TensorRT backend's engine builder: an engine for an ONNX model, built once on this device
    and cached beside it (imports the builder only when TensorRT is asked to run an ONNX file)."""
    from .export.tensorrt_build import cached_engine

    return cached_engine(path, options)


def load_backend(
    path: Union[str, os.PathLike[str]], backend: str = "auto", options: Optional[BackendOptions] = None
) -> Backend:
    """:func:`edge_squeeze.runtimes.select.load_backend` with the engine builder plugged in."""
    return select.load_backend(path, backend, options, build_engine_from_onnx)


def backend_options(
    precision: Optional[str] = None,
    threads: Optional[int] = None,
    cuda_graph: Optional[bool] = None,
    int8_file: Optional[str] = None,
    tensorrt: Optional[TensorRTOptions] = None,
    onnxruntime: Optional[OrtOptions] = None,
    pytorch: Optional[TorchOptions] = None,
) -> BackendOptions:
    """Each backend's options from :class:`Classifier`'s shortcut arguments or its options objects;
    a setting given both ways is refused (one line naming it), never silently dropped."""
    shortcuts = (
        ("precision", precision, "tensorrt", tensorrt),
        ("cuda_graph", cuda_graph, "tensorrt", tensorrt),
        ("threads", threads, "onnxruntime", onnxruntime),
        ("threads", threads, "pytorch", pytorch),
        ("int8_file", int8_file, "onnxruntime", onnxruntime),
    )
    for name, value, owner, given in shortcuts:
        if value is not None and given is not None:
            raise EdgeSqueezeError(
                f"Classifier: {name}= and {owner}= both given; set {name} in one place "
                f"(the {owner} options object holds it)"
            )
    trt_options = tensorrt or TensorRTOptions(cuda_graph=bool(cuda_graph))
    if precision is not None:
        trt_options = dataclasses.replace(
            trt_options, build=dataclasses.replace(trt_options.build, precision=precision)
        )
    ort_options = onnxruntime or OrtOptions(threads=threads or 0, int8_file=int8_file or "auto")
    torch_options = pytorch or TorchOptions(threads=ort_options.threads if threads is None else threads)
    return BackendOptions(trt_options, ort_options, torch_options)


class Classifier:
    """Classify images with a model file alone: its labels and preprocessing travel inside it.

    ``backend``: ``"auto"`` (TensorRT engine > TensorRT from ONNX > ONNX Runtime CUDA > CPU),
    ``"tensorrt"``, ``"onnxruntime"``, ``"onnxruntime-cuda"`` or ``"pytorch"``. Each backend takes
    its own options object (``tensorrt=TensorRTOptions(cuda_graph=True, build=BuildOptions(...))``,
    ``onnxruntime=OrtOptions(...)``, ``pytorch=TorchOptions(...)``); the common settings have
    shortcuts (a setting given both ways is refused): ``precision`` and ``cuda_graph`` for TensorRT (the precision an
    engine is built in from an ONNX model; batch-1 launches replayed from a CUDA graph),
    ``int8_file`` for ONNX Runtime (which INT8 file of an export runs on a CPU: ``"auto"``, the
    faster here on x86, the CPU file on ARM; ``"qdq"``; ``"cpu"``), ``threads`` for the CPU
    runtimes. Safe to share between threads.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        backend: str = "auto",
        precision: Optional[str] = None,
        threads: Optional[int] = None,
        topk: int = 5,
        cuda_graph: Optional[bool] = None,
        int8_file: Optional[str] = None,
        tensorrt: Optional[TensorRTOptions] = None,
        onnxruntime: Optional[OrtOptions] = None,
        pytorch: Optional[TorchOptions] = None,
    ) -> None:
        self.path = Path(path)
        options = backend_options(precision, threads, cuda_graph, int8_file, tensorrt, onnxruntime, pytorch)
        self.backend = load_backend(self.path, backend, options)
        self.metadata: ArtifactMetadata = self.backend.metadata
        self.labels = self.metadata.labels
        self.spec = self.metadata.preprocess
        self.topk = max(1, min(topk, len(self.labels)))
        # ONNX Runtime sessions are thread-safe; TensorRT contexts and torch modules are not
        self._lock: Optional[threading.Lock] = (
            None if self.backend.info.name == "onnxruntime" else threading.Lock()
        )
        expected = tuple(self.backend.info.input_shape[1:])
        if expected != self.spec.input_shape:
            raise EdgeSqueezeError(
                f"{self.path}: the model takes {expected} but its preprocessing makes {self.spec.input_shape}; "
                "re-export it"
            )

    @property
    def info(self) -> BackendInfo:
        return self.backend.info

    def __repr__(self) -> str:
        info = self.backend.info
        shape = "x".join("N" if d is None else str(d) for d in info.input_shape)
        ran = Path(info.model_path).name
        runs = f", runs={ran!r}" if ran and ran != self.path.name else ""  # the other INT8 file of an export
        return (
            f"Classifier({str(self.path)!r}{runs}, backend={info.name!r}, precision={info.precision!r}, "
            f"device={info.device!r}, input={shape} {info.input_dtype}, classes={len(self.labels)})"
        )

    def preprocess(
        self, images: Union[ImageInput, Sequence[ImageInput]], input_order: str = "BGR"
    ) -> np.ndarray:
        return preprocess(images, self.spec, input_order)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a batch made by :meth:`preprocess` (float32 NCHW, or uint8 NHWC pixels for a
        model that takes them: ``info.input_dtype``)."""
        if self._lock is None:
            return self.backend.infer(batch)
        with self._lock:
            return self.backend.infer(batch)

    def logits(self, images: Union[ImageInput, Sequence[ImageInput]], input_order: str = "BGR") -> np.ndarray:
        return self.infer(self.preprocess(images, input_order))

    def predictions(self, logits: np.ndarray) -> List[Prediction]:
        """Labelled top-k predictions from a batch of logits."""
        probs = softmax(logits)
        k = self.topk
        top = (
            np.argpartition(-probs, k - 1, axis=1)[:, :k]
            if k < probs.shape[1]
            else np.tile(np.arange(probs.shape[1]), (len(probs), 1))
        )
        results = []
        for row, idx in zip(probs, top):
            order = idx[np.argsort(-row[idx])]
            topk = [(int(i), self.labels.name(int(i)), float(row[i])) for i in order]
            results.append(Prediction(topk[0][0], topk[0][1], topk[0][2], topk))
        return results

    def predict(self, image: ImageInput, input_order: str = "BGR") -> Prediction:
        """One image (path, or HxWxC array, BGR by default) to its best classes."""
        if isinstance(image, (list, tuple)) or (isinstance(image, np.ndarray) and image.ndim == 4):
            raise EdgeSqueezeError("predict takes one image; use predict_batch for several")
        return self.predictions(self.logits(image, input_order))[0]

    def predict_batch(self, images: Sequence[ImageInput], input_order: str = "BGR") -> List[Prediction]:
        return self.predictions(self.logits(list(images), input_order))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
