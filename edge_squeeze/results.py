"""Typed results: every job (export, eval, bench, selftest, train) returns a dataclass with
``to_dict()`` (JSON-ready) and ``to_json()``; and the one top-1 agreement every comparison uses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class Result:
    """Mixin for result dataclasses: fields marked ``repr=False`` stay out of the JSON."""

    def to_dict(self) -> Dict[str, Any]:
        return _plain(self)  # type: ignore[no-any-return]

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is not None)


def top1_agreement(predictions: Any, reference: Any) -> float:
    """The share of images on which two models name the same top-1 class (arrays of class indices,
    or of logits: then their argmax)."""
    a, b = np.asarray(predictions), np.asarray(reference)
    if a.ndim == 2:
        a = a.argmax(axis=1)
    if b.ndim == 2:
        b = b.argmax(axis=1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"top1_agreement needs two equal, non-empty sets of predictions, got {a.shape} and {b.shape}"
        )
    return float(np.mean(a == b))
