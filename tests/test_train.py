"""Training on a procedurally generated image set made here: accuracy rises far above chance in a few
epochs, and the checkpoint exports to INT8 whose Classifier agrees with the checkpoint itself."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_squeeze import Classifier  # noqa: E402
from edge_squeeze.cli import main  # noqa: E402
from edge_squeeze.errors import EdgeSqueezeError  # noqa: E402
from edge_squeeze.train import TrainOptions, find_splits, train  # noqa: E402


@pytest.fixture(scope="module")
def trained(pattern_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = train(
        TrainOptions(
            data=pattern_dataset,
            out=out,
            arch="squeezenet1_1",
            image_size=64,
            epochs=6,
            batch_size=16,
            workers=2,
            progress=False,
        )
    )
    return out, result


def test_accuracy_rises_far_above_chance(trained):
    _, result = trained
    assert result.best_val_acc >= 0.75  # 4 classes: chance is 0.25
    assert result.history[0]["epoch"] == 1 and len(result.history) == 6


def test_outputs_metrics_curve_and_checkpoints(trained):
    out, _ = trained
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 7))
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["config"]["version"] == "1_1" and ckpt["labels"]["names"] == [f"class{i}" for i in range(4)]
    assert ckpt["preprocess"]["crop"] == 64 and "history" in ckpt["metrics"]


def test_export_int8_classifier_agrees_with_the_checkpoint(trained, pattern_dataset, tmp_path):
    out, _ = trained
    assert (
        main(
            [
                "-q",
                "export",
                "--weights",
                str(out / "best.pt"),
                "--int8",
                "--calib",
                str(pattern_dataset / "train"),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    images = sorted((pattern_dataset / "val").rglob("*.png"))
    reference = Classifier(out / "best.pt", backend="pytorch")
    int8 = Classifier(tmp_path / "model.int8.onnx")
    assert int8.labels.names == reference.labels.names
    ref = [p.index for p in reference.predict_batch([str(p) for p in images])]
    got = [p.index for p in int8.predict_batch([str(p) for p in images])]
    assert np.mean(np.array(ref) == np.array(got)) >= 0.95


def test_resume_continues_from_last(trained, pattern_dataset, tmp_path):
    import shutil

    out, _ = trained
    run = tmp_path / "resume"
    shutil.copytree(out, run)
    result = train(
        TrainOptions(
            data=pattern_dataset,
            out=run,
            arch="squeezenet1_1",
            image_size=64,
            epochs=7,
            batch_size=16,
            workers=0,
            progress=False,
            resume=True,
        )
    )
    assert [r["epoch"] for r in result.history] == list(range(1, 8))


def test_interrupt_leaves_a_usable_last_checkpoint(pattern_dataset, tmp_path, monkeypatch):
    import edge_squeeze.training.loop as train_module

    calls = {"n": 0}
    real = train_module.evaluate_loader

    def interrupt_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_loader", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(
            TrainOptions(
                data=pattern_dataset,
                out=tmp_path,
                arch="squeezenet1_1",
                image_size=64,
                epochs=3,
                batch_size=32,
                workers=0,
                progress=False,
            )
        )
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["metrics"]["interrupted"] and not ckpt["epoch_complete"]
    assert (
        Classifier(tmp_path / "last.pt", backend="pytorch")
        .predict(str(next((pattern_dataset / "val" / "class0").iterdir())))
        .label.startswith("class")
    )


def test_seeded_split_and_corrupt_images(tmp_path, pattern_dataset):
    import shutil

    for c in ("a", "b"):
        shutil.copytree(pattern_dataset / "val" / f"class{0 if c == 'a' else 1}", tmp_path / c)
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    labels, tr, va = find_splits(tmp_path, seed=3)
    assert labels.names == ["a", "b"] and len(va) == 6 and len(tr) == 27  # 20 % of 17 and of 16
    assert find_splits(tmp_path, seed=3)[2] == va
    result = train(
        TrainOptions(
            data=tmp_path,
            out=tmp_path / "o",
            arch="squeezenet1_1",
            image_size=48,
            epochs=1,
            batch_size=8,
            workers=0,
            progress=False,
        )
    )
    assert result.history[0]["skipped_images"] == 1


def test_bad_training_folders(tmp_path):
    with pytest.raises(EdgeSqueezeError, match="not found"):
        find_splits(tmp_path / "nope", 0)
    (tmp_path / "only").mkdir()
    with pytest.raises(EdgeSqueezeError, match="at least two class subfolders"):
        find_splits(tmp_path, 0)


def test_cli_train_prints_the_result(pattern_dataset, tmp_path, capsys):
    assert (
        main(
            [
                "-q",
                "train",
                "--data",
                str(pattern_dataset),
                "--arch",
                "squeezenet1_1",
                "--image-size",
                "48",
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--workers",
                "0",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    best = torch.load(tmp_path / "last.pt", weights_only=True)["metrics"]["best_val_acc"]
    with open(tmp_path / "metrics.csv") as fh:
        val = [float(row["val_acc"]) for row in csv.DictReader(fh)]
    assert best == pytest.approx(max(val)), "the checkpoint's best is the best epoch of metrics.csv"
    assert f"best validation accuracy {100 * best:.1f}%" in printed


def test_fine_tune_from_imagenet_weights_with_frozen_features(shared, pattern_dataset, tmp_path):
    result = train(
        TrainOptions(
            data=pattern_dataset,
            out=tmp_path,
            arch="squeezenet1_1",
            image_size=64,
            epochs=1,
            batch_size=32,
            workers=0,
            progress=False,
            pretrained=str(shared.weights_1_1),
            freeze_features=True,
        )
    )
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    original = torch.load(shared.weights_1_1, weights_only=True)
    assert torch.equal(ckpt["state_dict"]["features.0.weight"], original["features.0.weight"])  # frozen
    assert ckpt["state_dict"]["classifier.1.weight"].shape == (4, 512, 1, 1)  # new head
    assert result.best_val_acc > 0.25


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA training: torch sees no CUDA device")
def test_cuda_training_resumes_and_reloads_on_the_cpu(pattern_dataset, tmp_path):
    options = dict(
        data=pattern_dataset, out=tmp_path, arch="squeezenet1_1", image_size=64, batch_size=16, progress=False
    )
    result = train(TrainOptions(epochs=5, device="cuda", **options))
    assert result.device.startswith("cuda") and result.best_val_acc >= 0.75
    resumed = train(TrainOptions(epochs=6, device="cuda", resume=True, **options))
    assert [r["epoch"] for r in resumed["history"]] == list(range(1, 7))
    images = sorted((pattern_dataset / "val").rglob("*.png"))
    truth = [int(p.parent.name[len("class") :]) for p in images]
    on_cpu = Classifier(tmp_path / "best.pt", backend="pytorch")
    got = [p.index for p in on_cpu.predict_batch([str(p) for p in images])]
    assert np.mean(np.array(got) == np.array(truth)) >= 0.75


def test_each_epoch_draws_new_augmentations_in_persistent_workers(pattern_dataset, tmp_path):
    import torch as _torch

    from edge_squeeze.distributed import World
    from edge_squeeze.preprocess import PreprocessSpec
    from edge_squeeze.training.data import ImageFolderDataset, make_loaders

    image = next((pattern_dataset / "train" / "class0").iterdir())
    spec = PreprocessSpec.imagenet(48)
    dataset = ImageFolderDataset([(image, 0)], spec, train=True, seed=0)
    options = TrainOptions(data=pattern_dataset, workers=1)
    loader, sampler, _ = make_loaders(
        options, World(), dataset, dataset, 1, _torch.device("cpu"), spec.input_shape
    )
    crops = []
    for epoch in (1, 2, 1):
        sampler.set_epoch(epoch)
        crops.append(next(iter(loader))[0])
    assert not _torch.equal(crops[0], crops[1])  # the worker saw the new epoch
    assert _torch.equal(crops[0], crops[2])  # and the augmentation is a function of (seed, epoch, image)
