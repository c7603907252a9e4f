"""Flags are declared once, next to the option fields they fill; export file names live in one table."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.options import IntRange, add_flags, flag, internal, options_from, undeclared, validate

REPO = Path(__file__).resolve().parents[1]


def options_classes():
    from edge_squeeze.bench import BenchOptions
    from edge_squeeze.camera import CameraOptions, CaptureSettings
    from edge_squeeze.compress import CompressOptions
    from edge_squeeze.export.pipeline import ExportOptions
    from edge_squeeze.runtimes.onnxruntime_backend import OrtOptions
    from edge_squeeze.runtimes.tensorrt_options import BuildOptions, TensorRTOptions
    from edge_squeeze.selftest import SelftestOptions
    from edge_squeeze.train import TrainOptions

    return (
        BenchOptions,
        CameraOptions,
        CaptureSettings,
        CompressOptions,
        ExportOptions,
        OrtOptions,
        BuildOptions,
        TensorRTOptions,
        SelftestOptions,
        TrainOptions,
    )


@pytest.mark.parametrize("cls", options_classes(), ids=lambda c: c.__name__)
def test_every_options_field_declares_its_flag_or_why_it_has_none(cls):
    assert undeclared(cls) == []
    for field in dataclasses.fields(cls):
        spec = field.metadata["edge_squeeze.flag"]
        assert spec is not None or field.metadata.get("why"), field.name


@dataclasses.dataclass
class Probe:
    count: int = flag("--count", 3, type=IntRange(1, 9), help="a count")
    quiet: bool = flag("--quiet", False, action="store_true")
    made: str = internal("x", why="set by code")
    forgotten: int = 0  # neither: the test below must catch it


def test_a_field_without_a_flag_or_internal_is_refused():
    assert undeclared(Probe) == ["forgotten"]
    with pytest.raises(TypeError, match="forgotten"):
        add_flags(argparse.ArgumentParser(), Probe)


def test_a_flag_field_the_parser_lacks_is_an_error_not_a_default():
    """A renamed field whose flag was not added must not silently keep its default."""
    args = argparse.Namespace(quiet=True)  # no --count
    with pytest.raises(TypeError, match="count"):
        options_from(Probe, args)


def test_options_from_takes_the_flags_and_keeps_defaults_for_unset_ones():
    @dataclasses.dataclass
    class Declared:
        count: int = flag("--count", 3, type=IntRange(1, 9))
        quiet: bool = flag("--quiet", False, action="store_true")
        made: str = internal("x", why="set by code")

    parser = argparse.ArgumentParser()
    add_flags(parser, Declared)
    assert options_from(Declared, parser.parse_args([])) == Declared()
    assert options_from(Declared, parser.parse_args(["--count", "7", "--quiet"]), made="y") == Declared(
        7, True, "y"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "10"])
    with pytest.raises(TypeError, match="no fields"):
        options_from(Declared, parser.parse_args([]), renamed=1)


def test_one_range_checks_the_command_line_and_python_alike(capsys):
    from edge_squeeze.cli import main
    from edge_squeeze.compress import CompressOptions

    with pytest.raises(
        EdgeSqueezeError, match=r"CompressOptions.bits \(--bits\): must be from 2 to 8, got 9"
    ):
        CompressOptions(bits=9)
    with pytest.raises(EdgeSqueezeError, match="sparsity"):
        CompressOptions(sparsity=1.0)
    with pytest.raises(EdgeSqueezeError, match="layer_bits"):
        CompressOptions(layer_bits=(("classifier", 1),))
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--weights", "w.pth", "--out", "x.esqz", "--bits", "9"])
    assert exc.value.code == 2
    assert "argument --bits: must be from 2 to 8, got 9" in capsys.readouterr().err


def test_validate_checks_choices_of_options_made_in_python():
    from edge_squeeze.runtimes.onnxruntime_backend import OrtOptions

    with pytest.raises(EdgeSqueezeError, match="int8_file"):
        OrtOptions(int8_file="fast")
    with pytest.raises(EdgeSqueezeError, match="threads"):
        OrtOptions(threads=-1)
    validate(OrtOptions(threads=2, int8_file="cpu"))


@pytest.mark.parametrize(
    ("verb", "argv", "cls"),
    [
        (
            "export",
            ["--weights", "w.pth", "--int8", "--calib", "c"],
            "edge_squeeze.export.pipeline:ExportOptions",
        ),
        ("train", ["--data", "d", "--epochs", "2"], "edge_squeeze.train:TrainOptions"),
        (
            "compress",
            ["--weights", "w", "--out", "o.esqz", "--layer-bits", "classifier=4"],
            "edge_squeeze.compress:CompressOptions",
        ),
        ("bench", ["m.onnx", "--batch", "1,4"], "edge_squeeze.bench:BenchOptions"),
        (
            "camera",
            ["--model", "m", "--source", "s", "--latency", "50"],
            "edge_squeeze.camera:CaptureSettings",
        ),
        ("selftest", ["out", "--data", "d", "--precision", "fp16"], "edge_squeeze.selftest:SelftestOptions"),
        (
            "build-engine",
            ["m.onnx", "--batch-profile", "1,2,4"],
            "edge_squeeze.runtimes.tensorrt_options:BuildOptions",
        ),
    ],
)
def test_each_verb_parser_fills_its_options(verb, argv, cls):
    import importlib

    from edge_squeeze.cli import build_parser

    module, name = cls.split(":")
    options_cls = getattr(importlib.import_module(module), name)
    args = build_parser().parse_args([verb, *argv])
    overrides = {"labels": None} if name == "ExportOptions" else {}
    options = options_from(options_cls, args, **overrides)
    given = {f.name for f in dataclasses.fields(options_cls) if getattr(args, f.name, None) is not None}
    assert given, "the parse set at least one field"

    def plain(value):
        return tuple(value) if isinstance(value, (list, tuple)) else value

    for field in given - set(overrides):
        assert plain(getattr(options, field)) == plain(getattr(args, field)), field


def test_a_setting_given_as_shortcut_and_in_an_options_object_is_refused():
    from edge_squeeze.classifier import backend_options
    from edge_squeeze.runtimes.onnxruntime_backend import OrtOptions
    from edge_squeeze.runtimes.tensorrt_options import BuildOptions, TensorRTOptions

    with pytest.raises(EdgeSqueezeError, match="threads= and onnxruntime= both given"):
        backend_options(threads=4, onnxruntime=OrtOptions())
    with pytest.raises(EdgeSqueezeError, match="precision= and tensorrt= both given"):
        backend_options(precision="fp16", tensorrt=TensorRTOptions())
    options = backend_options(threads=3, precision="int8", cuda_graph=True)
    assert options.onnxruntime.threads == 3 and options.pytorch.threads == 3
    assert options.tensorrt.build.precision == "int8" and options.tensorrt.cuda_graph
    options = backend_options(
        onnxruntime=OrtOptions(threads=2), tensorrt=TensorRTOptions(build=BuildOptions(dla_core=1))
    )
    assert options.pytorch.threads == 2 and options.tensorrt.build.dla_core == 1


def test_export_file_names_are_typed_only_in_the_formats_table():
    from edge_squeeze.formats import EXPORT_FILES

    names = {f.name for f in EXPORT_FILES}
    suffixes = (".int8.onnx", ".int8.cpu.onnx", ".fp16.onnx")
    found = []
    for folder in ("edge_squeeze", "export", "runtimes"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "formats.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in (*names, *suffixes):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not found, "\n".join(found)
