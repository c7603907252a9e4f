from __future__ import annotations

import logging
import threading

import cv2
import numpy as np
import onnx
import pytest

from edge_squeeze import Classifier, EdgeSqueezeError
from edge_squeeze.cli import main


@pytest.fixture()
def exported(tiny_int8_export):
    return tiny_int8_export


def test_predict_path_and_frame(exported, pattern_dataset):
    clf = Classifier(exported / "model.onnx")
    image = next((pattern_dataset / "val" / "class0").iterdir())
    by_path = clf.predict(str(image))
    by_frame = clf.predict(cv2.imread(str(image)))
    assert by_path == by_frame
    assert 0 <= by_path.index < 10 and by_path.label == f"class_{by_path.index}"
    assert len(by_path.topk) == 5 and by_path.topk[0][0] == by_path.index
    scores = [s for _, _, s in by_path.topk]
    assert scores == sorted(scores, reverse=True) and 0 < by_path.score <= 1


def test_predict_batch_matches_single(exported, pattern_dataset):
    clf = Classifier(exported / "model.onnx")
    images = [str(p) for p in sorted((pattern_dataset / "val" / "class1").iterdir())[:5]]
    batch = clf.predict_batch(images)
    assert [p.index for p in batch] == [clf.predict(i).index for i in images]


def test_repr_names_backend_precision_and_shape(exported):
    text = repr(Classifier(exported / "model.int8.onnx", backend="onnxruntime", int8_file="qdq"))
    assert "backend='onnxruntime'" in text and "precision='int8'" in text
    assert "input=Nx3x96x96 float32" in text and "runs=" not in text
    text = repr(Classifier(exported / "model.int8.onnx", backend="onnxruntime", int8_file="cpu"))
    assert "input=Nx96x96x4 uint8" in text  # the CPU file takes raw pixels (and alpha)
    assert "model.int8.onnx', runs='model.int8.cpu.onnx'" in text


def test_the_int8_file_is_chosen_by_measurement(exported, caplog, monkeypatch):
    from edge_squeeze.runtimes import select

    monkeypatch.setattr(select, "_INT8_FILE_CHOICE", {})
    with caplog.at_level(logging.INFO, logger="edge_squeeze"):
        Classifier(exported / "model.int8.onnx", backend="onnxruntime")
    assert "INT8 files timed here at batch 1" in caplog.text
    forced = Classifier(exported / "model.int8.onnx", backend="onnxruntime", int8_file="qdq")
    assert forced.info.model_path.endswith("model.int8.onnx")
    forced = Classifier(exported / "model.int8.onnx", backend="onnxruntime", int8_file="cpu")
    assert forced.info.model_path.endswith("model.int8.cpu.onnx")


def test_off_x86_the_cpu_file_runs_without_timing(exported, caplog, monkeypatch):
    """On aarch64 (a Jetson) "auto" takes the CPU file, the one ONNX Runtime runs on integer kernels
    (exactly there: ARM's do not saturate); timing under emulation or on a loaded board would
    otherwise decide at random."""
    import platform

    from edge_squeeze.runtimes import select

    assert select.int8_pair_sums_saturate("x86_64") and select.int8_pair_sums_saturate("AMD64")
    assert not select.int8_pair_sums_saturate("aarch64") and not select.int8_pair_sums_saturate("arm64")
    monkeypatch.setattr(select, "_INT8_FILE_CHOICE", {})
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with caplog.at_level(logging.INFO, logger="edge_squeeze"):
        clf = Classifier(exported / "model.int8.onnx", backend="onnxruntime")
    assert clf.info.model_path.endswith("model.int8.cpu.onnx")
    assert "timed" not in caplog.text
    qdq = Classifier(exported / "model.int8.onnx", backend="onnxruntime", int8_file="qdq")
    assert qdq.info.model_path.endswith("model.int8.onnx")


@pytest.mark.parametrize(
    "name, int8_file", [("model.onnx", "auto"), ("model.int8.onnx", "qdq"), ("model.int8.onnx", "cpu")]
)
def test_eight_threads_get_the_answers_serial_calls_get(exported, pattern_dataset, name, int8_file):
    """One Classifier shared by 8 threads, on the fp32 file and on each INT8 file."""
    clf = Classifier(exported / name, int8_file=int8_file)
    images = [cv2.imread(str(p)) for p in sorted((pattern_dataset / "val" / "class2").iterdir())[:8]]
    expected = [clf.predict(img).index for img in images]
    results, errors = {}, []

    def worker(k):
        try:
            results[k] = [clf.predict(img).index for img in images[k:] + images[:k]]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8
    assert all(r == expected[k:] + expected[:k] for k, r in results.items())


def test_wrong_shape_and_dtype(exported):
    clf = Classifier(exported / "model.onnx")
    with pytest.raises(EdgeSqueezeError, match="float32"):
        clf.infer(np.zeros((1, 3, 96, 96), np.float64))
    with pytest.raises(EdgeSqueezeError, match=r"Nx3x96x96"):
        clf.infer(np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(EdgeSqueezeError, match="shape"):
        clf.predict(np.zeros((5, 5, 7), np.uint8))


def test_missing_truncated_and_foreign_models(exported, tmp_path):
    with pytest.raises(EdgeSqueezeError, match="not found"):
        Classifier(tmp_path / "none.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes((exported / "model.onnx").read_bytes()[:100_000])
    with pytest.raises(EdgeSqueezeError, match="truncated"):
        Classifier(cut, backend="onnxruntime")
    text = tmp_path / "text.onnx"
    text.write_text("hello")
    with pytest.raises(EdgeSqueezeError, match="cannot load ONNX model"):
        Classifier(text, backend="onnxruntime")


def test_model_without_metadata_runs_with_defaults_and_a_warning(exported, tmp_path, caplog):
    model = onnx.load(str(exported / "model.onnx"))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with caplog.at_level(logging.WARNING, logger="edge_squeeze"), pytest.raises(
        EdgeSqueezeError, match="preprocessing makes"
    ):
        Classifier(bare, backend="onnxruntime")  # 96x96 model, ImageNet defaults are 224
    assert "no edge-squeeze metadata" in caplog.text


def test_cli_predict_json_and_errors(exported, pattern_dataset, capsys, tmp_path):
    import json

    image = str(next((pattern_dataset / "val" / "class3").iterdir()))
    assert main(["-q", "predict", str(exported / "model.onnx"), image, "--json", "--topk", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["image"] == image and len(rows[0]["topk"]) == 3
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert main(["-q", "predict", str(exported / "model.onnx"), str(bad)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"edge-squeeze: error: cannot decode image {bad}: not an image or a corrupt file "
        "(supported: .jpg, .jpeg, .png, .bmp, .webp, .tif, .tiff)"
    )


def test_cli_eval_json_from_class_folders(tmp_path, pattern_dataset, capsys, tiny_checkpoint):
    pytest.importorskip("torch")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(4)) + "\n")
    import torch

    from edge_squeeze.models import squeezenet1_1

    torch.manual_seed(0)
    path = tmp_path / "four.pth"
    torch.save(squeezenet1_1(num_classes=4).state_dict(), path)
    assert (
        main(
            [
                "-q",
                "export",
                "--arch",
                "squeezenet1_1",
                "--weights",
                str(path),
                "--labels",
                str(labels),
                "--image-size",
                "96",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "-q",
                "eval",
                str(tmp_path / "o" / "model.onnx"),
                "--data",
                str(pattern_dataset / "val"),
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 64 and 0.0 <= result["top1"] <= result["top5"] <= 1.0


import json  # noqa: E402


def test_the_classifier_lock_keeps_threads_apart_on_a_backend_that_is_not_thread_safe(
    tiny_int8_export, monkeypatch
):
    """TensorRT contexts and torch modules are not thread-safe: Classifier serialises them. A backend
    with one shared buffer, as they have, answers each thread its own batch only under that lock."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from edge_squeeze import classifier as classifier_module
    from edge_squeeze.runtimes.base import BackendInfo
    from edge_squeeze.runtimes.select import load_backend as real_load

    real = real_load(tiny_int8_export / "model.onnx", "onnxruntime")

    class SharedBufferBackend:
        metadata = real.metadata
        info = BackendInfo("pytorch", "fp32", "cpu", "input", real.info.input_shape, model_path="m")

        def infer(self, batch):
            self.buffer = batch.copy()
            time.sleep(0.002)
            held = self.buffer
            return np.repeat(
                held.reshape(len(held), -1).mean(1, keepdims=True), len(real.metadata.labels), axis=1
            )

        def close(self):
            pass

    monkeypatch.setattr(
        classifier_module, "load_backend", lambda path, backend, options: SharedBufferBackend()
    )
    clf = Classifier(tiny_int8_export / "model.onnx")
    assert isinstance(clf._lock, type(threading.Lock()))
    shape = real.info.input_shape[1:]

    def worker(i: int) -> bool:
        x = np.full((1, *shape), float(i), np.float32)
        return all(float(clf.infer(x)[0, 0]) == float(i) for _ in range(15))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(worker, range(8))), "a thread got another thread's answer"
    real.close()
