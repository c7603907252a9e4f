from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_squeeze.errors import EdgeSqueezeError  # noqa: E402
from edge_squeeze.evaluate import accuracy_from_logits, ground_truth, load_eval_set  # noqa: E402
from edge_squeeze.labels import load_labels  # noqa: E402
from edge_squeeze.models import load_model, squeezenet1_1  # noqa: E402
from edge_squeeze.weights import read_weights  # noqa: E402


def test_local_state_dict_loads_into_the_model(tiny_checkpoint):
    bundle = load_model(tiny_checkpoint, arch="squeezenet1_1")
    assert bundle.config.num_classes == 10
    assert bundle.labels.names[0] == "class_0"
    assert len(bundle.weights_sha256) == 64


def test_wrong_architecture_is_one_clear_error(tiny_checkpoint):
    with pytest.raises(EdgeSqueezeError, match="do not fit squeezenet1_0"):
        load_model(tiny_checkpoint, arch="squeezenet1_0")


def test_plain_state_dict_needs_an_arch(tiny_checkpoint):
    with pytest.raises(EdgeSqueezeError, match="--arch"):
        load_model(tiny_checkpoint)


def test_truncated_or_foreign_weights(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(EdgeSqueezeError, match="cannot read weights"):
        read_weights(truncated)
    with pytest.raises(EdgeSqueezeError, match="not found"):
        read_weights(tmp_path / "missing.pth")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(EdgeSqueezeError):
        read_weights(path)


def test_imagenet_weights_offline_error(monkeypatch, tmp_path):
    import urllib.request

    monkeypatch.setenv("EDGE_SQUEEZE_CACHE", str(tmp_path))

    def offline(*_a, **_k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(EdgeSqueezeError, match="offline") as exc:
        squeezenet1_1(weights="imagenet")
    assert "--weights PATH.pth" in str(exc.value) and "EDGE_SQUEEZE_CACHE" in str(exc.value)


def test_a_download_cut_off_midway_leaves_nothing_and_says_offline(monkeypatch, tmp_path):
    """The connection drops after the first megabyte: one line saying offline (not 'cannot write'),
    and no partial file of any name in the cache."""
    import urllib.request

    monkeypatch.setenv("EDGE_SQUEEZE_CACHE", str(tmp_path))

    class Dropping:
        def __init__(self) -> None:
            self.blocks = 0

        def read(self, size: int) -> bytes:
            self.blocks += 1
            if self.blocks > 1:
                raise ConnectionResetError(104, "Connection reset by peer")
            return b"\0" * size

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Dropping())
    with pytest.raises(EdgeSqueezeError, match="offline") as exc:
        squeezenet1_1(weights="imagenet")
    assert "cannot write" not in str(exc.value) and "Connection reset" in str(exc.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [], "no half-downloaded file may stay"


def test_labels_count_must_match(tmp_path, tiny_checkpoint):
    from edge_squeeze.labels import parse_labels

    with pytest.raises(EdgeSqueezeError, match="labels name 3 classes"):
        load_model(tiny_checkpoint, arch="squeezenet1_1", labels=parse_labels(["a", "b", "c"]))


def test_imagenet_weights_reach_reference_accuracy(shared):
    """PyTorch + the project's preprocessing: >= 64 % top-1 on the shared val set (reference 65.0 %)."""
    labels = load_labels(shared.synset_words)
    bundle = load_model(shared.weights_1_1, arch="squeezenet1_1", labels=labels)
    paths, truth = ground_truth(shared.val, labels)
    inputs, truth = load_eval_set(paths, truth, bundle.preprocess)
    with torch.no_grad():
        logits = np.concatenate(
            [bundle.model(torch.from_numpy(inputs[i : i + 50])).numpy() for i in range(0, len(inputs), 50)]
        )
    acc = accuracy_from_logits(logits, truth)
    assert acc.n == 500
    assert acc.top1 >= 0.64
    assert acc.top5 >= 0.85  # INTER_AREA resize: 86.0 % reference
