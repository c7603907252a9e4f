"""``edge-squeeze selftest``: its report, its verdicts and trtexec's numbers, on the CPU (TensorRT's
own rows need a GPU with TensorRT and have not run here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_squeeze.cli import main
from edge_squeeze.selftest import parse_trtexec, trtexec_command, verdict

TRTEXEC_85 = """[08/09/2022-06:54:41] [I] Throughput: 23.6927 qps
[08/09/2022-06:54:41] [I] GPU Compute Time: min = 41.1855 ms, max = 43.0625 ms, mean = 42.0431 ms, median = 41.9604 ms, percentile(99%) = 43.0625 ms
&&&& PASSED TensorRT.trtexec [TensorRT v8502]"""
TRTEXEC_10 = """[09/02/2024-17:14:34] [I] Throughput: 1201.3 qps
[09/02/2024-17:14:34] [I] GPU Compute Time: min = 0.803711 ms, max = 4.93372 ms, mean = 0.818735 ms, median = 0.809937 ms, percentile(90%) = 0.811035 ms, percentile(95%) = 0.811035 ms, percentile(99%) = 0.812012 ms"""


def test_trtexec_summary_is_read_from_its_own_output():
    assert parse_trtexec(TRTEXEC_85) == {
        "min_ms": 41.1855,
        "max_ms": 43.0625,
        "mean_ms": 42.0431,
        "median_ms": 41.9604,
        "throughput_qps": 23.6927,
    }
    assert parse_trtexec(TRTEXEC_10)["median_ms"] == 0.809937
    assert parse_trtexec("[E] Error[1]: engine deserialization failed") is None
    command = trtexec_command("trtexec", Path("m.engine"), "input", (3, 224, 224), cuda_graph=True)
    assert "--shapes=input:1x3x224x224" in command and "--loadEngine=m.engine" in command
    assert command[-1] == "--useCudaGraph"


def test_verdicts_hold_each_precision_to_its_own_bound():
    assert verdict("fp32", 0.996, 0.65, 0.65) == []
    assert verdict("fp32", 0.98, 0.65, 0.65) and verdict("fp16", 0.97, 0.65, 0.65)
    assert verdict("int8", 0.93, 0.64, 0.65) == []
    assert any("points under" in p for p in verdict("int8", 0.93, 0.62, 0.65))
    assert any("agreement" in p for p in verdict("int8", 0.85, 0.65, 0.65))


@pytest.fixture()
def labelled(tmp_path, pattern_dataset) -> Path:
    """Pattern images under folders named as the tiny model's labels (class_0 ...)."""
    root = tmp_path / "photos"
    for cls in range(4):
        target = root / f"class_{cls}"
        target.mkdir(parents=True)
        for image in sorted((pattern_dataset / "val" / f"class{cls}").iterdir())[:3]:
            shutil.copy(image, target / image.name)
    return root


def test_without_tensorrt_the_report_says_why_and_the_command_fails_in_one_line(
    tiny_int8_export, labelled, tmp_path, capsys
):
    from edge_squeeze.runtimes.tensorrt_backend import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present")
    out = tmp_path / "report"
    code = main(
        [
            "-q",
            "selftest",
            str(tiny_int8_export),
            "--data",
            str(labelled),
            "--out",
            str(out),
            "--iterations",
            "5",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.strip().splitlines()
    assert errors == [f"edge-squeeze: error: TensorRT selftest did not pass; report in {out}/selftest.md"]
    report = json.loads((out / "selftest.json").read_text())
    assert report["images"] == 12 and 0.0 <= report["reference"]["top1"] <= 1.0
    assert [(r["precision"], r["status"]) for r in report["engines"]] == [
        ("fp32", "not run"),
        ("fp16", "not run"),
        ("int8", "not run"),
    ]
    assert report["engines"][0]["problems"] == [reason] and report["passed"] is False
    text = (out / "selftest.md").read_text()
    assert "**FAIL**" in text and "| fp16 | not run |" in text


def test_a_passing_run_reports_every_measurement(tiny_int8_export, labelled, tmp_path, capsys, monkeypatch):
    """The report and the exit code, with the TensorRT measurement stood in for."""
    import edge_squeeze.runtimes.tensorrt_backend as trtb
    from edge_squeeze import selftest

    def measured(options, precision, reference, inputs, x1, meter):
        return {
            "precision": precision,
            "top1": reference.top1,
            "agreement_with_ort_fp32": 1.0,
            "batch1": {"p50_ms": 0.9, "p99_ms": 1.2, "gpu_infer_p50_ms": 0.4},
            "batch1_cuda_graph": {"p50_ms": 0.6, "p99_ms": 0.8, "gpu_infer_p50_ms": 0.4},
            "trtexec": {"median_ms": 0.41},
            "problems": [],
            "status": "pass",
        }

    monkeypatch.setattr(trtb, "unavailable_reason", lambda: None)
    monkeypatch.setattr(selftest, "_engine_row", measured)
    out = tmp_path / "report"
    assert main(["-q", "selftest", str(tiny_int8_export), "--data", str(labelled), "--out", str(out)]) == 0
    assert "TensorRT selftest passed" in capsys.readouterr().out
    text = (out / "selftest.md").read_text()
    assert "**PASS**" in text and "| int8 | pass |" in text and "0.410" in text


def test_selftest_needs_an_export_folder(tmp_path, labelled, capsys):
    assert main(["selftest", str(tmp_path), "--data", str(labelled)]) == 1
    assert "has no model.onnx" in capsys.readouterr().err
