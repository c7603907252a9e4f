"""The label, score and FPS drawn on a frame."""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple

import cv2
import numpy as np

log = logging.getLogger("edge_squeeze")


def _outlined_text(
    img: np.ndarray,
    text: str,
    org: Tuple[int, int],
    scale: float,
    colour: Tuple[int, int, int],
    thickness: int,
) -> None:
    """Text with a black outline, readable on any background."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def draw_overlay(
    frame: np.ndarray, topk: List[Tuple[int, str, float]], fps: float, stage_ms: Dict[str, float]
) -> np.ndarray:
    """Top-k labels and scores, FPS and per-stage milliseconds drawn on a copy of ``frame``."""
    out = frame.copy()
    scale = max(0.5, frame.shape[1] / 1280.0)
    y = int(30 * scale)
    for rank, (_, label, score) in enumerate(topk):
        colour = (0, 255, 0) if rank == 0 else (255, 255, 255)
        _outlined_text(out, f"{label} {100 * score:.1f}%", (10, y), 0.8 * scale, colour, 2)
        y += int(30 * scale)
    stages = "  ".join(f"{k} {v:.1f}ms" for k, v in stage_ms.items())
    _outlined_text(
        out, f"{fps:.1f} FPS  {stages}", (10, frame.shape[0] - 12), max(0.45, 0.6 * scale), (0, 255, 255), 1
    )
    return out
