"""Lay out tensorrt-stubs where mypy can use them: ``python tools/trt_stubs.py DIR`` then ``MYPYPATH=DIR``.

The stubs package installs ``tensorrt/`` and ``tensorrt_bindings/`` without ``py.typed``, so mypy
ignores them in site-packages; and four plugin methods name a parameter ``in``, a Python keyword,
which mypy cannot parse, and one (``add_scale_nd``) puts a parameter without a default after
defaulted ones. This copies them, renaming ``in`` to ``in_`` and giving such parameters ``= ...``.
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
from pathlib import Path


def _split_params(params: str) -> list:
    parts, depth, current = [], 0, ""
    for ch in params:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current] if current.strip() else parts


def _fix_defaults(line: str) -> str:
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if not match:
        return line
    params = _split_params(match.group(2))
    seen_default = False
    for i, param in enumerate(params):
        if "=" in param:
            seen_default = True
        elif seen_default and ":" in param and not param.strip().startswith("*"):
            params[i] = param + " = ..."
    return match.group(1) + ",".join(params) + match.group(3)


def main() -> None:
    target = Path(sys.argv[1])
    site = Path(sysconfig.get_paths()["purelib"])
    for package in ("tensorrt", "tensorrt_bindings"):
        src = site / package
        if not (src / "__init__.pyi").is_file():
            sys.exit(f"tensorrt-stubs not installed in {site}: pip install --no-deps tensorrt-stubs")
        dst = target / package
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        for stub in src.glob("*.pyi"):
            text = stub.read_text(encoding="utf-8")
            text = re.sub(r"([(,] ?)in: ", r"\1in_: ", text)
            text = "\n".join(_fix_defaults(line) for line in text.splitlines()) + "\n"
            (dst / stub.name).write_text(text, encoding="utf-8")
    print(target)


if __name__ == "__main__":
    main()
