"""The one preprocessing definition.

Training, calibration, evaluation, benchmarking and inference all call :func:`preprocess` with the
:class:`PreprocessSpec` that travels inside every artifact (ONNX metadata, engine sidecar JSON), so
a model file alone is enough to classify correctly.

Colour order of inputs: **arrays are BGR by default**, because that is how OpenCV decodes files and
delivers camera frames; pass ``input_order="RGB"`` for arrays from PIL, imageio or matplotlib.
Paths are decoded with OpenCV and so are BGR too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .errors import EdgeSqueezeError

log = logging.getLogger("edge_squeeze")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}

ImageInput = Union[str, "os.PathLike[str]", np.ndarray]

INPUT_FORMATS = ("float32-nchw", "uint8-nhwc", "uint8-nhwc4")


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the network's input tensor.

    ``resize`` is the length the shorter side is resized to (0: no resize), then a centre crop of
    ``crop`` pixels. Pixels are multiplied by ``scale`` (1/255 for torchvision models, 1 for Caffe
    ones), then ``(x - mean) / std`` per channel, with mean and std given in ``channel_order``: the
    order the network expects its channels in.

    ``input_format`` is what the network takes: ``"float32-nchw"``, the normalised CxHxW input, or
    ``"uint8-nhwc"``, the crop's raw 0-255 pixels (HxWx3, in ``channel_order``) for a network that
    applies ``scale``, ``mean`` and ``std`` itself (the CPU INT8 model folds them into its first
    convolution, which saves the normalising here and the quantizing there), or ``"uint8-nhwc4"``,
    the same pixels with a fourth channel (alpha, 255) that the network's weights ignore: four
    input channels let ONNX Runtime's x86 integer kernels run the first convolution without im2col.
    """

    resize: int = 256
    crop: int = 224
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"
    # Downscaling with area interpolation is closest to torchvision's antialiased resize (it scores
    # higher than bilinear on the shared val set: docs/int8.md keeps the measurement)
    interpolation: str = "area"
    input_format: str = "float32-nchw"

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise EdgeSqueezeError(
                f"preprocess channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise EdgeSqueezeError(
                f"preprocess interpolation must be one of {sorted(_INTERPOLATIONS)}, not {self.interpolation!r}"
            )
        if self.input_format not in INPUT_FORMATS:
            raise EdgeSqueezeError(
                f"preprocess input_format must be one of {INPUT_FORMATS}, not {self.input_format!r}; "
                "a newer edge-squeeze wrote this model: upgrade edge-squeeze"
            )
        if self.crop <= 0 or self.resize < 0:
            raise EdgeSqueezeError("preprocess crop must be > 0 and resize >= 0")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise EdgeSqueezeError("preprocess mean and std need three values, std > 0")

    @classmethod
    def imagenet(cls, crop: int = 224) -> PreprocessSpec:
        """torchvision's ImageNet evaluation transform (resize 256/224 of the crop, centre crop)."""
        return cls(resize=round(crop * 256 / 224), crop=crop)

    @classmethod
    def caffe(cls, crop: int = 227) -> PreprocessSpec:
        """Caffe's SqueezeNet convention: BGR, 0-255, minus the per-channel mean, no std."""
        return cls(
            resize=256,
            crop=crop,
            mean=(104.0, 117.0, 123.0),
            std=(1.0, 1.0, 1.0),
            scale=1.0,
            channel_order="BGR",
        )

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> PreprocessSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        return cls.from_dict(json.loads(text))

    @property
    def pixel_input(self) -> bool:
        return self.input_format.startswith("uint8-")

    @property
    def input_channels(self) -> int:
        return 4 if self.input_format == "uint8-nhwc4" else 3

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        if self.pixel_input:
            return (self.crop, self.crop, self.input_channels)
        return (3, self.crop, self.crop)

    @property
    def dtype(self) -> Any:
        return np.uint8 if self.pixel_input else np.float32

    @property
    def layout(self) -> str:
        return "NHWC" if self.pixel_input else "NCHW"


# Limits on what is decoded at all: a decompression bomb or a strip of pixels is refused with one line
# instead of exhausting memory (a 60000x1 image resized to a 256-pixel short side is 15 M x 256 pixels).
MAX_PIXELS = 100_000_000  # after any reduced JPEG decode
MAX_ASPECT = 32  # longest side / shortest side; 360-degree panoramas are about 8
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
_WARNED: set = set()


def header_size(data: Union[bytes, np.ndarray]) -> Tuple[str, int, int]:
    """(format, width, height) from a PNG or JPEG header without decoding the pixels; ("", 0, 0) for
    other formats or a header that cannot be read."""
    head = bytes(data[:65536]) if isinstance(data, np.ndarray) else data[:65536]
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return "png", int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] != b"\xff\xd8":
        return "", 0, 0
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return "", 0, 0
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return (
                "jpeg",
                int.from_bytes(head[i + 7 : i + 9], "big"),
                int.from_bytes(head[i + 5 : i + 7], "big"),
            )
        i += 2 + length
    return "", 0, 0


def check_dimensions(width: int, height: int, source: str) -> None:
    """Refuse images too large or too elongated to classify within bounded memory, in one line."""
    if width <= 0 or height <= 0:
        return
    if width * height > MAX_PIXELS:
        raise EdgeSqueezeError(
            f"image {source} is {width}x{height} ({width * height / 1e6:.0f} megapixels): too large to "
            f"decode safely (limit {MAX_PIXELS // 1_000_000} megapixels); downscale it first"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise EdgeSqueezeError(
            f"image {source} is {width}x{height}: too elongated to classify (more than {MAX_ASPECT}:1); "
            "crop it to the region of interest first"
        )


def read_image(path: Union[str, os.PathLike[str]], min_side: int = 0) -> np.ndarray:
    """Decode an image file to a BGR uint8 array, or raise one clear error naming the file.

    With ``min_side`` (what the caller resizes the shorter side to, or more), a JPEG much larger than
    that is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling: a 12000x12000 photo then
    needs ~7 MB, not 430 MB); anything over :data:`MAX_PIXELS` or :data:`MAX_ASPECT` after that is
    refused before its pixels are decoded.
    """
    path = Path(path)
    if not path.exists():
        raise EdgeSqueezeError(f"image not found: {path} (check the path)")
    if not path.is_file():
        raise EdgeSqueezeError(f"not an image file: {path} is a folder or a device")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # fromfile + imdecode copes with non-ASCII paths
    except OSError as exc:
        raise EdgeSqueezeError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    kind, width, height = header_size(data)
    flag = cv2.IMREAD_COLOR
    if kind == "jpeg" and min_side:
        for factor, reduced in _REDUCED:
            if min(width, height) // factor >= min_side:
                flag, width, height = reduced, -(-width // factor), -(-height // factor)
                break
    check_dimensions(width, height, str(path))
    image = cv2.imdecode(data, flag) if data.size else None
    if image is None:
        raise EdgeSqueezeError(
            f"cannot decode image {path}: not an image or a corrupt file (supported: {', '.join(IMAGE_SUFFIXES)})"
        )
    check_dimensions(image.shape[1], image.shape[0], str(path))
    return image


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def to_bgr8(image: np.ndarray, input_order: str = "BGR") -> np.ndarray:
    """Bring greyscale, RGBA/BGRA, RGB, 16-bit and float images to 3-channel BGR uint8.

    Float images are taken as [0, 1]; a float image with values above 1 is taken as 0-255 (with one
    warning), as is a 16-bit image whose values all fit in 8 bits: both are common mistakes that
    would otherwise classify a white or a black picture with confidence. Non-finite values are an error.
    """
    if not isinstance(image, np.ndarray):
        raise EdgeSqueezeError(f"expected an image path or a numpy array, got {type(image).__name__}")
    if input_order not in ("BGR", "RGB"):
        raise EdgeSqueezeError(f"input_order must be 'BGR' or 'RGB', not {input_order!r}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or image.size == 0:
        raise EdgeSqueezeError(
            f"expected an image array of shape HxW, HxWx3 or HxWx4, got shape {tuple(image.shape)}"
        )
    check_dimensions(image.shape[1], image.shape[0], "array")
    if image.dtype == np.uint16:
        if int(image.max()) < 256:
            _warn_once("16-bit image whose values all fit in 8 bits: taking them as 0-255")
            image = image.astype(np.uint8)
        else:
            image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float16, np.float32, np.float64):
        if not np.all(np.isfinite(image)):
            raise EdgeSqueezeError("the image array holds NaN or infinite values")
        peak = float(image.max())
        if peak > 1.0 + 1e-3:
            _warn_once(f"float image with values up to {peak:.3g}: taking it as 0-255, not 0-1")
            image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
        else:
            image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise EdgeSqueezeError(f"expected a uint8, uint16 or float image array, got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        code = cv2.COLOR_BGRA2BGR if input_order == "BGR" else cv2.COLOR_RGBA2BGR
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    if input_order == "RGB":
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    return image


class _Normaliser:
    """Per-spec constants, computed once: ``x * a - b`` equals ``(x * scale - mean) / std``."""

    def __init__(self, spec: PreprocessSpec) -> None:
        std = np.asarray(spec.std, dtype=np.float32)
        self.a = (np.float32(spec.scale) / std).reshape(3, 1, 1)
        self.b = (np.asarray(spec.mean, dtype=np.float32) / std).reshape(3, 1, 1)
        self.swap = spec.channel_order == "RGB"


_NORMALISERS: Dict[PreprocessSpec, _Normaliser] = {}


def _crop_geometry(h: int, w: int, spec: PreprocessSpec) -> Tuple[float, float, float, float]:
    """(x scale, y scale, left, top) of "resize the shorter side, then centre-crop", in resized pixels."""
    if spec.resize and min(h, w) != spec.resize:
        ratio = spec.resize / min(h, w)
        # torchvision truncates the long side
        new_w, new_h = (spec.resize, int(h * ratio)) if w <= h else (int(w * ratio), spec.resize)
    else:
        new_w, new_h = w, h
    # smaller than the crop: stretch so the crop fits (torchvision pads; stretching is kinder)
    new_w, new_h = max(new_w, spec.crop), max(new_h, spec.crop)
    top = round((new_h - spec.crop) / 2.0)
    left = round((new_w - spec.crop) / 2.0)
    return new_w / w, new_h / h, left, top


def resize_and_crop(bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize the shorter side to ``spec.resize``, centre-crop ``spec.crop``: HxWx3 uint8 out.

    ``interpolation="area"`` when shrinking: bilinear onto a grid k times finer than the resized
    image (k = ceil(1/scale)), crop, then average k x k blocks. That is a box filter like
    ``cv2.INTER_AREA`` (within 0.2 grey levels on average for a 640x480 frame) at a fraction of its
    cost: OpenCV's area resize is slow for non-integer ratios (benchmarks/results/preprocess.json).
    """
    h, w = bgr.shape[:2]
    if spec.interpolation == "area" and spec.resize and min(h, w) >= 4 * spec.resize:
        # large frames: first an exact integer box shrink (OpenCV's fast path), on whole pixel blocks
        f = min(h, w) // (2 * spec.resize)
        bgr = cv2.resize(bgr[: h - h % f, : w - w % f], (w // f, h // f), interpolation=cv2.INTER_AREA)
        h, w = bgr.shape[:2]
    sx, sy, left, top = _crop_geometry(h, w, spec)
    c = spec.crop
    if sx == 1.0 and sy == 1.0:
        return bgr[top : top + c, left : left + c]
    new_w, new_h = round(w * sx), round(h * sy)
    if spec.interpolation == "area" and max(sx, sy) < 1.0:
        k = int(np.ceil(1.0 / min(sx, sy)))
        fine = cv2.resize(bgr, (new_w * k, new_h * k), interpolation=cv2.INTER_LINEAR)
        crop = fine[top * k : (top + c) * k, left * k : (left + c) * k]
        return cv2.resize(crop, (c, c), interpolation=cv2.INTER_AREA)  # integer ratio: exact box mean
    interp = cv2.INTER_LINEAR if spec.interpolation == "area" else _INTERPOLATIONS[spec.interpolation]
    return cv2.resize(bgr, (new_w, new_h), interpolation=interp)[top : top + c, left : left + c]


def normalise(crop: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A BGR uint8 HxWx3 crop to the network's input: float32 CxHxW (channel order, scale, mean,
    std), or for the uint8 formats the crop itself in the network's channel order (plus alpha for
    ``uint8-nhwc4``)."""
    norm = _NORMALISERS.get(spec)
    if norm is None:
        norm = _NORMALISERS.setdefault(spec, _Normaliser(spec))
    # OpenCV swaps and splits channels several times faster than numpy copies reversed or
    # transposed views (a 224x224 crop: 7 against 270 us to swap)
    if spec.input_channels == 4:
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGBA if norm.swap else cv2.COLOR_BGR2BGRA)
    crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB) if norm.swap else np.ascontiguousarray(crop)
    if spec.pixel_input:
        return crop
    chw = np.stack(cv2.split(crop)).astype(np.float32)
    chw *= norm.a
    chw -= norm.b
    return chw


def preprocess_one(image: ImageInput, spec: PreprocessSpec, input_order: str = "BGR") -> np.ndarray:
    """One image (path or array) to the network's input for one image (``spec.input_shape``)."""
    if isinstance(image, (str, os.PathLike)):
        bgr = read_image(image, min_side=4 * max(spec.resize, spec.crop))
    else:
        bgr = to_bgr8(image, input_order)
    return normalise(resize_and_crop(bgr, spec), spec)


def preprocess(
    image: Union[ImageInput, Sequence[ImageInput]],
    spec: PreprocessSpec | None = None,
    input_order: str = "BGR",
) -> np.ndarray:
    """Turn one image or a batch into the network's input: float32 NCHW, or uint8 NHWC for the
    ``uint8-nhwc`` and ``uint8-nhwc4`` specs.

    ``image`` may be a path, an HxW / HxWxC array (uint8, uint16 or float in [0, 1]; greyscale, 3 or
    4 channels), a list of those, or an NxHxWxC array. Arrays are BGR unless ``input_order="RGB"``.
    ``spec`` defaults to ImageNet's (256 -> 224, torchvision mean/std).
    """
    spec = spec or PreprocessSpec()
    if isinstance(image, np.ndarray) and image.ndim == 4:
        items: List[ImageInput] = list(image)
    elif isinstance(image, (list, tuple)):
        items = list(image)
        if not items:
            raise EdgeSqueezeError("preprocess got an empty batch")
    else:
        items = [image]  # type: ignore[list-item]
    batch = np.empty((len(items), *spec.input_shape), dtype=spec.dtype)
    for i, item in enumerate(items):
        batch[i] = preprocess_one(item, spec, input_order)
    return batch


def unreadable_warning(what: str, reasons: Sequence[str], total: int) -> None:
    """One warning for the unreadable files of a folder: how many, and the first few reasons. Said
    only once the folder is read and the job goes on (a job that then fails says it in its error)."""
    if reasons:
        shown = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
        log.warning("skipped %d unreadable %s(s) of %d: %s", len(reasons), what, total, shown)


def preprocess_files(
    paths: Sequence[Union[str, os.PathLike[str]]],
    spec: PreprocessSpec,
    what: str = "image",
    progress: bool = False,
    warn: bool = True,
    unreadable: Optional[List[str]] = None,
) -> Tuple[List[np.ndarray], List[int]]:
    """Preprocess image files, skipping unreadable ones (with ``warn``, one warning with their count
    and reasons: :func:`unreadable_warning`; callers that may still fail pass ``warn=False`` and an
    ``unreadable`` list, which receives the reasons, and warn once they go on).

    Returns the network inputs of the readable files (``spec.input_shape``) and their indices in ``paths``.
    """
    iterator: Any = paths
    if progress:
        from .progress import progress_bar

        iterator = progress_bar(paths, desc=f"{what}s", unit="img")
    arrays: List[np.ndarray] = []
    kept: List[int] = []
    reasons: List[str] = unreadable if unreadable is not None else []
    for i, path in enumerate(iterator):
        try:
            arrays.append(preprocess_one(path, spec))
            kept.append(i)
        except EdgeSqueezeError as exc:
            reasons.append(str(exc))
    if warn:
        unreadable_warning(what, reasons, len(paths))
    return arrays, kept


def list_images(folder: Union[str, os.PathLike[str]], recursive: bool = True) -> List[Path]:
    """Image files under ``folder`` (by suffix, any case), sorted for a deterministic order."""
    root = Path(folder)
    if not root.is_dir():
        raise EdgeSqueezeError(f"image folder not found: {root} (check the path)")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
