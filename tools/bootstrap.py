"""Set up a fresh checkout in one command: ``python3 tools/bootstrap.py``.

Creates ``.venv``, installs PyTorch, then the project with its workstation and dev extras
(``pip install -e ".[export,dev]"``). PyTorch comes as the build that suits the machine: with an
NVIDIA GPU, pip's default (a CUDA build); without one, a CPU build, which is a few hundred MB where
the CUDA build is several GB. The CPU build is looked for first on PyTorch's own CPU wheel index, then
among the wheels pip can reach without an index (a local wheel folder or cache, as on CI machines),
and only then does pip take whatever it finds, with a warning. An existing torch in ``.venv`` is
kept; ``EDGE_SQUEEZE_TORCH="torch==2.13.0"`` installs exactly that instead.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
TORCH = "torch>=2.1"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", *args], check=check, text=True)


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def is_cpu_build(version: str) -> bool:
    """PyTorch's Linux x86_64 wheels on PyPI are CUDA builds; its CPU builds carry ``+cpu``. Elsewhere
    (macOS, Windows, aarch64 Linux) PyPI's wheels are CPU builds already."""
    on_x86_linux = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
    return version.endswith("+cpu") or not on_x86_linux


def resolve(extra: List[str]) -> Optional[str]:
    """The torch version pip would install with ``extra`` arguments, without installing it."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        result = subprocess.run(
            [
                str(VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--quiet",
                "--no-deps",
                "--report",
                str(report),
                *extra,
                TORCH,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not report.is_file():
            return None
        for item in json.loads(report.read_text()).get("install", []):
            if item["metadata"]["name"].lower() == "torch":
                return str(item["metadata"]["version"])
    return None


def install_torch() -> None:
    if (
        subprocess.run([str(VENV / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode
        == 0
    ):
        print("bootstrap: keeping the torch already in .venv")
        return
    pinned = os.environ.get("EDGE_SQUEEZE_TORCH")
    if pinned:
        pip("install", pinned)
        return
    if has_nvidia_gpu():
        print("bootstrap: NVIDIA GPU found: installing pip's default (CUDA) build of torch")
        pip("install", TORCH)
        return
    # where to look, and how to install the version found there (its dependencies from PyPI)
    sources = [
        (
            "PyTorch's CPU index",
            ["--index-url", CPU_INDEX, "--timeout", "20", "--retries", "1"],
            ["--extra-index-url", CPU_INDEX],
        ),
        ("wheels reachable without an index", ["--no-index"], []),
    ]
    for name, look, get in sources:
        version = resolve(look)
        if version and is_cpu_build(version):
            print(f"bootstrap: no NVIDIA GPU: torch {version} (CPU build) from {name}")
            pip("install", *get, f"torch=={version}")
            return
    print(
        "bootstrap: warning: no CPU build of torch found (PyTorch's CPU index unreachable?); installing "
        "what pip finds, which on Linux x86_64 is the multi-GB CUDA build",
        file=sys.stderr,
    )
    pip("install", TORCH)


def main() -> int:
    if not (VENV / "bin" / "python").exists():
        print(f"bootstrap: creating {VENV}")
        venv.create(VENV, with_pip=True)
    install_torch()
    pip("install", "-e", f"{REPO}[export,dev]")
    print("bootstrap: done; run the tests with .venv/bin/python -m pytest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
