"""Distributed training on this CPU machine: ``torchrun`` with 2 gloo processes gives the weights one
process gives for the same global batch and seed, only rank 0 writes, a crashed rank leaves a valid
``last.pt``, and a 2-process checkpoint resumes in 1 process to those same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

torch = pytest.importorskip("torch")

from edge_squeeze.cli import main  # noqa: E402
from edge_squeeze.cli.train import torchrun_argv  # noqa: E402
from edge_squeeze.distributed import per_process_batch, world_from_env  # noqa: E402
from edge_squeeze.errors import EdgeSqueezeError  # noqa: E402
from edge_squeeze.labels import Labels  # noqa: E402
from edge_squeeze.train import TrainOptions, build_for_training, resolved, train  # noqa: E402

# a narrow SqueezeNet 1.1 without dropout (dropout draws differ per process), 32x32 images, the
# paper's SGD recipe: 2 epochs of 4 steps of a global batch of 8
OPTIONS = {
    "arch": "squeezenet1_1",
    "metaparameters": {"base_e": 16, "incr_e": 16, "dropout": 0.0},
    "recipe": "paper",
    "lr": 0.05,
    "image_size": 32,
    "epochs": 2,
    "batch_size": 8,
    "workers": 0,
    "seed": 7,
    "progress": False,
}

# Runs train() in each torchrun process, recording which rank wrote which file; CRASH_RANK /
# CRASH_EPOCH make that rank fail inside that epoch's training.
WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import edge_squeeze.training.loop as t

    record = Path(sys.argv[3]) / f"writes-rank{os.environ.get('RANK', '0')}.txt"

    def recording(real):
        def wrapper(path, *args, **kwargs):
            with record.open("a") as f:
                f.write(Path(path).name + "\\n")
            return real(path, *args, **kwargs)
        return wrapper

    t.save_checkpoint = recording(t.save_checkpoint)
    t.write_csv_atomic = recording(t.write_csv_atomic)
    real_plot = t.plot_curves
    t.plot_curves = lambda rows, path: recording(lambda p, r: real_plot(r, p))(path, rows)
    crash_rank, crash_epoch = os.environ.get("CRASH_RANK"), int(os.environ.get("CRASH_EPOCH", "0"))
    real_epoch = t.train_one_epoch
    epochs = {"n": 0}

    def maybe_crash(*args, **kwargs):
        epochs["n"] += 1
        if os.environ.get("RANK") == crash_rank and epochs["n"] == crash_epoch:
            raise RuntimeError("rank crashed on purpose")
        return real_epoch(*args, **kwargs)

    t.train_one_epoch = maybe_crash
    options = json.loads(sys.argv[1])
    t.train(t.TrainOptions(data=Path(options.pop("data")), out=Path(sys.argv[2]), **options))
    """
)


@pytest.fixture(scope="module")
def small_dataset(pattern_dataset, tmp_path_factory) -> Path:
    """4 classes x 8 training images (32: whole global batches of 8, even over 2 processes), 2 val
    each: the first of the generated pattern images, at 40x40."""
    root = tmp_path_factory.mktemp("ddp-data")
    for split, count in (("train", 8), ("val", 2)):
        for cls in range(4):
            folder = root / split / f"class{cls}"
            folder.mkdir(parents=True)
            for source in sorted((pattern_dataset / split / f"class{cls}").iterdir())[:count]:
                image = cv2.resize(cv2.imread(str(source)), (40, 40), interpolation=cv2.INTER_AREA)
                cv2.imwrite(str(folder / source.name), image)
    return root


def _torchrun(
    tmp: Path, out: Path, data: Path, env_extra: dict, epochs: int = 2
) -> subprocess.CompletedProcess:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    records = tmp / f"records-{out.name}"
    records.mkdir()
    options = dict(OPTIONS, data=str(data), epochs=epochs)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(env_extra, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    return subprocess.run(
        [*command, str(script), json.dumps(options), str(out), str(records)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def _assert_same_weights(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert "module." not in name
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def one_process(small_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-process")
    result = train(TrainOptions(data=small_dataset, out=out, **OPTIONS))
    assert result.world_size == 1 and result.global_batch == 8
    return out


def test_two_gloo_processes_give_the_one_process_weights_and_only_rank_0_writes(
    one_process, small_dataset, tmp_path
):
    out = tmp_path / "two"
    run = _torchrun(tmp_path, out, small_dataset, {})
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["global_batch"] == 8 and ckpt["recipe"] == "paper"
    _assert_same_weights(ckpt["state_dict"], _weights(one_process / "last.pt"))
    # training moved the weights well beyond the tolerance, so the comparison above means something
    torch.manual_seed(OPTIONS["seed"])
    initial, _ = build_for_training(
        TrainOptions(data=small_dataset, **OPTIONS), Labels(names=[f"class{i}" for i in range(4)])
    )
    change = max(float((ckpt["state_dict"][k] - w).abs().max()) for k, w in initial.state_dict().items())
    assert change > 1e-3
    records = tmp_path / "records-two"
    assert not (records / "writes-rank1.txt").exists()
    written = (records / "writes-rank0.txt").read_text().split()
    assert {"last.pt", "metrics.csv", "learning_curve.png"} <= set(written) and written.count("last.pt") == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "last.pt",
        "learning_curve.png",
        "metrics.csv",
    ]


def test_a_crashed_rank_leaves_a_valid_last_pt_that_resumes_in_one_process(
    one_process, small_dataset, tmp_path
):
    out = tmp_path / "crash"
    run = _torchrun(tmp_path, out, small_dataset, {"CRASH_RANK": "1", "CRASH_EPOCH": "2"})
    assert run.returncode != 0 and "rank crashed on purpose" in run.stderr + run.stdout
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["epoch_complete"] and ckpt["world_size"] == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    resumed = train(TrainOptions(data=small_dataset, out=out, resume=True, **OPTIONS))
    assert [r["epoch"] for r in resumed.history] == [1, 2] and resumed.world_size == 1
    _assert_same_weights(_weights(out / "last.pt"), _weights(one_process / "last.pt"))


@pytest.mark.slow
def test_cli_nproc_per_node_reruns_itself_under_torchrun(small_dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, "-m", "edge_squeeze.cli", "-q", "train", "--data", str(small_dataset)]
    command += ["--arch", "squeezenet1_1", "--image-size", "32", "--epochs", "1", "--batch-size", "8"]
    command += ["--workers", "0", "--out", str(tmp_path), "--nproc-per-node", "2"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node=2" in run.stderr
    assert run.stdout.count("best validation accuracy") == 1  # rank 0 reports
    assert torch.load(tmp_path / "last.pt", weights_only=True)["world_size"] == 2


def test_torchrun_argv_drops_only_the_nproc_flag():
    argv = ["train", "--data", "d", "--nproc-per-node", "4", "--epochs", "3", "--nproc-per-node=4"]
    command = torchrun_argv(argv, 4)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m"]
    assert command[6:] == ["edge_squeeze.cli", "train", "--data", "d", "--epochs", "3"]


def test_world_and_batch_arithmetic(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = world_from_env()
    assert (world.rank, world.size, world.local_rank, world.writes_files) == (3, 4, 1, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(EdgeSqueezeError, match="does not fit WORLD_SIZE 4"):
        world_from_env()
    assert per_process_batch(512, 8, 2) == 32  # the paper's 512 = 8 GPUs x 32 x 2 accumulation steps
    with pytest.raises(EdgeSqueezeError, match="use a multiple of 6"):
        per_process_batch(512, 3, 2)


def test_recipes_resolve_epochs_batch_and_learning_rate():
    seed = resolved(TrainOptions(data=Path(".")))
    assert (seed[0].optimizer, seed[1], seed[2], seed[3]) == ("adam", 20, 32, 0.001)
    paper = resolved(TrainOptions(data=Path("."), recipe="paper"))
    assert (paper[0].optimizer, paper[1], paper[2], paper[3]) == ("sgd", 68, 512, 0.04)
    assert resolved(TrainOptions(data=Path("."), recipe="paper", batch_size=256))[3] == pytest.approx(0.02)
    assert resolved(TrainOptions(data=Path("."), recipe="paper", batch_size=256, lr=0.1))[3] == 0.1
    with pytest.raises(
        EdgeSqueezeError, match=r"TrainOptions.recipe \(--recipe\): must be one of seed, paper"
    ):
        TrainOptions(data=Path("."), recipe="adamw")


def test_profile_data_prints_loader_throughput(small_dataset, tmp_path, capsys):
    argv = ["train", "--data", str(small_dataset), "--image-size", "32", "--batch-size", "4"]
    assert main([*argv, "--workers", "0", "--out", str(tmp_path / "o"), "--profile-data"]) == 0
    line = capsys.readouterr().out
    assert "images/s" in line and "batch 4" in line
    assert not (tmp_path / "o").exists()  # profiling writes nothing


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL training: torch sees no CUDA device")
def test_one_gpu_nccl_run_with_amp(pattern_dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]
    command += [
        "-m",
        "edge_squeeze.cli",
        "-v",
        "train",
        "--data",
        str(pattern_dataset),
        "--out",
        str(tmp_path),
    ]
    command += ["--arch", "squeezenet1_1", "--image-size", "64", "--epochs", "5", "--batch-size", "16"]
    command += ["--amp", "bf16" if torch.cuda.is_bf16_supported() else "fp16", "--channels-last"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "(nccl)" in run.stderr and "cuda:0" in run.stderr
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 1 and not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert ckpt["metrics"]["best_val_acc"] >= 0.75
    print("images/s per epoch:", [row["images_per_s"] for row in ckpt["metrics"]["history"]])
