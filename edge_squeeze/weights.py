"""Where a model's weights come from: ImageNet (torchvision's checkpoint), a state-dict ``.pth``, or an
edge-squeeze training checkpoint that carries its own architecture, labels and preprocessing.

Files are data, not code: every load uses ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from .errors import EdgeSqueezeError, require
from .fileio import atomic_path, sha256_file
from .labels import Labels, imagenet_labels
from .preprocess import PreprocessSpec

CHECKPOINT_FORMAT = "edge-squeeze-checkpoint"

# torchvision's published ImageNet checkpoints; the 8 hex digits in each name start its sha256.
IMAGENET_URLS = {
    "squeezenet1_0": "https://download.pytorch.org/models/squeezenet1_0-b66bff10.pth",
    "squeezenet1_1": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}


def cache_dir() -> Path:
    root = os.environ.get("EDGE_SQUEEZE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edge_squeeze"
    )
    return Path(root)


def download_imagenet_weights(arch: str) -> Path:
    """Download torchvision's checkpoint once into the cache, checking its sha256 prefix."""
    if arch not in IMAGENET_URLS:
        raise EdgeSqueezeError(f"no ImageNet weights for {arch!r}: choose {' or '.join(IMAGENET_URLS)}")
    url = IMAGENET_URLS[arch]
    name = url.rsplit("/", 1)[1]
    expected_prefix = name.rsplit("-", 1)[1].split(".")[0]
    target = cache_dir() / "weights" / name
    if target.is_file() and sha256_file(target).startswith(expected_prefix):
        return target

    def offline(exc: BaseException) -> EdgeSqueezeError:
        return EdgeSqueezeError(
            f"cannot download ImageNet weights for {arch} from {url} ({exc}): offline? Download the file "
            f"elsewhere and pass it with --weights PATH.pth, or put it at {target} "
            "(EDGE_SQUEEZE_CACHE moves the cache)"
        )

    try:
        response = urllib.request.urlopen(url, timeout=30)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise offline(exc) from exc
    with response, atomic_path(target) as tmp, open(tmp, "wb") as out:
        digest = hashlib.sha256()
        while True:
            try:  # a network error mid-download is the network's, not the disk's
                block = response.read(1 << 20)
            except (OSError, http.client.HTTPException) as exc:
                raise offline(exc) from exc
            if not block:
                break
            digest.update(block)
            out.write(block)  # a full disk here is one line naming the file (atomic_path)
        if not digest.hexdigest().startswith(expected_prefix):
            raise EdgeSqueezeError(
                f"downloaded {url} but its sha256 does not match {expected_prefix}; try again"
            )
    return target


@dataclasses.dataclass
class LoadedWeights:
    state_dict: Dict[str, Any]
    sha256: str
    source: str
    config: Optional[Dict[str, Any]] = None
    labels: Optional[Labels] = None
    preprocess: Optional[PreprocessSpec] = None
    extra: Optional[Dict[str, Any]] = None


def read_weights(weights: Union[str, os.PathLike[str]], arch: Optional[str] = None) -> LoadedWeights:
    """Read ``"imagenet"``, a state-dict file, or a training checkpoint, without building a model."""
    torch = require("torch", "loading PyTorch weights")
    if str(weights) == "imagenet":
        if arch is None:
            raise EdgeSqueezeError("weights='imagenet' needs an architecture (--arch)")
        path = download_imagenet_weights(arch)
        loaded = read_weights(path)
        loaded.labels = imagenet_labels()
        loaded.source = f"imagenet:{arch}"
        return loaded
    path = Path(weights)
    if not path.is_file():
        raise EdgeSqueezeError(
            f"weights file not found: {path} (a .pth state dict, a checkpoint, or 'imagenet')"
        )
    if path.suffix in (".net", ".esqz"):
        return _read_compressed(path, torch)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise EdgeSqueezeError(
            f"cannot read weights {path}: not a PyTorch state dict or checkpoint, or truncated ({exc.__class__.__name__})"
        ) from exc
    sha = sha256_file(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return LoadedWeights(
            state_dict=obj["state_dict"],
            sha256=sha,
            source=str(path),
            config=obj.get("config"),
            labels=Labels.from_dict(obj["labels"]) if obj.get("labels") else None,
            preprocess=PreprocessSpec.from_dict(obj["preprocess"]) if obj.get("preprocess") else None,
            extra={k: v for k, v in obj.items() if k not in ("state_dict",)},
        )
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise EdgeSqueezeError(f"{path} holds no state dict of tensors")
    # checkpoints saved from DataParallel / torch.compile prefix their keys
    state = {k.replace("module.", "", 1).replace("_orig_mod.", "", 1): v for k, v in obj.items()}
    return LoadedWeights(state_dict=state, sha256=sha, source=str(path))


def _read_compressed(path: Path, torch: Any) -> LoadedWeights:
    """The paper's Deep-Compression file (``.net``) or our ``.esqz``, decompressed to float weights."""
    from .compress.esqz import read_model_file

    model = read_model_file(path)
    return LoadedWeights(
        state_dict={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict.items()},
        sha256=sha256_file(path),
        source=str(path),
        config=model.config,
        labels=model.labels,
        preprocess=model.preprocess,
    )


def infer_num_classes(state_dict: Dict[str, Any]) -> Optional[int]:
    weight = state_dict.get("classifier.1.weight")
    return int(weight.shape[0]) if weight is not None else None
