from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge_squeeze.bench import BenchOptions, format_table, summarize, time_configuration
from edge_squeeze.cli import main
from edge_squeeze.errors import EdgeSqueezeError


def test_summarize_percentiles():
    stats = summarize(list(range(1, 101)))
    assert stats["min"] == 1 and stats["max"] == 100 and stats["median"] == 50.5
    assert stats["p90"] == pytest.approx(90.1) and stats["p99"] == pytest.approx(99.01) and stats["n"] == 100


def test_time_configuration_excludes_warmup_and_counts_iterations():
    class FakeClassifier:
        backend = object()
        calls = 0

        def preprocess(self, images):
            return np.zeros((len(images), 3, 4, 4), np.float32)

        def infer(self, x):
            FakeClassifier.calls += 1
            return np.zeros((len(x), 5), np.float32)

    samples = time_configuration(
        FakeClassifier(), [np.zeros((4, 4, 3), np.uint8)] * 2, BenchOptions(warmup_s=0.05, iterations=7)
    )
    assert len(samples["end_to_end"]) == 7 and FakeClassifier.calls > 7  # warm-up ran, not recorded
    assert all(e >= i for e, i in zip(samples["end_to_end"], samples["infer"]))
    assert samples["h2d"] == []  # no device stages on the CPU


def test_bench_cli_writes_table_json_csv_plot(tmp_path, tiny_checkpoint, pattern_dataset, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "m"
    assert (
        main(
            [
                "-q",
                "export",
                "--arch",
                "squeezenet1_1",
                "--weights",
                str(tiny_checkpoint),
                "--image-size",
                "64",
                "--int8",
                "--calib",
                str(pattern_dataset / "train"),
                "--calib-count",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    args = [
        "-q",
        "bench",
        str(out / "model.onnx"),
        str(out / "model.int8.onnx"),
        "--batch",
        "1,4",
        "--warmup",
        "0.1",
        "--iterations",
        "12",
        "--json",
        str(tmp_path / "r.json"),
        "--csv",
        str(tmp_path / "r.csv"),
        "--plot",
        str(tmp_path / "r.png"),
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "p50 ms" in table and "model.int8" in table
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert len(rows) == 4
    for row in rows:
        assert {
            "model",
            "backend",
            "precision",
            "batch",
            "p50_ms",
            "p90_ms",
            "p95_ms",
            "p99_ms",
            "throughput",
        } <= set(row)
        assert row["stages"]["end_to_end"]["n"] == 12 and row["p50_ms"] <= row["p99_ms"]
    assert {r["precision"] for r in rows} == {"fp32", "int8"}
    assert len(list(csv.DictReader((tmp_path / "r.csv").open()))) == 4
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_rejects_bad_batches(tmp_path, capsys):
    for bad in ("0", "abc", "1,,-2", "5000"):
        with pytest.raises(SystemExit) as exc:
            main(["-q", "bench", str(tmp_path / "x.onnx"), "--batch", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("edge-squeeze: error: argument --batch")


def test_broken_model_is_not_benchmarked(tmp_path, tiny_checkpoint, monkeypatch):
    from edge_squeeze import bench

    class Broken:
        info = type(
            "I", (), {"max_batch": None, "name": "x", "device": "cpu", "precision": "fp32", "model_path": ""}
        )()
        labels = ("a", "b")

        def __init__(self, *a, **k):
            pass

        def preprocess(self, images):
            return np.zeros((len(images), 3, 4, 4), np.float32)

        def infer(self, x):
            return np.full((len(x), 2), np.nan, np.float32)

    monkeypatch.setattr("edge_squeeze.classifier.Classifier", Broken)
    with pytest.raises(EdgeSqueezeError, match="malformed output"):
        bench.bench_model(tmp_path / "m.onnx", BenchOptions(iterations=2), [np.zeros((8, 8, 3), np.uint8)])


def test_format_table_has_one_row_per_configuration():
    row = {
        "model": "a/model.onnx",
        "backend": "onnxruntime",
        "precision": "fp32",
        "batch": 1,
        "size_mb": 5.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "throughput": 900.0,
        "top1": 0.5,
    }
    lines = format_table([row, dict(row, batch=8)]).splitlines()
    assert len(lines) == 4 and "model.onnx" in lines[2] and "50.0%" in lines[2]


def test_paired_rounds_time_every_backend_each_round():
    from edge_squeeze.bench import paired_batch1, ratio_summary

    class Fake:
        def __init__(self):
            self.shapes = []

        def preprocess(self, frames):
            return np.zeros((len(frames), 3, 8, 8), np.float32)

        def infer(self, batch):
            self.shapes.append(batch.shape)
            return np.zeros((len(batch), 2), np.float32)

    clfs = {"a": Fake(), "b": Fake()}
    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    medians = paired_batch1(clfs, frames, rounds=3, block_s=0.01)
    assert set(medians) == {"a", "b"} and all(len(v) == 3 and min(v) > 0 for v in medians.values())
    assert {s for c in clfs.values() for s in c.shapes} == {(1, 3, 8, 8)}
    summary = ratio_summary([2.0, 6.0, 3.0], [1.0, 2.0, 1.0])
    assert summary == {"median": 3.0, "min": 2.0, "max": 3.0, "rounds": 3}
