"""Mutation testing of the base layer against its fast unit tests (cosmic-ray): for each module, every
mutant cosmic-ray makes is run against the tests that should notice it; the kill rate and each
surviving mutant go to benchmarks/results/mutation.{md,json}.

    .venv/bin/pip install cosmic-ray
    .venv/bin/python tools/mutation_check.py                       # every module below (long)
    .venv/bin/python tools/mutation_check.py --modules fileio labels

Not part of the default test run: it takes minutes per module. cosmic-ray mutates the source file in
place while it runs (and restores it): do not edit the module at the same time. A survivor is either
an equivalent mutant (it changes nothing a caller can see: say why in EQUIVALENT) or a missing test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET = 0.80

# module -> the fast tests that should kill its mutants
MODULES: Dict[str, Dict[str, Any]] = {
    "errors": {
        "path": "edge_squeeze/errors.py",
        "tests": ["tests/test_errors.py"],
    },
    "labels": {"path": "edge_squeeze/labels.py", "tests": ["tests/test_labels.py"]},
    "fileio": {"path": "edge_squeeze/fileio.py", "tests": ["tests/test_atomic_writes.py"]},
    "metadata": {
        "path": "edge_squeeze/metadata.py",
        "tests": ["tests/test_classifier.py", "tests/test_hostile_inputs.py"],
    },
    "preprocess": {
        "path": "edge_squeeze/preprocess.py",
        "tests": ["tests/test_preprocess.py", "tests/test_properties.py"],
    },
    "select": {
        "path": "runtimes/select.py",
        "tests": ["tests/test_tensorrt_logic.py", "tests/test_classifier.py"],
    },
    "engine_sidecar": {"path": "runtimes/engine_sidecar.py", "tests": ["tests/test_tensorrt_logic.py"]},
    "tensorrt_plan": {
        "path": "export/tensorrt_plan.py",
        "tests": ["tests/test_tensorrt_logic.py", "tests/test_tensorrt_api.py"],
    },
}

# survivors judged equivalent: (module, line, operator) -> why no test can tell them apart
# (line numbers of the modules as they are now: recheck them when a module changes)
CHUNK = "the read size of sha256_file changes its speed, not the hash (a negative size reads all)"
EQUIVALENT: Dict[tuple, str] = {
    **{
        ("fileio", 117, op): CHUNK
        for op in (
            "core/ReplaceBinaryOperator_LShift_Add",
            "core/ReplaceBinaryOperator_LShift_Sub",
            "core/ReplaceBinaryOperator_LShift_Mul",
            "core/ReplaceBinaryOperator_LShift_Mod",
            "core/ReplaceBinaryOperator_LShift_Pow",
            "core/ReplaceBinaryOperator_LShift_BitOr",
            "core/ReplaceBinaryOperator_LShift_BitXor",
            "core/NumberReplacer",
        )
    },
    (
        "fileio",
        20,
        "core/NumberReplacer",
    ): "os.umask(x) returns the previous mask whatever x is, and it is restored",
    ("fileio", 61, "core/NumberReplacer"): "the pid is the first dot-separated field either way",
    **{
        (
            "fileio",
            62,
            op,
        ): "this process's own pid is alive, so the later liveness check already keeps its files"
        for op in (
            "core/ReplaceComparisonOperator_NotEq_Gt",
            "core/ReplaceComparisonOperator_NotEq_GtE",
            "core/ReplaceComparisonOperator_NotEq_Lt",
            "core/ReplaceComparisonOperator_NotEq_LtE",
            "core/ReplaceComparisonOperator_NotEq_IsNot",
            "core/ReplaceAndWithOr",
        )
    },
    ("labels", 63, "core/NumberReplacer"): "the first word of a line is the same for any maxsplit",
    (
        "labels",
        68,
        "core/ReplaceComparisonOperator_Gt_NotEq",
    ): "split(None, 1) gives 1 or 2 parts: != 1 is > 1",
}


def run_module(name: str, timeout: float) -> Dict[str, Any]:
    """cosmic-ray on one module; its outcome per mutant."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome

    spec = MODULES[name]
    tests = " ".join(spec["tests"])
    work = Path(tempfile.mkdtemp(prefix=f"mutation-{name}-"))
    config = work / "config.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{spec["path"]}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"\n'
        '\n[cosmic-ray.distributor]\nname = "local"\n'
    )
    session = work / "session.sqlite"
    cosmic = shutil.which("cosmic-ray", path=str(Path(sys.executable).parent)) or "cosmic-ray"
    subprocess.run([cosmic, "init", str(config), str(session)], cwd=REPO, check=True)
    subprocess.run([cosmic, "exec", str(config), str(session)], cwd=REPO, check=True)
    killed, survived, other = 0, [], 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            outcome = result.test_outcome
            if outcome == TestOutcome.KILLED:
                killed += 1
            elif outcome == TestOutcome.SURVIVED:
                mutation = item.mutations[0]
                key = (name, mutation.start_pos[0], mutation.operator_name)
                survived.append(
                    {
                        "line": mutation.start_pos[0],
                        "operator": mutation.operator_name,
                        "diff": (result.diff or "").strip(),
                        "equivalent": EQUIVALENT.get(key),
                    }
                )
            else:
                other += 1  # incompetent: the mutant does not even import
    shutil.rmtree(work, ignore_errors=True)
    judged = killed + len(survived)
    equivalent = sum(1 for s in survived if s["equivalent"])
    rate = (killed + equivalent) / judged if judged else 1.0
    return {
        "module": spec["path"],
        "tests": spec["tests"],
        "killed": killed,
        "survived": survived,
        "incompetent": other,
        "kill_rate": rate,
        "meets_target": rate >= TARGET,
    }


def write_results(results: List[Dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    old = RESULTS / "mutation.json"
    merged = {r["module"]: r for r in (json.loads(old.read_text())["modules"] if old.is_file() else [])}
    merged.update({r["module"]: r for r in results})
    ordered = [merged[k] for k in sorted(merged)]
    (RESULTS / "mutation.json").write_text(
        json.dumps({"target": TARGET, "modules": ordered}, indent=2) + "\n"
    )
    lines = [
        f"Mutation testing (cosmic-ray, `tools/mutation_check.py`): the share of mutants the module's fast "
        f"tests kill, equivalent mutants counted as killed; target {TARGET:.0%} per module.",
        "",
        "| module | tests | mutants | killed | survived (equivalent) | kill rate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in ordered:
        equivalent = sum(1 for s in r["survived"] if s["equivalent"])
        total = r["killed"] + len(r["survived"])
        lines.append(
            f"| `{r['module']}` | {', '.join(Path(t).name for t in r['tests'])} | {total} | {r['killed']} | "
            f"{len(r['survived'])} ({equivalent}) | {r['kill_rate']:.1%}{'' if r['meets_target'] else ' (under target)'} |"
        )
    lines += ["", "## Survivors", ""]
    for r in ordered:
        for s in r["survived"]:
            why = f" — equivalent: {s['equivalent']}" if s["equivalent"] else ""
            first = next(
                (d for d in s["diff"].splitlines() if d.startswith("+") and not d.startswith("+++")), ""
            )
            lines.append(f"- `{r['module']}:{s['line']}` {s['operator']}: `{first[1:].strip()}`{why}")
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="*", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    args = parser.parse_args()
    results = []
    for name in args.modules:
        result = run_module(name, args.timeout)
        print(
            f"{result['module']}: {result['kill_rate']:.1%} killed ({len(result['survived'])} survived)",
            flush=True,
        )
        results.append(result)
    write_results(results)


if __name__ == "__main__":
    main()
