"""``edge-squeeze bench MODEL...``: latency per stage (p50/p90/p95/p99) and throughput per batch size."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..options import add_flags, options_from
from .args import add_runtime_flags, runtime_options

HELP = "latency and throughput per stage, with percentiles"


def register(p: argparse.ArgumentParser) -> None:
    from ..bench import BenchOptions

    p.add_argument("models", nargs="+", help=".onnx, .int8.onnx, .engine or checkpoint files")
    add_flags(p, BenchOptions)
    p.add_argument("--json", help="write rows (and the machine) as JSON")
    p.add_argument("--csv", help="write rows as CSV")
    p.add_argument("--plot", help="write latency and throughput plots (PNG)")
    add_runtime_flags(p)


def run(args: argparse.Namespace) -> int:
    from ..bench import BenchOptions, bench_models, format_table, write_csv, write_json, write_plot

    backends = runtime_options(args)
    tensorrt = backends.tensorrt
    largest = max(args.batches or (1,))
    if tensorrt.build.profile is None and largest > 8:
        # an engine built from ONNX for this run covers its largest batch in one launch
        tensorrt = dataclasses.replace(
            tensorrt, build=dataclasses.replace(tensorrt.build, profile=f"1,1,{largest}")
        )
    options = options_from(
        BenchOptions, args, backend=args.backend, onnxruntime=backends.onnxruntime, tensorrt=tensorrt
    )
    report = bench_models([Path(m) for m in args.models], options)
    machine = report.machine
    print(
        f"{machine['cpu']} ({machine['cores']} cores), onnxruntime {machine.get('onnxruntime', '?').split()[0]}"
    )
    print(format_table(report.rows))
    for row in report.rows:
        if row.get("drift"):
            print(f"{Path(row.get('file') or row['model']).name} batch {row['batch']}: {row['drift']}")
        for problem in (row.get("power") or {}).get("problems", []):
            print(f"{Path(row.get('file') or row['model']).name} batch {row['batch']}: power: {problem}")
    if args.json:
        write_json(report.rows, Path(args.json), machine)
    if args.csv:
        write_csv(report.rows, Path(args.csv))
    if args.plot:
        write_plot(report.rows, Path(args.plot))
    return 0
