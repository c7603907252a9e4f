"""Errors a user can act on.

Every error raised for bad input is an :class:`EdgeSqueezeError`: the CLI prints its message as one
line and exits non-zero without a traceback. The message names the thing and the fix.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class EdgeSqueezeError(Exception):
    """A problem with the user's input or environment, described in one actionable line."""


class MissingDependencyError(EdgeSqueezeError, ImportError):
    """An optional heavy dependency (torch, tensorrt, pycuda, ...) is not installed."""


# What to install for each optional module, as one line a user can paste.
INSTALL_HINTS = {
    "torch": "pip install 'edge-squeeze[export]' (or a torch build for your platform from pytorch.org)",
    "onnx": "pip install onnx",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu for CUDA)",
    "tensorrt": "on a Jetson it comes with JetPack; elsewhere pip install tensorrt (see docs/jetson.md)",
    "pycuda": "pip install pycuda (on a Jetson build it there against JetPack's CUDA; see docs/jetson.md)",
    "tqdm": "pip install tqdm",
    "matplotlib": "pip install matplotlib",
    "onnxsim": "pip install onnxsim",
    "onnxconverter_common": "pip install onnxconverter-common",
    "cv2": "pip install opencv-python-headless (on a Jetson keep JetPack's OpenCV)",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional module, or raise one clear line saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = INSTALL_HINTS.get(top, f"pip install {top}")
        raise MissingDependencyError(f"{purpose} needs {top}, which is not installed: {hint}") from exc
