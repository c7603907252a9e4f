"""Inference backends, one per file, all answering the same small protocol (see :mod:`.base`).

This package is the deploy side: it imports and runs on a Jetson without torch. TensorRT, pycuda and
torch are imported lazily by the backend that needs them.
"""

from .base import Backend, BackendInfo, check_input

__all__ = ["Backend", "BackendInfo", "check_input"]
