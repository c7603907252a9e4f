"""Every failure a user can cause is one clear line, and leaves nothing behind.

A table of hostile inputs across every command: each row makes its input, runs the command, and
checks the exit code (1 for bad input, 2 for a malformed command line, 0 where the input is handled),
a fragment of the one error line (or of a warning, for rows that succeed), and the files that must
not exist afterwards. Any traceback, a second error line, exit 0 for an error or a partial file
fails the row. Rows marked ``as_nobody`` need a user that file permissions apply to: as root they
run through ``setpriv`` as nobody.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np
import pytest

from edge_squeeze.cli import main

pytest.importorskip("torch")


@dataclasses.dataclass
class Row:
    id: str
    args: str  # the command line, with {placeholders} from the paths below
    code: int
    fragment: str  # in the error line (code != 0) or anywhere in stderr (code 0)
    setup: Optional[Callable[[Dict[str, Path]], None]] = None
    absent: Tuple[str, ...] = ()  # paths (with placeholders) that must not exist afterwards
    as_nobody: bool = False


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _png_header_claiming(width: int, height: int) -> bytes:
    """A real 8x8 PNG whose header says it is ``width`` x ``height`` (a decompression-bomb stand-in)."""
    _, data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    blob = bytearray(data.tobytes())
    blob[16:20] = width.to_bytes(4, "big")
    blob[20:24] = height.to_bytes(4, "big")
    return bytes(blob)


def _photo(shape: Tuple[int, int], value: int = 128) -> bytes:
    image = np.full((*shape, 3), value, np.uint8)
    image[::7] = 255 - value
    return cv2.imencode(".jpg", image)[1].tobytes()


def _stale_sibling(p: Dict[str, Path]) -> None:
    """An INT8 export whose CPU file comes from another export (other weights)."""
    shutil.copytree(p["export"], p["tmp"] / "mixed")
    shutil.copy(p["other"] / "model.int8.cpu.onnx", p["tmp"] / "mixed" / "model.int8.cpu.onnx")


def _truncate_stats_cache(p: Dict[str, Path]) -> None:
    shutil.copytree(p["export"], p["tmp"] / "again")
    for cache in (p["tmp"] / "again" / "calibration").glob("stats-*.npz"):
        cache.write_bytes(cache.read_bytes()[:100])


def _unreadable(name: str, data_from: str) -> Callable[[Dict[str, Path]], None]:
    def setup(p: Dict[str, Path]) -> None:
        target = p["tmp"] / name
        source = p[data_from]
        _write(target, source.read_bytes())
        target.chmod(0)

    return setup


def _read_only_folder(p: Dict[str, Path]) -> None:
    (p["tmp"] / "ro").mkdir()
    (p["tmp"] / "ro").chmod(
        stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    )


CPU = "{cpu}"
FP32 = "{export}/model.onnx"
PHOTO = "{photo}"

ROWS = [
    # --- predict: models ---------------------------------------------------------------------
    Row("predict-missing-model", f"predict {{tmp}}/none.onnx {PHOTO}", 1, "model not found"),
    Row(
        "predict-empty-model",
        f"predict {{tmp}}/empty.onnx {PHOTO}",
        1,
        "cannot load ONNX model",
        lambda p: _write(p["tmp"] / "empty.onnx", b""),
    ),
    Row(
        "predict-truncated-model",
        f"predict {{tmp}}/cut.onnx {PHOTO}",
        1,
        "truncated, corrupt",
        lambda p: _write(p["tmp"] / "cut.onnx", (p["export"] / "model.onnx").read_bytes()[:4000]),
    ),
    Row(
        "predict-text-as-model",
        f"predict {{tmp}}/text.onnx {PHOTO}",
        1,
        "not an ONNX file",
        lambda p: _write(p["tmp"] / "text.onnx", b"hello, world\n" * 50),
    ),
    Row(
        "predict-folder-as-model",
        f"predict {{tmp}}/dir.onnx {PHOTO}",
        1,
        "dir.onnx",
        lambda p: (p["tmp"] / "dir.onnx").mkdir(),
    ),
    Row(
        "predict-bad-esqz",
        f"predict {{tmp}}/bad.esqz {PHOTO}",
        1,
        "not an .esqz file",
        lambda p: _write(p["tmp"] / "bad.esqz", b"NOPE" + b"\0" * 64),
    ),
    Row(
        "predict-truncated-esqz",
        f"predict {{tmp}}/cut.esqz {PHOTO}",
        1,
        "truncated",
        lambda p: _write(p["tmp"] / "cut.esqz", p["esqz"].read_bytes()[:200]),
    ),
    Row(
        "predict-engine-without-tensorrt",
        f"predict {{tmp}}/m.engine {PHOTO}",
        1,
        "TensorRT backend cannot run here",
        lambda p: _write(p["tmp"] / "m.engine", b"plan"),
    ),
    Row(
        "predict-tensorrt-asked-for",
        f"predict {FP32} {PHOTO} --backend tensorrt",
        1,
        "TensorRT backend cannot run here",
    ),
    Row(
        "predict-unreadable-model",
        f"predict {{tmp}}/locked.onnx {PHOTO}",
        1,
        "locked.onnx",
        _unreadable("locked.onnx", "cpu"),
        as_nobody=True,
    ),
    # --- predict: images ---------------------------------------------------------------------
    Row("predict-missing-image", f"predict {CPU} {{tmp}}/none.jpg", 1, "image not found"),
    Row("predict-folder-as-image", f"predict {CPU} {{tmp}}", 1, "is a folder"),
    Row(
        "predict-garbage-image",
        f"predict {CPU} {{tmp}}/garbage.jpg",
        1,
        "cannot decode image",
        lambda p: _write(p["tmp"] / "garbage.jpg", b"\xff\xd8 not really a jpeg" * 10),
    ),
    Row(
        "predict-empty-image",
        f"predict {CPU} {{tmp}}/empty.png",
        1,
        "cannot decode image",
        lambda p: _write(p["tmp"] / "empty.png", b""),
    ),
    Row(
        "predict-text-as-image",
        f"predict {CPU} {{tmp}}/notes.jpg",
        1,
        "cannot decode image",
        lambda p: _write(p["tmp"] / "notes.jpg", b"just some text\n"),
    ),
    Row(
        "predict-strip-image",
        f"predict {CPU} {{tmp}}/strip.png",
        1,
        "too elongated",
        lambda p: _write(
            p["tmp"] / "strip.png", cv2.imencode(".png", np.zeros((1, 60000, 3), np.uint8))[1].tobytes()
        ),
    ),
    Row(
        "predict-decompression-bomb",
        f"predict {CPU} {{tmp}}/bomb.png",
        1,
        "megapixels",
        lambda p: _write(p["tmp"] / "bomb.png", _png_header_claiming(20000, 20000)),
    ),
    Row(
        "predict-unreadable-image",
        f"predict {CPU} {{tmp}}/locked.jpg",
        1,
        "cannot read image",
        _unreadable("locked.jpg", "photo"),
        as_nobody=True,
    ),
    Row(
        "predict-large-photo-decoded-reduced",
        f"predict {CPU} {{tmp}}/large.jpg --topk 1",
        0,
        "",
        lambda p: _write(p["tmp"] / "large.jpg", _photo((2400, 3200))),
    ),
    # --- predict: numbers --------------------------------------------------------------------
    Row("predict-topk-zero", f"predict {CPU} {PHOTO} --topk 0", 2, "argument --topk: must be at least 1"),
    Row("predict-topk-negative", f"predict {CPU} {PHOTO} --topk -1", 2, "--topk"),
    Row("predict-topk-word", f"predict {CPU} {PHOTO} --topk five", 2, "expected a whole number"),
    Row("predict-threads-negative", f"predict {CPU} {PHOTO} --threads -1", 2, "--threads"),
    Row("predict-threads-1000-capped", f"predict {CPU} {PHOTO} --threads 1000", 0, "threads asked for"),
    Row("predict-unknown-backend", f"predict {CPU} {PHOTO} --backend gpu", 2, "invalid choice"),
    # --- eval ----------------------------------------------------------------------------------
    Row("eval-missing-folder", f"eval {CPU} --data {{tmp}}/none", 1, "image folder not found"),
    Row(
        "eval-empty-folder",
        f"eval {CPU} --data {{tmp}}/empty",
        1,
        "no images",
        lambda p: (p["tmp"] / "empty").mkdir(),
    ),
    Row("eval-file-as-folder", f"eval {CPU} --data {PHOTO}", 1, "image folder not found"),
    Row(
        "eval-unknown-classes",
        f"eval {CPU} --data {{tmp}}/strangers",
        1,
        "cannot tell the class",
        lambda p: _write(p["tmp"] / "strangers" / "cats" / "a.jpg", _photo((64, 64))),
    ),
    Row(
        "eval-all-corrupt",
        f"eval {CPU} --data {{tmp}}/broken",
        1,
        "none of the",
        lambda p: [_write(p["tmp"] / "broken" / "class_1" / f"{i}.jpg", b"junk") for i in range(3)],
    ),
    Row(
        "eval-some-corrupt",
        f"eval {CPU} --data {{tmp}}/mixed --json",
        0,
        "skipped 1 unreadable image",
        lambda p: [
            _write(p["tmp"] / "mixed" / "class_1" / n, d)
            for n, d in (("a.jpg", _photo((80, 80))), ("b.jpg", b"junk"))
        ],
    ),
    Row("eval-batch-size-zero", f"eval {CPU} --data {{tmp}} --batch-size 0", 2, "--batch-size"),
    # --- export --------------------------------------------------------------------------------
    Row(
        "export-missing-weights",
        "export --weights {tmp}/none.pth --out {tmp}/o",
        1,
        "weights file not found",
        absent=("{tmp}/o",),
    ),
    Row(
        "export-garbage-weights",
        "export --weights {tmp}/junk.pth --out {tmp}/o",
        1,
        "cannot read weights",
        lambda p: _write(p["tmp"] / "junk.pth", b"not a pickle"),
        absent=("{tmp}/o",),
    ),
    Row(
        "export-state-dict-without-arch",
        "export --weights {tiny} --out {tmp}/o",
        1,
        "--arch",
        absent=("{tmp}/o",),
    ),
    Row(
        "export-int8-without-calib",
        "export --weights {narrow} --int8 --out {tmp}/o",
        1,
        "needs --calib",
        absent=("{tmp}/o",),
    ),
    Row(
        "export-calib-missing",
        "export --weights {narrow} --int8 --calib {tmp}/none --out {tmp}/o",
        1,
        "not found",
        absent=("{tmp}/o",),
    ),
    Row(
        "export-calib-empty",
        "export --weights {narrow} --int8 --calib {tmp}/empty --out {tmp}/o",
        1,
        "holds no images",
        lambda p: (p["tmp"] / "empty").mkdir(),
        absent=("{tmp}/o/model.onnx",),
    ),
    Row(
        "export-calib-too-few-readable",
        "export --weights {narrow} --int8 --calib {tmp}/few --out {tmp}/o",
        1,
        "readable calibration image",
        lambda p: [
            _write(p["tmp"] / "few" / f"{i}.jpg", _photo((64, 64)) if i < 3 else b"junk") for i in range(9)
        ],
        absent=("{tmp}/o/model.onnx", "{tmp}/o/model.int8.onnx"),
    ),
    Row(
        "export-out-is-a-file",
        "export --weights {narrow} --out {tmp}/taken",
        1,
        "cannot write",
        lambda p: _write(p["tmp"] / "taken", b"x"),
    ),
    Row(
        "export-out-read-only",
        "export --weights {narrow} --out {tmp}/ro/o",
        1,
        "cannot write",
        _read_only_folder,
        absent=("{tmp}/ro/o",),
        as_nobody=True,
    ),
    Row(
        "export-out-under-proc", "export --weights {narrow} --out /proc/edge-squeeze-test", 1, "cannot write"
    ),
    Row(
        "export-image-size-zero", "export --weights {narrow} --image-size 0 --out {tmp}/o", 2, "--image-size"
    ),
    Row(
        "export-image-size-huge",
        "export --weights {narrow} --image-size 10000 --out {tmp}/o",
        2,
        "from 32 to 2048",
    ),
    Row("export-opset-old", "export --weights {narrow} --opset 5 --out {tmp}/o", 2, "--opset"),
    Row(
        "export-calib-count-small",
        "export --weights {narrow} --calib-count 3 --out {tmp}/o",
        2,
        "--calib-count",
    ),
    Row(
        "export-labels-missing",
        "export --weights {narrow} --labels {tmp}/none.txt --out {tmp}/o",
        1,
        "none.txt",
        absent=("{tmp}/o",),
    ),
    Row(
        "export-labels-wrong-count",
        "export --weights {narrow} --labels {tmp}/three.txt --out {tmp}/o",
        1,
        "labels name 3 classes",
        lambda p: _write(p["tmp"] / "three.txt", b"a\nb\nc\n"),
        absent=("{tmp}/o",),
    ),
    Row(
        "export-eval-missing",
        "export --weights {narrow} --eval {tmp}/none --out {tmp}/o",
        1,
        "not found",
        absent=("{tmp}/o/model.onnx",),
    ),
    Row(
        "export-unknown-arch",
        "export --weights {narrow} --arch squeezenet2 --out {tmp}/o",
        2,
        "invalid choice",
    ),
    Row(
        "export-truncated-stats-cache-rebuilt",
        "export --weights {narrow} --int8 --calib {calib} --calib-count 12 --out {tmp}/again",
        0,
        "ignoring unreadable calibration statistics",
        _truncate_stats_cache,
    ),
    Row(
        "export-fp32-over-int8-export-removes-stale",
        "export --weights {narrow} --out {tmp}/over",
        0,
        "",
        lambda p: shutil.copytree(p["export"], p["tmp"] / "over"),
        absent=(
            "{tmp}/over/model.int8.onnx",
            "{tmp}/over/model.int8.cpu.onnx",
            "{tmp}/over/model.calib.cache",
        ),
    ),
    # --- compress ------------------------------------------------------------------------------
    Row(
        "compress-out-not-esqz",
        "compress --weights {narrow} --out {tmp}/x.onnx",
        1,
        "must name an .esqz file",
    ),
    Row("compress-bits-one", "compress --weights {narrow} --bits 1 --out {tmp}/x.esqz", 2, "--bits"),
    Row("compress-bits-nine", "compress --weights {narrow} --bits 9 --out {tmp}/x.esqz", 2, "from 2 to 8"),
    Row(
        "compress-sparsity-one",
        "compress --weights {narrow} --sparsity 1 --out {tmp}/x.esqz",
        2,
        "--sparsity",
    ),
    Row(
        "compress-sparsity-negative",
        "compress --weights {narrow} --sparsity -0.1 --out {tmp}/x.esqz",
        2,
        "--sparsity",
    ),
    Row(
        "compress-layer-bits-malformed",
        "compress --weights {narrow} --layer-bits classifier --out {tmp}/x.esqz",
        2,
        "PREFIX=BITS",
        absent=("{tmp}/x.esqz",),
    ),
    Row(
        "compress-budget-too-small",
        "compress --weights {narrow} --max-bytes 100 --out {tmp}/x.esqz",
        1,
        "cannot fit",
        absent=("{tmp}/x.esqz",),
    ),
    Row(
        "compress-budget-zero",
        "compress --weights {narrow} --max-bytes 0 --out {tmp}/x.esqz",
        2,
        "--max-bytes",
    ),
    Row(
        "compress-out-in-a-file",
        "compress --weights {narrow} --out {tmp}/taken/x.esqz",
        1,
        "cannot write",
        lambda p: _write(p["tmp"] / "taken", b"x"),
    ),
    Row(
        "compress-calib-missing",
        "compress --weights {narrow} --calib {tmp}/none --out {tmp}/x.esqz",
        1,
        "not found",
        absent=("{tmp}/x.esqz",),
    ),
    # --- bench ---------------------------------------------------------------------------------
    Row("bench-batch-word", f"bench {CPU} --batch abc", 2, "--batch"),
    Row("bench-batch-zero", f"bench {CPU} --batch 0", 2, "--batch"),
    Row("bench-iterations-negative", f"bench {CPU} --iterations -5", 2, "--iterations"),
    Row("bench-duration-zero", f"bench {CPU} --duration 0", 2, "--duration"),
    Row("bench-power-rate-zero", f"bench {CPU} --power --power-rate 0", 2, "--power-rate"),
    Row("bench-sustained-negative", f"bench {CPU} --sustained -1", 2, "--sustained"),
    Row("bench-idle-word", f"bench {CPU} --power --idle soon", 2, "--idle"),
    Row("bench-missing-model", "bench {tmp}/none.onnx --iterations 2", 1, "model not found"),
    Row(
        "bench-json-into-a-folder", f"bench {CPU} --iterations 2 --warmup 0 --json {{tmp}}", 1, "cannot write"
    ),
    Row(
        "bench-csv-under-proc",
        f"bench {CPU} --iterations 2 --warmup 0 --csv /proc/edge-squeeze.csv",
        1,
        "cannot write",
    ),
    # --- camera --------------------------------------------------------------------------------
    Row("camera-missing-video", f"camera --model {CPU} --source {{tmp}}/none.mp4 --headless", 1, "none.mp4"),
    Row("camera-unknown-scheme", f"camera --model {CPU} --source ftp://x --headless", 1, "ftp://x"),
    Row(
        "camera-jsonl-into-a-folder",
        f"camera --model {CPU} --source {PHOTO} --headless --jsonl {{tmp}}",
        1,
        "cannot write",
    ),
    Row(
        "camera-frames-out-is-a-file",
        f"camera --model {CPU} --source {PHOTO} --frames-out {{tmp}}/taken",
        1,
        "cannot write",
        lambda p: _write(p["tmp"] / "taken", b"x"),
    ),
    Row(
        "camera-video-out-is-a-folder",
        f"camera --model {CPU} --source {PHOTO} --video-out {{tmp}}",
        1,
        "it is a folder",
    ),
    Row(
        "camera-display-without-gui",
        f"camera --model {CPU} --source {PHOTO} --display",
        1,
        "--display needs OpenCV with a GUI",
    ),
    Row("camera-fps-zero", f"camera --model {CPU} --source {PHOTO} --fps 0", 2, "--fps"),
    Row("camera-max-frames-zero", f"camera --model {CPU} --source {PHOTO} --max-frames 0", 2, "--max-frames"),
    Row(
        "camera-mixed-sizes-to-video",
        f"camera --model {CPU} --source {{tmp}}/sizes --video-out {{tmp}}/v.avi",
        0,
        "resized to the video",
        lambda p: [
            _write(p["tmp"] / "sizes" / f"{i}.jpg", _photo(s))
            for i, s in enumerate(((60, 80), (90, 70), (60, 80)))
        ],
    ),
    # --- build-engine, selftest, train, info -----------------------------------------------------
    Row("build-engine-missing-model", "build-engine {tmp}/none.onnx", 1, "ONNX model not found"),
    Row("build-engine-without-tensorrt", f"build-engine {FP32}", 1, "cannot build a TensorRT engine here"),
    Row("build-engine-dla-negative", f"build-engine {FP32} --dla-core -1", 2, "--dla-core"),
    Row("selftest-not-an-export", "selftest {tmp} --data {tmp}", 1, "has no model.onnx"),
    Row("selftest-iterations-zero", "selftest {export} --data {tmp} --iterations 0", 2, "--iterations"),
    Row(
        "train-missing-data",
        "train --data {tmp}/none --out {tmp}/run",
        1,
        "not found",
        absent=("{tmp}/run/last.pt",),
    ),
    Row("train-epochs-zero", "train --data {tmp} --epochs 0", 2, "--epochs"),
    Row("train-lr-zero", "train --data {tmp} --lr 0", 2, "--lr"),
    Row("train-batch-size-zero", "train --data {tmp} --batch-size 0", 2, "--batch-size"),
    Row("train-pct-3x3-out-of-range", "train --data {tmp} --pct-3x3 1.5", 2, "--pct-3x3"),
    # --- silent wrong answers that are now said --------------------------------------------------
    Row(
        "predict-foreign-cpu-sibling",
        "predict {tmp}/mixed/model.int8.onnx " + PHOTO,
        0,
        "is not model.int8.onnx's CPU INT8 file",
        _stale_sibling,
    ),
]


@pytest.fixture(scope="module")
def paths(
    tmp_path_factory, tiny_int8_export, tiny_checkpoint, narrow_checkpoint, pattern_dataset
) -> Dict[str, Path]:
    """Read-only inputs every row may use."""
    from edge_squeeze.cli import main as cli

    base = tmp_path_factory.mktemp("hostile")
    other = base / "other"
    assert (
        cli(
            [
                "-q",
                "export",
                "--weights",
                str(narrow_checkpoint),
                "--int8",
                "--calib",
                str(pattern_dataset / "train"),
                "--calib-count",
                "12",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    export = base / "export"
    assert (
        cli(
            [
                "-q",
                "export",
                "--weights",
                str(narrow_checkpoint),
                "--int8",
                "--calib",
                str(pattern_dataset / "train"),
                "--calib-count",
                "12",
                "--out",
                str(export),
            ]
        )
        == 0
    )
    esqz = base / "n.esqz"
    assert (
        cli(["-q", "compress", "--weights", str(narrow_checkpoint), "--bits", "6", "--out", str(esqz)]) == 0
    )
    photo = next((pattern_dataset / "val" / "class0").iterdir())
    return {
        "export": export,
        "other": tiny_int8_export,  # another export: other weights, other labels count
        "esqz": esqz,
        "photo": photo,
        "cpu": export / "model.int8.cpu.onnx",
        "tiny": tiny_checkpoint,
        "narrow": narrow_checkpoint,
        "calib": pattern_dataset / "train",
    }


def _run(row: Row, args: list, capsys) -> Tuple[int, str]:
    if not row.as_nobody or os.geteuid() != 0:
        try:
            code = main(["-q", *args])
        except SystemExit as exc:  # argparse: a malformed command line
            code = int(exc.code or 0)
        return code, capsys.readouterr().err
    exe = Path(sys.executable).with_name("edge-squeeze")
    if shutil.which("setpriv") is None or not exe.exists():
        pytest.skip("as root this row needs setpriv and the console script to run as nobody")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(exe), "-q", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": "/tmp"},
    )
    return result.returncode, result.stderr


@pytest.fixture()
def workdir(tmp_path):
    """The row's folder; for rows run as nobody, a world-readable one outside pytest's private tree."""
    world = Path(tempfile.mkdtemp(prefix="edge-squeeze-hostile-"))
    world.chmod(0o755)
    yield tmp_path, world
    shutil.rmtree(world, ignore_errors=True)


def _prepare(row: Row, paths: Dict[str, Path], workdir) -> Tuple[list, Dict[str, str], Path]:
    """The row's input made; returns its command line, the path names and the folder it writes in."""
    tmp_path, world = workdir
    p = {**paths, "tmp": tmp_path}
    if row.as_nobody and os.geteuid() == 0:
        p["tmp"] = tmp_path = world
        for key in ("narrow", "cpu", "photo"):  # copies nobody can read
            p[key] = Path(shutil.copy(paths[key], world / f"input-{key}{paths[key].suffix}"))
    if row.setup:
        row.setup(p)
    names = {k: str(v) for k, v in p.items()}
    return row.args.format(**names).split(), names, tmp_path


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input(row: Row, paths, workdir, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_SQUEEZE_DEBUG", raising=False)
    args, names, tmp_path = _prepare(row, paths, workdir)
    code, err = _run(row, args, capsys)
    assert "Traceback" not in err, err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    if row.code == 0:
        assert code == 0, err
        assert not error_lines, err
        assert row.fragment in err, err
    else:
        assert code == row.code, f"exit {code}, expected {row.code}: {err}"
        # exactly one line on stderr, the error itself: no second line, no warning, no wrapped message
        assert err.count("\n") == 1 and err.endswith("\n"), repr(err)
        assert len(error_lines) == 1 and error_lines[0].startswith("edge-squeeze: error: "), err
        assert row.fragment in error_lines[0], error_lines[0]
    for template in row.absent:
        assert not Path(template.format(**names)).exists(), template
    leftovers = [
        q for q in tmp_path.rglob("*") if q.name.endswith(".partial") or q.name.startswith(".export-")
    ]
    assert not leftovers, leftovers


def test_there_are_at_least_sixty_rows():
    assert len(ROWS) >= 60 and len({r.id for r in ROWS}) == len(ROWS)


ERROR_ROWS = [r for r in ROWS if r.code == 1]


@pytest.mark.parametrize("row", ERROR_ROWS, ids=[r.id for r in ERROR_ROWS])
def test_debug_shows_the_traceback_of_every_error_row(row: Row, paths, workdir, capsys, monkeypatch):
    """``EDGE_SQUEEZE_DEBUG=1`` turns each row's one line back into the exception and its stack."""
    monkeypatch.setenv("EDGE_SQUEEZE_DEBUG", "1")
    from edge_squeeze.cli import USER_ERRORS

    args, _, _ = _prepare(row, paths, workdir)
    try:
        code, err = _run(row, args, capsys)
    except USER_ERRORS:
        return  # raised out of main(): Python prints the traceback
    assert code != 0 and "Traceback" in err, f"exit {code} without a traceback: {err}"


def test_debug_shows_the_traceback(paths, monkeypatch, capsys):
    monkeypatch.setenv("EDGE_SQUEEZE_DEBUG", "1")
    from edge_squeeze.errors import EdgeSqueezeError

    with pytest.raises(EdgeSqueezeError, match="image not found"):
        main(["-q", "predict", str(paths["cpu"]), "/nonexistent.jpg"])
    with pytest.raises(EdgeSqueezeError, match="cannot write") as info:
        main(["-q", "export", "--weights", str(paths["narrow"]), "--out", "/proc/edge-squeeze-test"])
    assert isinstance(info.value.__cause__, OSError)  # the operating system's error, chained
