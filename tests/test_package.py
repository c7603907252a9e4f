"""The package as users install it: layout, console script, deploy side without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge_squeeze.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_export_and_runtimes_install_under_edge_squeeze():
    import edge_squeeze.export
    import edge_squeeze.runtimes

    assert Path(edge_squeeze.export.__file__).parent == REPO / "export"
    assert Path(edge_squeeze.runtimes.__file__).parent == REPO / "runtimes"


def test_wheel_puts_nothing_generic_into_site_packages(tmp_path):
    pytest.importorskip("setuptools")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("edge_squeeze-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"edge_squeeze", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "edge_squeeze/export/pipeline.py" in names
    assert "edge_squeeze/runtimes/onnxruntime_backend.py" in names
    assert "edge_squeeze/compress/esqz.py" in names
    assert "edge_squeeze/data/imagenet_synset_words.txt" in names


def test_every_subpackage_is_listed_for_the_wheel():
    """pyproject.toml names its packages one by one: a new subpackage left out would be missing from
    the wheel (and from the Jetson's --no-deps install), while the editable install here still works."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *parts)))
    assert found <= listed, sorted(found - listed)


def test_deploy_side_imports_and_runs_without_torch(tmp_path, tiny_checkpoint):
    """Block torch, tensorrt and pycuda imports; Classifier and the runtimes must still work, and an
    .esqz file must still classify (ONNX Runtime on its decompressed weights)."""
    pytest.importorskip("torch")
    from edge_squeeze.compress import CompressOptions, write_esqz
    from edge_squeeze.models import load_model

    bundle = load_model(tiny_checkpoint, arch="squeezenet1_1", image_size=64)
    esqz = tmp_path / "tiny.esqz"
    state = bundle.model.state_dict()
    write_esqz(
        esqz, state, bundle.config.to_dict(), bundle.labels, bundle.preprocess, CompressOptions(bits=6)
    )
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorrt', 'pycuda', 'tqdm', 'matplotlib'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import numpy as np
from edge_squeeze import Classifier, preprocess
import edge_squeeze.runtimes.onnxruntime_backend, edge_squeeze.runtimes.tensorrt_backend
import edge_squeeze.export.tensorrt_build, edge_squeeze.export.calibration  # built on the Jetson
from edge_squeeze.runtimes.tensorrt_backend import unavailable_reason
print(unavailable_reason())
x = preprocess(np.zeros((480, 640, 3), np.uint8))
print(x.shape)
clf = Classifier(sys.argv[1])
print(clf.info.name, clf.predict(np.zeros((80, 80, 3), np.uint8)).label)
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(esqz)], capture_output=True, text=True, check=True
    ).stdout
    assert "TensorRT is not installed" in out and "(1, 3, 224, 224)" in out
    assert "onnxruntime class_" in out


def test_version_and_info(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("edge-squeeze 0.")
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("python", "numpy", "opencv", "onnxruntime", "torch", "tensorrt", "pycuda", "cuda device"):
        assert key in info
    assert "GStreamer" in info["opencv"]
    assert "CPUExecutionProvider" in info["onnxruntime"]
    if info["tensorrt"].startswith("not installed"):
        assert "JetPack" in info["tensorrt"]


def test_console_script_runs():
    exe = Path(sys.executable).with_name("edge-squeeze")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    result = subprocess.run([str(exe), "info"], capture_output=True, text=True)
    assert result.returncode == 0 and "onnxruntime" in result.stdout


def test_models_table(capsys):
    pytest.importorskip("torch")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "1,248,424" in out and "1,235,496" in out and "818.9 M" in out and "349.2 M" in out
    assert main(["models", "--num-classes", "10", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["params"] == 740_554
