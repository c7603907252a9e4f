"""tools/deploy_check.py's comparison, on made-up reports (its runs are in .ci/run and benchmarks/)."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
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


def test_between_x86_and_arm_int8_files_agree_within_the_tolerance_and_the_rest_exactly():
    """ARM's integer kernels do not saturate where x86's AVX2 ones may: a few photos apart is the
    kernels, many is a changed exporter (a stale aarch64 results file)."""
    tool = _tool()
    names = [f"p{i}.JPEG" for i in range(100)]
    a = _report()
    a["models"]["model.int8.cpu.onnx"] = {
        "top1": 0.65,
        "predictions": dict.fromkeys(names, 1),
        "photos": {"samoyed.jpg": "Samoyed"},
    }
    a["exact"] = {
        "model.int8.onnx": {"predictions": dict.fromkeys(names, 2), "ties": []},
        "model.int8.cpu.onnx": {"predictions": dict.fromkeys(names, 1), "ties": ["p9.JPEG"]},
    }
    arm = copy.deepcopy(a)
    arm["machine"] = "aarch64"
    arm["int8_auto_choice"] = "model.int8.cpu.onnx"
    # a tie: either class is the exact answer
    arm["exact"]["model.int8.cpu.onnx"]["predictions"]["p9.JPEG"] = 3
    arm["models"]["model.int8.cpu.onnx"]["predictions"]["p0.JPEG"] = 5
    arm["models"]["model.int8.cpu.onnx"]["top1"] = 0.645
    arm["camera"]["labels"][0] = "kit fox"
    arm["cli_eval"]["top1"] = 0.652
    assert tool.compare(a, arm) == []
    x86 = dict(copy.deepcopy(arm), machine="x86_64")  # the same differences on one CPU family fail
    assert len(tool.compare(a, x86)) == 4
    stale = copy.deepcopy(arm)
    stale["models"]["model.int8.cpu.onnx"]["predictions"].update(dict.fromkeys(names[:5], 7))
    assert any("differs on 5 photos" in p for p in tool.compare(a, stale))
    stale = copy.deepcopy(arm)
    stale["exact"]["model.int8.onnx"]["predictions"]["p1.JPEG"] = 9  # each file's exact arithmetic
    assert any("model.int8.onnx (exact arithmetic)" in p for p in tool.compare(a, stale))  # matches
    stale = copy.deepcopy(arm)  # photo for photo, ties aside
    stale["exact"]["model.int8.cpu.onnx"]["predictions"]["p1.JPEG"] = 9
    assert any("model.int8.cpu.onnx (exact arithmetic)" in p for p in tool.compare(a, stale))
    old_format = {k: v for k, v in arm.items() if k != "exact"}  # a results file from an older tool
    assert "model.int8.onnx (exact arithmetic): not run in the second environment" in tool.compare(
        a, old_format
    )
    stale = dict(copy.deepcopy(arm), int8_auto_choice="model.int8.onnx")  # off x86 "auto" runs the CPU file
    assert any("ran model.int8.onnx, not model.int8.cpu.onnx" in p for p in tool.compare(a, stale))


def test_a_tie_is_two_best_logits_within_logit_tie_wherever_they_sit_in_the_row():
    import numpy as np

    tool = _tool()
    logits = np.array(
        [
            [5.0, 1.0, 5.0 - tool.LOGIT_TIE / 2, 0.0],  # tied, the best two apart
            [0.0, 9.0, 2.0, 8.0],  # clear
            [3.0, 3.0, 3.0, 3.0],  # all tied
        ],
        dtype=np.float32,
    )

    class Session:
        def get_inputs(self):
            return [type("Input", (), {"name": "x"})()]

        def run(self, _outputs, feed):
            return [logits[: len(feed["x"])]]

    result = tool._top1(Session(), ["a", "b", "c"], np.zeros((3, 1), np.float32))
    assert result["predictions"] == {"a": 0, "b": 1, "c": 0}
    assert result["ties"] == ["a", "c"]


def test_a_missing_corrupt_or_unwritable_file_is_one_line_naming_it(tmp_path):
    corrupt = tmp_path / "main.json"
    corrupt.write_text("{")
    missing = tmp_path / "none.json"
    good = TOOL.parents[1] / "benchmarks" / "results" / "aarch64.json"  # a real results file
    folder_is_a_file = tmp_path / "a-file"
    folder_is_a_file.write_text("")
    cases = [
        ([corrupt, corrupt], "main.json is not a results file"),
        ([missing, missing], "none.json"),
        ([good, good, "--markdown", folder_is_a_file / "summary.md"], "cannot write"),
    ]
    for args, named in cases:
        result = subprocess.run(
            [sys.executable, str(TOOL), "compare", *map(str, args)], capture_output=True, text=True
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("deploy_check: ") and named in result.stderr
