"""What this machine has: versions of every dependency, with an install hint for each one missing."""

from __future__ import annotations

import importlib
import platform
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from .errors import INSTALL_HINTS


def _version(module: str) -> Optional[str]:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", getattr(mod, "VERSION", "unknown")))


def tensorrt_version() -> Optional[str]:
    """TensorRT's version, or None. ``tensorrt-stubs`` leaves an importable namespace package named
    ``tensorrt`` with no code, so presence is judged by ``tensorrt.Builder``, not by the import."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception:
        return None
    if not hasattr(trt, "Builder"):
        return None
    return str(getattr(trt, "__version__", "unknown"))


def opencv_gstreamer() -> Optional[bool]:
    try:
        import cv2
    except ImportError:
        return None
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


def cuda_device() -> Tuple[Optional[str], str]:
    """(device description, how it was found) via pycuda, else torch; (None, reason) without one."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count():
            dev = cuda.Device(0)
            major, minor = dev.compute_capability()
            return f"{dev.name()} (sm_{major}{minor}, {dev.total_memory() // 2**20} MiB)", "pycuda"
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory // 2**20} MiB)", "torch"
    except Exception:
        pass
    return None, "no CUDA device found (no NVIDIA driver, or neither pycuda nor torch with CUDA installed)"


def report() -> List[Tuple[str, str]]:
    rows: List[Tuple[str, str]] = [("python", f"{platform.python_version()} ({sys.executable})")]

    def add(name: str, module: str, version: Optional[str], extra: str = "") -> None:
        if version is None:
            rows.append((name, f"not installed: {INSTALL_HINTS.get(module, 'pip install ' + module)}"))
        else:
            rows.append((name, version + extra))

    from ._version import __version__

    rows.insert(0, ("edge-squeeze", __version__))
    add("numpy", "numpy", _version("numpy"))
    gst = opencv_gstreamer()
    add("opencv", "cv2", _version("cv2"), "" if gst is None else f" (GStreamer: {'yes' if gst else 'no'})")
    ort_version = _version("onnxruntime")
    providers = ""
    if ort_version:
        import onnxruntime

        providers = f" (providers: {', '.join(onnxruntime.get_available_providers())})"
    add("onnxruntime", "onnxruntime", ort_version, providers)
    add("onnx", "onnx", _version("onnx"))
    add("torch", "torch", _version("torch"))
    add("tensorrt", "tensorrt", tensorrt_version())
    add("pycuda", "pycuda", _version("pycuda"))
    device, how = cuda_device()
    rows.append(("cuda device", device + f" (via {how})" if device else how))
    rows.append(("platform", f"{platform.machine()} {platform.system()} {platform.release()}"))
    return rows


def as_dict() -> Dict[str, Any]:
    return dict(report())
