"""Shared fixtures. Real data lives in ../shared (never copied into the repo); tests that need it take
the ``shared`` fixture and skip with a reason when it is absent (EDGE_SQUEEZE_SHARED overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    return Path(os.environ.get("EDGE_SQUEEZE_SHARED", REPO.parent / "shared"))


class Shared:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.weights_1_1 = root / "weights" / "squeezenet1_1-imagenet.pth"
        self.deep_compression = root / "weights" / "deep-compression" / "compressed_SqueezeNet.net"
        self.samples = root / "data" / "imagenet-samples"
        self.val = self.samples / "val"
        self.calib = self.samples / "calib"
        self.synset_words = self.samples / "synset_words.txt"
        self.photos = root / "data" / "photos"


@pytest.fixture(scope="session")
def shared() -> Shared:
    root = _shared_root()
    if not (root / "weights" / "squeezenet1_1-imagenet.pth").is_file():
        pytest.skip(f"shared data not found at {root} (set EDGE_SQUEEZE_SHARED); a user's clone has none")
    return Shared(root)


def make_pattern_image(cls: int, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A procedurally generated BGR image whose class is visible: stripes at a class-specific angle
    and colour, with random phase, noise and brightness."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.pi * cls / 4.0
    freq = 0.15 + 0.05 * (cls % 2)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    colour = np.array([[255, 60, 60], [60, 255, 60], [60, 60, 255], [220, 220, 60]][cls % 4], np.float32)
    img = 0.5 * (wave[..., None] + 1.0) * colour * rng.uniform(0.7, 1.0)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def pattern_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ and val/ class folders of generated images (4 classes)."""
    root = tmp_path_factory.mktemp("patterns")
    rng = np.random.default_rng(0)
    for split, count in (("train", 48), ("val", 16)):
        for cls in range(4):
            folder = root / split / f"class{cls}"
            folder.mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(folder / f"{i:03d}.png"), make_pattern_image(cls, rng))
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained SqueezeNet 1.1 state dict (10 classes): enough to test the export plumbing."""
    torch = pytest.importorskip("torch")
    from edge_squeeze.models import squeezenet1_1

    torch.manual_seed(0)
    model = squeezenet1_1(num_classes=10)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def narrow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow SqueezeNet 1.1 (Fire widths 16-64 instead of 128-512, ~30k weights), 10 classes, 64x64
    input, as an edge-squeeze checkpoint: for tests of control flow that would otherwise pay for
    per-layer measurements on a full-width network."""
    torch = pytest.importorskip("torch")
    from edge_squeeze.config import config_for
    from edge_squeeze.labels import Labels
    from edge_squeeze.models import SqueezeNet
    from edge_squeeze.preprocess import PreprocessSpec
    from edge_squeeze.weights import CHECKPOINT_FORMAT

    torch.manual_seed(0)
    config = config_for("squeezenet1_1", num_classes=10, base_e=16, incr_e=16)
    model = SqueezeNet(config)
    path = tmp_path_factory.mktemp("narrow") / "narrow.pt"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "state_dict": model.state_dict(),
            "labels": Labels.numbered(10).to_dict(),
            "preprocess": PreprocessSpec.imagenet(64).to_dict(),
        },
        path,
    )
    return path


@pytest.fixture(scope="session")
def tiny_int8_export(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, pattern_dataset: Path
) -> Path:
    """One export of the tiny model at 96x96 with both INT8 files, calibrated on 40 generated images,
    shared by every test that reads an export (treat it as read-only: copy it to change it)."""
    pytest.importorskip("torch")
    from edge_squeeze.export.pipeline import ExportOptions, run_export

    out = tmp_path_factory.mktemp("tiny-int8-export")
    run_export(
        ExportOptions(
            weights=str(tiny_checkpoint),
            arch="squeezenet1_1",
            out=out,
            image_size=96,
            int8=True,
            calib=pattern_dataset / "train",
            calib_count=40,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="session")
def imagenet_onnx(shared, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared ImageNet SqueezeNet 1.1 exported to fp32 ONNX (with its labels inside)."""
    pytest.importorskip("torch")
    from edge_squeeze.export.pipeline import ExportOptions, run_export
    from edge_squeeze.labels import load_labels

    out = tmp_path_factory.mktemp("imagenet-fp32")
    run_export(
        ExportOptions(
            weights=str(shared.weights_1_1),
            arch="squeezenet1_1",
            out=out,
            labels=load_labels(shared.synset_words),
            progress=False,
        )
    )
    return out / "model.onnx"


@pytest.fixture(scope="session")
def imagenet_int8_export(shared, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's main job on the shared data, run once: export --int8 --calib ... --eval ...;
    the folder holds model.onnx, both int8 flavours and export-report.json."""
    pytest.importorskip("torch")
    from edge_squeeze.cli import main

    out = tmp_path_factory.mktemp("imagenet-int8")
    args = [
        "-q",
        "export",
        "--arch",
        "squeezenet1_1",
        "--weights",
        str(shared.weights_1_1),
        "--labels",
        str(shared.synset_words),
        "--int8",
        "--calib",
        str(shared.calib),
        "--eval",
        str(shared.val),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    return out
