from __future__ import annotations

import dataclasses
import json
import logging
import struct
import zlib

import numpy as np
import pytest

from edge_squeeze.cli import main
from edge_squeeze.compress.esqz import MAGIC, decompress_tensor, encode_shared, read_esqz
from edge_squeeze.compress.huffman import huffman_decode, huffman_encode, huffman_lengths
from edge_squeeze.compress.netfile import deep_compression_layers, read_deep_compression
from edge_squeeze.compress.sharing import share_weights
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
    entry, body = encode_shared(share_weights(weight, sparsity=0.6, bits=5), index_bits=4)
    restored = decompress_tensor(entry, body)
    kept = restored != 0
    assert 0.38 < kept.mean() < 0.42
    assert len(np.unique(restored[0])) <= 2**5  # one shared codebook (scaled per channel)
    assert np.abs(restored[kept] - weight[kept]).mean() < 0.05 * np.abs(weight[kept]).mean()
    # long runs of pruned weights are bridged by filler entries
    sparse = np.zeros((4, 64, 1, 1), np.float32)
    sparse[0, 0], sparse[3, 63] = 1.0, -1.0
    e, b = encode_shared(share_weights(sparse, 0.0, 4), 4)
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

    clf = Classifier(esqz)  # ONNX Runtime on the decompressed graph: no torch needed
    assert clf.info.name == "onnxruntime" and len(clf.labels) == 10
    reference = Classifier(esqz, backend="pytorch")
    x = clf.preprocess(np.random.default_rng(0).integers(0, 255, (3, 240, 260, 3), dtype=np.uint8))
    np.testing.assert_allclose(clf.infer(x), reference.infer(x), rtol=1e-4, atol=1e-4)
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


def test_damaged_weights_fail_the_checksum(esqz, tmp_path):
    data = bytearray(esqz.read_bytes())
    (head_len,) = struct.unpack("<I", data[6:10])
    first = json.loads(zlib.decompress(bytes(data[10 : 10 + head_len])))["tensors"][0]
    assert first["kind"] == "sparse"  # its body opens with the float32 codebook
    data[10 + head_len + 4] ^= 0x40  # codebook entry 1: decodes fine, to another value
    path = tmp_path / "damaged.esqz"
    path.write_bytes(bytes(data))
    with pytest.raises(EdgeSqueezeError, match=r"damaged\.esqz is corrupt: its weights fail their checksum"):
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


@pytest.mark.parametrize(
    "arch, bypass, padding, size",
    [
        ("squeezenet1_0", "none", 1, 227),
        ("squeezenet1_1", "none", 0, 224),
        ("squeezenet1_0", "simple", 0, 96),
        ("squeezenet1_1", "complex", 0, 96),
    ],
)
def test_the_torch_free_graph_computes_what_the_torch_model_does(arch, bypass, padding, size):
    """The fp32 ONNX graph built from a config and numpy weights (how .esqz runs without torch)
    against the PyTorch SqueezeNet with the same weights."""
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from edge_squeeze.config import config_for
    from edge_squeeze.models import SqueezeNet
    from edge_squeeze.onnx_graph import squeezenet_graph

    torch.manual_seed(0)
    config = config_for(arch, num_classes=7, bypass=bypass, conv10_padding=padding)
    model = SqueezeNet(config).eval()
    with torch.no_grad():  # the bypassed expands start at zero: give every weight a value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    session = ort.InferenceSession(
        squeezenet_graph(config, state).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)


def test_papers_model_classifies_with_its_caffe_conventions(shared):
    from edge_squeeze import Classifier

    clf = Classifier(shared.deep_compression)
    assert clf.info.name == "onnxruntime"
    assert clf.spec.crop == 227 and clf.spec.channel_order == "BGR" and clf.spec.scale == 1.0
    assert clf.predict(str(shared.photos / "samoyed.jpg")).label == "Samoyed"


# --- calibrated sharing -------------------------------------------------------------------------


def _correlated_layer(seed=0, out=24, d=48, n=2000):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    x = np.maximum(rng.normal(size=(n, d)) @ mixing + 0.3, 0)  # ReLU'd, correlated, non-zero mean
    w = rng.normal(0, 0.1, (out, d))
    return w, x


def test_compensated_rounding_keeps_layer_outputs_better_than_nearest():
    from edge_squeeze.compress.calibrated import round_with_compensation
    from edge_squeeze.compress.sharing import kmeans_1d

    w, x = _correlated_layer()
    h = x.T @ x / len(x)
    keep = np.ones(w.shape, bool)
    centroids, _ = kmeans_1d(w.ravel(), 7)
    codebook = np.concatenate([[0.0], centroids])
    bounds = (codebook[2:] + codebook[1:-1]) / 2
    nearest = codebook[1 + np.searchsorted(bounds, w)]
    compensated = codebook[round_with_compensation(w, keep, codebook, h)]

    def output_error(q):
        return np.mean(((w - q) @ x.T) ** 2)

    assert output_error(compensated) < 0.7 * output_error(nearest)
    # it trades weight error for output error: the weights themselves move further
    assert np.mean((w - compensated) ** 2) > np.mean((w - nearest) ** 2)


def test_compensated_rounding_respects_the_pruning_mask():
    from edge_squeeze.compress.calibrated import round_with_compensation

    w, x = _correlated_layer(seed=1)
    keep = np.random.default_rng(2).random(w.shape) > 0.4
    codebook = np.array([0.0, -0.2, -0.05, 0.05, 0.2])
    codes = round_with_compensation(w, keep, codebook, x.T @ x / len(x))
    assert (codes[~keep] == 0).all() and (codes[keep] > 0).all()


def test_float_output_target_undoes_upstream_error():
    from edge_squeeze.compress.calibrated import float_output_target

    w, x_ref = _correlated_layer(seed=3)
    # the compressed model feeds this layer distorted inputs: a linear mix of the float ones
    rng = np.random.default_rng(4)
    mix = np.eye(w.shape[1]) + 0.05 * rng.normal(size=(w.shape[1], w.shape[1]))
    x = x_ref @ mix.T
    h, c = x.T @ x / len(x), x_ref.T @ x / len(x)
    target = float_output_target(w, h, c)
    want = x_ref @ w.T
    assert np.mean((x @ target.T - want) ** 2) < 0.05 * np.mean((x @ w.T - want) ** 2)
    # where the inputs agree, the target is the weight itself
    h_ref = x_ref.T @ x_ref / len(x_ref)
    np.testing.assert_allclose(float_output_target(w, h_ref, h_ref), w, atol=1e-12)


def test_calibrated_esqz_follows_the_float_model_closer(tiny_checkpoint, pattern_dataset, tmp_path):
    import torch

    from edge_squeeze.compress import CompressOptions, write_esqz
    from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images
    from edge_squeeze.models import load_model

    def bundle():
        return load_model(tiny_checkpoint, arch="squeezenet1_1", image_size=64)

    reference = bundle()
    images = CalibrationSet(select_calibration_images(pattern_dataset / "train"), reference.preprocess).data
    calib, held_out = images[::2][:48], torch.from_numpy(images[1::2][:48])
    with torch.no_grad():
        want = reference.model(held_out)
    errors = {}
    for name, calibration in (("nearest", None), ("calibrated", calib)):
        b = bundle()
        path = tmp_path / f"{name}.esqz"
        write_esqz(
            path,
            b.model.state_dict(),
            b.config.to_dict(),
            b.labels,
            b.preprocess,
            CompressOptions(bits=3, layer_bits=(("classifier", 4),)),
            model=b.model,
            calibration=calibration,
        )
        restored = read_esqz(path)
        assert restored.compression["calibration_images"] == (0 if calibration is None else 48)
        assert restored.compression["layer_bits"] == [["classifier", 4]]
        model = bundle().model
        model.load_state_dict({k: torch.from_numpy(v) for k, v in restored.state_dict.items()})
        with torch.no_grad():
            errors[name] = float(torch.mean((model(held_out) - want) ** 2))
    assert errors["calibrated"] < 0.5 * errors["nearest"]


def test_cli_compress_calibrated_and_bad_layer_bits(narrow_checkpoint, pattern_dataset, tmp_path, capsys):
    out = tmp_path / "c.esqz"
    args = ["-q", "compress", "--weights", str(narrow_checkpoint), "--out", str(out)]
    calib = ["--calib", str(pattern_dataset / "train"), "--calib-count", "16"]
    assert main([*args, "--bits", "4", "--layer-bits", "classifier=5", *calib]) == 0
    assert read_esqz(out).compression["calibration_images"] == 16
    budget = out.stat().st_size
    fitted = tmp_path / "fitted.esqz"
    assert main([*args[:-1], str(fitted), "--bits", "8", "--max-bytes", str(budget)]) == 0
    assert fitted.stat().st_size <= budget and read_esqz(fitted).compression["layer_bits"]
    with pytest.raises(SystemExit) as malformed:  # a malformed command line: exit 2
        main([*args, "--layer-bits", "classifier"])
    assert malformed.value.code == 2
    assert main([*args, "--calib", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any("PREFIX=BITS" in line for line in err)
    assert any("holds no images" in line or "not found" in line for line in err)


@pytest.mark.slow
def test_papers_model_under_500kb_within_two_points(shared, tmp_path):
    """The issue's size target for SqueezeNet 1.0: the paper's weights at 6 bits, calibrated
    (benchmarks/results/compression.md: 428,973 bytes, 62.6 % against 62.6 %)."""
    from edge_squeeze import Classifier
    from edge_squeeze.evaluate import evaluate

    out = tmp_path / "squeezenet1_0.esqz"
    calib = ["--calib", str(shared.calib)]  # all 200 (the default --calib-count)
    assert (
        main(
            [
                "-q",
                "compress",
                "--weights",
                str(shared.deep_compression),
                "--bits",
                "6",
                *calib,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size <= 500_000
    base = Classifier(shared.deep_compression, backend="pytorch")
    small = Classifier(out, backend="pytorch")
    base_top1 = evaluate(base.infer, shared.val, base.labels, base.spec).top1
    small_top1 = evaluate(small.infer, shared.val, small.labels, small.spec).top1
    assert small_top1 >= base_top1 - 0.02


def test_imagenet_labels_are_named_not_stored(tmp_path):
    from edge_squeeze.compress import CompressOptions, write_esqz
    from edge_squeeze.labels import Labels, imagenet_labels
    from edge_squeeze.preprocess import PreprocessSpec

    state = {"conv.weight": np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)}
    sizes = {}
    for name, labels in (
        ("imagenet", imagenet_labels()),
        ("custom", Labels(names=[f"{n} (mine)" for n in imagenet_labels().names])),
    ):
        path = tmp_path / f"{name}.esqz"
        sizes[name] = write_esqz(path, state, {}, labels, PreprocessSpec.imagenet(), CompressOptions(bits=2))
        assert read_esqz(path).labels == labels
    assert sizes["imagenet"] < 1000 < 5000 < sizes["custom"]


def test_fit_layer_bits_lowers_the_big_layer_first(tmp_path):
    from edge_squeeze.compress import CompressOptions, fit_layer_bits, write_esqz
    from edge_squeeze.labels import Labels
    from edge_squeeze.preprocess import PreprocessSpec

    rng = np.random.default_rng(0)
    state = {
        "small.weight": rng.normal(size=(16, 8, 3, 3)).astype(np.float32),
        "big.weight": rng.normal(size=(256, 128, 1, 1)).astype(np.float32),
        "big.bias": np.zeros(256, np.float32),
    }
    args = ({}, Labels.numbered(4), PreprocessSpec.imagenet())
    full = write_esqz(tmp_path / "full.esqz", state, *args, CompressOptions(bits=6))
    budget = full - 5000
    fitted = fit_layer_bits(state, *args, CompressOptions(bits=6), budget)
    assert dict(fitted.layer_bits).keys() == {"big"} and dict(fitted.layer_bits)["big"] < 6
    size = write_esqz(tmp_path / "fit.esqz", state, *args, CompressOptions(bits=6), max_bytes=budget)
    assert size <= budget
    assert read_esqz(tmp_path / "fit.esqz").compression["layer_bits"] == [list(p) for p in fitted.layer_bits]
    with pytest.raises(EdgeSqueezeError, match="cannot fit"):
        write_esqz(tmp_path / "no.esqz", state, *args, CompressOptions(bits=6), max_bytes=2000)
    assert not (tmp_path / "no.esqz").exists()


def test_calibrated_sharing_keeps_pruned_weights_pruned(tiny_checkpoint, pattern_dataset):
    torch = pytest.importorskip("torch")
    from edge_squeeze.compress import CompressOptions, compress_state_dict
    from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images
    from edge_squeeze.models import load_model

    bundle = load_model(tiny_checkpoint, arch="squeezenet1_1", image_size=64)
    model = bundle.model
    with torch.no_grad():  # a pruned file's zeros, as in the paper's SqueezeNet 1.0
        for p in model.parameters():
            if p.ndim == 4:
                p[torch.rand_like(p) < 0.6] = 0.0
    zeros = {n: (p == 0).clone() for n, p in model.named_parameters() if p.ndim == 4}
    images = CalibrationSet(select_calibration_images(pattern_dataset / "train", 8), bundle.preprocess).data
    compress_state_dict(model.state_dict(), CompressOptions(bits=4), model, images)
    for name, p in model.named_parameters():
        if name in zeros:
            assert bool((p[zeros[name]] == 0).all()), name


# --- uniform grids ------------------------------------------------------------------------------


def test_uniform_grid_shares_on_steps_of_the_channel_maximum():
    from edge_squeeze.compress.esqz import decompress_tensor
    from edge_squeeze.compress.sharing import Grid

    rng = np.random.default_rng(5)
    weight = rng.laplace(0, 0.05, (12, 8, 3, 3)).astype(np.float32)
    shared = share_weights(weight, 0.0, bits=8, levels=3)  # bits is the grid's, not the argument
    assert shared.bits == Grid.uniform(3).bits == 3 and str(Grid.uniform(3)) == "uniform 7"
    assert shared.codes.min() >= 0 and shared.codes.max() <= 6 and (shared.codes == 0).any()
    scale = shared.scales.astype(np.float32)[:, None, None, None]
    steps = shared.weight() / scale * 3
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    # nearest step: error at most half a step of each channel's maximum
    assert (np.abs(shared.weight() - weight) <= scale / 6 + 1e-3).all()
    entry, body = encode_shared(shared, 4)
    np.testing.assert_array_equal(decompress_tensor(entry, body), shared.weight())


def _tiny_model(checkpoint):
    from edge_squeeze.models import load_model

    return load_model(checkpoint)


def _budget_case(checkpoint, dataset, tmp_path):
    """8 calibration images for the tiny SqueezeNet 1.1, the ``write_esqz`` arguments after the state
    dict (4-bit options last), and a budget of 80 % of its uncalibrated 4-bit file."""
    from edge_squeeze.compress import CompressOptions, write_esqz
    from edge_squeeze.export.calibration import CalibrationSet, select_calibration_images

    b = _tiny_model(checkpoint)
    images = CalibrationSet(select_calibration_images(dataset / "train", 8), b.preprocess).data
    args = (b.config.to_dict(), b.labels, b.preprocess, CompressOptions(bits=4))
    return images, args, int(write_esqz(tmp_path / "full.esqz", b.model.state_dict(), *args) * 0.8)


def _write_calibrated(path, checkpoint, images, args, max_bytes, **kwargs):
    """A fresh tiny model's calibrated file (calibration changes the model it is given)."""
    from edge_squeeze.compress import writer as compression

    b = _tiny_model(checkpoint)
    return compression.write_esqz(
        path, b.model.state_dict(), *args, model=b.model, calibration=images, max_bytes=max_bytes, **kwargs
    )


def test_calibrated_budget_is_refitted_when_the_first_file_overshoots(
    narrow_checkpoint, pattern_dataset, tmp_path, monkeypatch, caplog
):
    pytest.importorskip("torch")
    from edge_squeeze.compress import writer as compression

    measure = compression.measure_layer_costs

    def understated(*args, **kwargs):  # a measurement that promises fewer bytes than the codes take
        return [dataclasses.replace(c, bytes=int(c.bytes * 0.7)) for c in measure(*args, **kwargs)]

    monkeypatch.setattr(compression, "measure_layer_costs", understated)
    images, args, budget = _budget_case(narrow_checkpoint, pattern_dataset, tmp_path)
    with caplog.at_level(logging.INFO, logger="edge_squeeze"):
        size = _write_calibrated(tmp_path / "fit.esqz", narrow_checkpoint, images, args, budget)
    assert "refitting" in caplog.text and size <= budget


def test_calibrated_budget_that_already_fits_skips_the_measurement(
    narrow_checkpoint, pattern_dataset, tmp_path, monkeypatch
):
    pytest.importorskip("torch")
    from edge_squeeze.compress import writer as compression

    def never(*args, **kwargs):
        raise AssertionError("a budget the full-width file meets needs no sensitivity measurement")

    monkeypatch.setattr(compression, "measure_layer_costs", never)
    images, args, _ = _budget_case(narrow_checkpoint, pattern_dataset, tmp_path)
    size = _write_calibrated(tmp_path / "fit.esqz", narrow_checkpoint, images, args, 10**8)
    assert size <= 10**8 and not read_esqz(tmp_path / "fit.esqz").compression["layer_levels"]


def test_calibrated_budget_on_a_given_measurement_writes_the_same_file(
    narrow_checkpoint, pattern_dataset, tmp_path, monkeypatch
):
    pytest.importorskip("torch")
    from edge_squeeze.compress import writer as compression

    images, args, budget = _budget_case(narrow_checkpoint, pattern_dataset, tmp_path)
    costs = compression.measure_layer_costs(_tiny_model(narrow_checkpoint).model, images, args[-1])
    measured = _write_calibrated(tmp_path / "measured.esqz", narrow_checkpoint, images, args, budget)

    def never(*args, **kwargs):
        raise AssertionError("the given measurement should have been used")

    monkeypatch.setattr(compression, "measure_layer_costs", never)
    given = _write_calibrated(
        tmp_path / "given.esqz", narrow_checkpoint, images, args, budget, layer_costs=costs
    )
    assert given == measured <= budget
    assert (tmp_path / "given.esqz").read_bytes() == (tmp_path / "measured.esqz").read_bytes()


def test_calibrated_budget_refuses_a_measurement_of_another_model(
    narrow_checkpoint, pattern_dataset, tmp_path
):
    pytest.importorskip("torch")
    from edge_squeeze.compress import Grid, LayerCost

    images, args, budget = _budget_case(narrow_checkpoint, pattern_dataset, tmp_path)
    other = [LayerCost("features.0.weight", Grid(4), 100, 0.1)]  # a model with a single conv
    with pytest.raises(EdgeSqueezeError, match="another model"):
        _write_calibrated(tmp_path / "x.esqz", narrow_checkpoint, images, args, budget, layer_costs=other)
    assert not (tmp_path / "x.esqz").exists()
