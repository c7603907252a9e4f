"""A missing optional dependency is one line saying what to install."""

from __future__ import annotations

import pytest

from edge_squeeze.errors import EdgeSqueezeError, MissingDependencyError, require


def test_a_missing_module_names_its_top_level_package_and_the_install_line():
    with pytest.raises(MissingDependencyError) as exc:
        require("tensorrt_not_here.sub.module", "building engines")
    assert str(exc.value) == (
        "building engines needs tensorrt_not_here, which is not installed: pip install tensorrt_not_here"
    )
    assert isinstance(exc.value, EdgeSqueezeError) and isinstance(exc.value, ImportError)
    assert isinstance(exc.value.__cause__, ImportError)


def test_known_modules_get_their_own_hint(monkeypatch):
    import importlib

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(
        MissingDependencyError, match=r"needs pycuda, .*build it there against JetPack's CUDA"
    ):
        require("pycuda.driver", "the TensorRT backend")


def test_an_installed_module_is_returned():
    import json

    assert require("json", "anything") is json
