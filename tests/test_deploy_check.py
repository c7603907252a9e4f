"""tools/deploy_check.py's comparison, on made-up reports (its runs are in .ci/run and benchmarks/)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "deploy_check.py"


def _tool():
    spec = importlib.util.spec_from_file_location("deploy_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report():
    line = {"exit": 1, "lines": 1, "message": "edge-squeeze: error: model not found: x"}
    return {
        "python": "3.11.7",
        "machine": "x86_64",
        "models": {
            "model.onnx": {
                "top1": 0.664,
                "predictions": {"a.JPEG": 3, "b.JPEG": 7},
                "photos": {"samoyed.jpg": "Samoyed"},
            }
        },
        "cli_predict": "Samoyed",
        "cli_eval": {"top1": 0.656, "top5": 0.856, "n": 500},
        "camera": {"exit": 0, "labels": ["Samoyed", "Samoyed"]},
        "bad_input": {"missing model": line},
        "info_truthful": True,
    }


def test_the_same_results_compare_equal_and_every_difference_is_named():
    tool = _tool()
    a = _report()
    assert tool.compare(a, copy.deepcopy(a)) == []
    cases = {
        "top-1 class differs on 1 photos": lambda r: r["models"]["model.onnx"]["predictions"].update(
            {"b.JPEG": 8}
        ),
        "top-1 0.664 against 0.660": lambda r: r["models"]["model.onnx"].update(top1=0.660),
        "predict on the photos differs": lambda r: r["models"]["model.onnx"]["photos"].update(
            {"samoyed.jpg": "Pomeranian"}
        ),
        "camera differs": lambda r: r["camera"]["labels"].append("extra"),
        "eval --json differs": lambda r: r["cli_eval"].update(top1=0.6),
        "bad input 'missing model'": lambda r: r["bad_input"]["missing model"].update(lines=3),
        "not run in the second environment": lambda r: r["models"].clear(),
        "misreports": lambda r: r.update(info_truthful=False),
    }
    for expected, change in cases.items():
        b = copy.deepcopy(a)
        change(b)
        problems = tool.compare(a, b)
        assert any(expected in p for p in problems), (expected, problems)
    b = copy.deepcopy(a)
    b["models"]["model.onnx"]["top1"] = 0.6645  # within 0.2 point
    assert tool.compare(a, b) == []
