"""TensorRT backend with pycuda buffers (see the engine-building code in ``edge_squeeze.export.tensorrt_build``)."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from edge_squeeze.environment import tensorrt_version
from edge_squeeze.errors import INSTALL_HINTS, EdgeSqueezeError, MissingDependencyError


def unavailable_reason() -> Optional[str]:
    """Why TensorRT cannot run here, or None when it can (TensorRT, pycuda and a CUDA device)."""
    if tensorrt_version() is None:
        return f"TensorRT is not installed ({INSTALL_HINTS['tensorrt']})"
    try:
        import pycuda.driver as cuda
    except ImportError:
        return f"pycuda is not installed ({INSTALL_HINTS['pycuda']})"
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA device found"
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a driver
        return f"CUDA is not usable: {exc}"
    return None


def load(path: Union[str, os.PathLike[str]], precision: Optional[str] = None, **options: Any) -> Any:
    reason = unavailable_reason()
    if reason is not None:
        raise MissingDependencyError(f"the TensorRT backend cannot run here: {reason}")
    raise EdgeSqueezeError("TensorRT engine loading is not implemented yet")
