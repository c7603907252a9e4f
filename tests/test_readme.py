"""The README is the front door: CI must run exactly its set-up and test commands."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _first_bash_block(text: str) -> list:
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_commands():
    commands = _first_bash_block((REPO / "README.md").read_text())
    assert len(commands) == 2, "the README promises two commands: set-up and tests"
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci, f"CI does not run the README command {command!r}"
