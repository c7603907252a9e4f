from __future__ import annotations

import struct

import numpy as np
import pytest

from edge_squeeze.cli import main
from edge_squeeze.compression import (
    MAGIC,
    compress_tensor,
    decompress_tensor,
    deep_compression_layers,
    huffman_decode,
    huffman_encode,
    huffman_lengths,
    read_deep_compression,
    read_esqz,
)
from edge_squeeze.errors import EdgeSqueezeError


def test_huffman_round_trip_and_optimality():
    rng = np.random.default_rng(0)
    symbols = rng.choice(8, size=5000, p=[0.5, 0.2, 0.1, 0.08, 0.06, 0.03, 0.02, 0.01])
    lengths = huffman_lengths(np.bincount(symbols, minlength=8))
    data = huffman_encode(symbols, lengths)
    np.testing.assert_array_equal(huffman_decode(data, lengths, len(symbols)), symbols)
    probs = np.bincount(symbols) / len(symbols)
    entropy = -(probs * np.log2(probs)).sum()
    assert entropy <= len(data) * 8 / len(symbols) < entropy + 1


def test_sparse_tensor_round_trip_matches_pruning_and_sharing():
    rng = np.random.default_rng(1)
    weight = rng.normal(0, 0.1, (32, 16, 3, 3)).astype(np.float32)
    entry, body = compress_tensor(weight, sparsity=0.6, bits=5, index_bits=4)
    restored = decompress_tensor(entry, body)
    kept = restored != 0
    assert 0.38 < kept.mean() < 0.42
    assert len(np.unique(restored[0])) <= 2**5  # one shared codebook (scaled per channel)
    assert np.abs(restored[kept] - weight[kept]).mean() < 0.05 * np.abs(weight[kept]).mean()
    # long runs of pruned weights are bridged by filler entries
    sparse = np.zeros((4, 64, 1, 1), np.float32)
    sparse[0, 0], sparse[3, 63] = 1.0, -1.0
    e, b = compress_tensor(sparse, 0.0, 4, 4)
    np.testing.assert_allclose(decompress_tensor(e, b), sparse, atol=1e-3)


@pytest.fixture(scope="module")
def esqz(tmp_path_factory, tiny_checkpoint):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("esqz") / "tiny.esqz"
    assert (
        main(
            [
                "-q",
                "compress",
                "--arch",
                "squeezenet1_1",
                "--weights",
                str(tiny_checkpoint),
                "--bits",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_esqz_carries_labels_preprocessing_and_near_identical_weights(esqz, tiny_checkpoint):
    import torch

    model = read_esqz(esqz)
    assert len(model.labels) == 10 and model.preprocess.crop == 224 and model.config["version"] == "1_1"
    original = torch.load(tiny_checkpoint, weights_only=True)
    for name, value in original.items():
        ref = value.numpy()
        err = np.abs(model.state_dict[name] - ref).max()
        assert err <= 0.02 * np.abs(ref).max() + 1e-3, name


def test_classifier_and_export_load_esqz(esqz, tmp_path):
    from edge_squeeze import Classifier

    clf = Classifier(esqz)
    assert clf.info.name == "pytorch" and len(clf.labels) == 10
    assert main(["-q", "export", "--weights", str(esqz), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "model.onnx").is_file()


def test_bad_esqz_files(esqz, tmp_path):
    data = esqz.read_bytes()
    cases = {
        "magic.esqz": b"NOPE" + data[4:],
        "truncated.esqz": data[: len(data) // 2],
        "header.esqz": data[:12],
        "newer.esqz": MAGIC + struct.pack("<H", 99) + data[6:],
    }
    messages = {
        "magic.esqz": "wrong magic",
        "truncated.esqz": "truncated",
        "header.esqz": "truncated",
        "newer.esqz": "version 99",
    }
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(EdgeSqueezeError, match=messages[name]):
            read_esqz(path)


def test_cli_bad_esqz_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.esqz"
    bad.write_bytes(b"garbage!")
    assert main(["-q", "eval", str(bad), "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wrong magic" in err[0]


def test_deep_compression_layout_adds_up():
    layers = deep_compression_layers()
    assert len(layers) == 26
    assert layers[0] == ("conv1", "features.0", (96, 3, 7, 7))
    assert layers[-1] == ("conv10", "classifier.1", (1000, 512, 1, 1))
    assert sum(int(np.prod(s)) for _, _, s in layers) + sum(s[0] for _, _, s in layers) == 1_248_424


def test_reads_the_papers_file(shared):
    state = read_deep_compression(shared.deep_compression)
    nonzero = sum(int((v != 0).sum()) for k, v in state.items() if k.endswith("weight"))
    assert nonzero == 415_921
    assert sum(v.size for v in state.values()) == 1_248_424


def test_truncated_papers_file(shared, tmp_path):
    cut = tmp_path / "cut.net"
    cut.write_bytes(shared.deep_compression.read_bytes()[:100_000])
    with pytest.raises(EdgeSqueezeError, match="truncated or another model"):
        read_deep_compression(cut)


@pytest.mark.slow
def test_papers_model_classifies_with_its_caffe_conventions(shared):
    from edge_squeeze import Classifier

    clf = Classifier(shared.deep_compression)
    assert clf.spec.crop == 227 and clf.spec.channel_order == "BGR" and clf.spec.scale == 1.0
    assert clf.predict(str(shared.photos / "samoyed.jpg")).label == "Samoyed"
