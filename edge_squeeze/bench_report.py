"""A benchmark's reports: the table, JSON, CSV and plots (latency, throughput, and latency and watts
over time with ``--power``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

POWER_COLUMNS = ("power_avg_w", "power_peak_w", "idle_w", "mj_per_inference", "mj_per_inference_above_idle")


def power_columns(row: Dict[str, Any]) -> Dict[str, Any]:
    """A row's power numbers as flat columns (the table, the CSV): empty without ``--power``."""
    power = row.get("power")
    if not power:
        return {}
    return {
        "power_avg_w": power["total_avg_w"],
        "power_peak_w": power["total_peak_w"],
        "idle_w": power["idle_w"],
        "mj_per_inference": power["mj_per_inference"],
        "mj_per_inference_above_idle": power["mj_per_inference_above_idle"],
        "peak_temp_c": power["peak_temp_c"],
        "clocks_mhz": "; ".join(
            f"{name} {c['min']:.0f}/{c['median']:.0f}/{c['max']:.0f}"
            for name, c in power["clocks_mhz"].items()
        ),
        "throttle": "; ".join(power["throttle"]),
    }


def _main_clock(clocks: Dict[str, Dict[str, float]]) -> str:
    """The clock that tells most: the GPU's where there is one, else the CPU's."""
    for name in ("gpu", "cpu", *clocks):
        if name in clocks:
            c = clocks[name]
            return f"{name} {c['min']:.0f}/{c['median']:.0f}/{c['max']:.0f}"
    return ""


def _number(value: Optional[float], spec: str) -> str:
    return "" if value is None else format(value, spec)


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    header = ["model", "backend", "precision", "batch", "size MB", "p50 ms", "p99 ms", "img/s", "top-1"]
    with_power = any(r.get("power") for r in rows)
    if with_power:
        header += ["W", "W idle", "mJ/inf", "mJ/inf > idle", "peak C", "clock MHz min/med/max", "throttle"]
    body = []
    for r in rows:
        cells = [
            Path(r.get("file") or r["model"]).name,
            r["backend"],
            r["precision"],
            str(r["batch"]),
            f"{r['size_mb']:.2f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['throughput']:.1f}",
            "" if r.get("top1") is None else f"{100 * r['top1']:.1f}%",
        ]
        if with_power:
            p = power_columns(r)
            cells += [
                _number(p.get("power_avg_w"), ".2f"),
                _number(p.get("idle_w"), ".2f"),
                _number(p.get("mj_per_inference"), ".2f"),
                _number(p.get("mj_per_inference_above_idle"), ".2f"),
                _number(p.get("peak_temp_c"), ".1f"),
                _main_clock(r["power"]["clocks_mhz"]) if r.get("power") else "",
                p.get("throttle", ""),
            ]
        body.append(cells)
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
    return "\n".join(lines)


def write_json(rows: Sequence[Dict[str, Any]], path: Path, machine: Dict[str, Any]) -> None:
    """The rows and the machine they ran on (``bench.machine_info()``), written atomically."""
    from .fileio import write_text_atomic

    write_text_atomic(path, json.dumps({"machine": machine, "rows": list(rows)}, indent=2))


def write_csv(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    from .fileio import write_csv_atomic

    fields = [
        "model",
        "file",
        "backend",
        "device",
        "precision",
        "batch",
        "size_mb",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "mean_ms",
        "throughput",
        "top1",
    ]
    flat = [{**row, **power_columns(row)} for row in rows]
    if any(row.get("power") for row in rows):
        fields += [*POWER_COLUMNS, "peak_temp_c", "clocks_mhz", "throttle"]
    if any(row.get("drift") for row in rows):
        fields.append("drift")
    write_csv_atomic(path, flat, fields)


def _plot_timeline(ax: Any, rows: Sequence[Dict[str, Any]]) -> None:
    """Latency (left axis) and total watts (right axis) over each measured window, on one panel."""
    watts_ax = ax.twinx()
    for r in rows[:4]:
        name = f"{Path(r.get('file') or r['model']).name} b{r['batch']}"
        latency = np.asarray(r["timeline"]["latency_ms"], float).reshape(-1, 2)
        ax.plot(latency[:, 0], latency[:, 1], lw=0.8, label=f"{name} ms")
        watts = np.asarray(r["timeline"]["watts"], float).reshape(-1, 2)
        if len(watts):
            watts_ax.plot(watts[:, 0], watts[:, 1], lw=1.2, ls="--", label=f"{name} W")
    ax.set_xlabel("seconds into the measured window")
    ax.set_ylabel("latency per batch (ms)")
    watts_ax.set_ylabel("watts (total rail)")
    lines = ax.get_legend_handles_labels()
    more = watts_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)


def write_plot(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    """Latency percentiles per configuration, throughput against batch size, and (with ``--power``
    or ``--sustained``) latency and watts over time."""
    from .errors import require

    matplotlib = require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path

    timed = [r for r in rows if r.get("timeline")]
    fig, axes = plt.subplots(1, 3 if timed else 2, figsize=(18 if timed else 12, 4.5))
    ax1, ax2 = axes[0], axes[1]
    labels = [f"{Path(r['model']).name}\n{r['backend']}/{r['precision']}/b{r['batch']}" for r in rows]
    x = np.arange(len(rows))
    for offset, key in zip((-0.3, -0.1, 0.1, 0.3), ("p50_ms", "p90_ms", "p95_ms", "p99_ms")):
        ax1.bar(x + offset, [r[key] for r in rows], width=0.2, label=key.replace("_ms", ""))
    ax1.set_xticks(x)
    ax1.set_xticklabels(labels, fontsize=7)
    ax1.set_ylabel("end-to-end latency per batch (ms)")
    ax1.legend()
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(f"{Path(r['model']).name} {r['backend']}/{r['precision']}", []).append(r)
    for name, group in groups.items():
        group = sorted(group, key=lambda g: g["batch"])
        ax2.plot([g["batch"] for g in group], [g["throughput"] for g in group], marker="o", label=name)
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("batch")
    ax2.set_ylabel("images / s")
    ax2.legend(fontsize=7)
    if timed:
        _plot_timeline(axes[2], timed)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=110)
    plt.close(fig)
