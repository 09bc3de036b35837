"""Run the whole reliability suite at full size and print a summary table.

    .venv/bin/python tests/reliability/run.py            # or: make reliability
    .venv/bin/python tests/reliability/run.py --quick    # the reduced sizes of the default run

Steps:

1. ``pytest -m reliability tests/reliability`` with ``LMFORGE_RELIABILITY_FULL=1``: fault
   injection (evaluate, BootstrapFewShot, MIPRO, a served program), crash safety (cache
   writers, SIGKILL during save and export), bad input (hypothesis, schemathesis) and
   security, at full size. The load test is left to step 3.
2. ``tests/acceptance/test_compile_resume.py``: SIGKILL during ``lmforge compile`` (MIPRO),
   rerun, finished trials not redone, same artifact as an uninterrupted run.
3. The load test: 256 clients for 60 s against the program server (``load.py``).

Exit status 0 when every step passed. Figures go to ``--json`` (default
``reliability-report.json`` in the working directory is not written unless asked).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from load import LoadReport, run_load  # noqa: E402

FULL_ENV = "LMFORGE_RELIABILITY_FULL"
REPORT_ENV = "LMFORGE_RELIABILITY_REPORT"
RESUME_NOTES = {
    "test_killed_compile_resumes_without_redoing_finished_trials": (
        "SIGKILL mid-search, rerun: finished trials kept, same artifact"
    ),
    "test_two_workers_share_one_study": "two worker processes share one optuna study",
}


def _pytest(
    args: list[str], env: dict[str, str], junit: Path
) -> tuple[int, list[dict[str, Any]], float]:
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *args,
    ]
    print("$", " ".join(command[2:]), flush=True)
    code = subprocess.call(command, cwd=ROOT, env=env)
    wall = time.perf_counter() - started
    cases: list[dict[str, Any]] = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
            cases.append(
                {
                    "module": case.get("classname", "").rsplit(".", 1)[-1],
                    "name": case.get("name", ""),
                    "seconds": float(case.get("time", 0) or 0),
                    "outcome": outcome,
                }
            )
    return code, cases, wall


def _figures(report_file: Path) -> dict[str, list[dict[str, Any]]]:
    figures: dict[str, list[dict[str, Any]]] = {}
    if report_file.exists():
        for line in report_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                figures.setdefault(entry.pop("check"), []).append(entry)
    return figures


def _short(figures: list[dict[str, Any]]) -> str:
    parts = []
    for entry in figures:
        parts.append(", ".join(f"{k}={_fmt(v)}" for k, v in entry.items()))
    return "; ".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + " ".join(f"{k}:{_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("check", "result", "time", "key figures")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [
        " | ".join(h.ljust(w) for h, w in zip(header[:3], widths, strict=True)) + " | " + header[3]
    ]
    lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 30)
    for row in rows:
        lines.append(
            " | ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + " | " + row[3]
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced sizes (what the default pytest run uses)"
    )
    parser.add_argument("--clients", type=int, default=256, help="load test clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="load test duration")
    parser.add_argument(
        "--skip-resume", action="store_true", help="leave out the compile resume test"
    )
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds = 64, 6.0

    started = time.perf_counter()
    rows: list[tuple[str, str, str, str]] = []
    results: dict[str, Any] = {"steps": []}
    ok = True
    with tempfile.TemporaryDirectory(prefix="lmforge-reliability-") as scratch:
        work = Path(scratch)
        report_file = work / "figures.jsonl"
        env = {**os.environ, REPORT_ENV: str(report_file), "PYTHONDONTWRITEBYTECODE": "1"}
        if not args.quick:
            env[FULL_ENV] = "1"

        # 1. The pytest suite (the load test runs separately below).
        code, cases, wall = _pytest(
            [
                "-m",
                "reliability",
                "tests/reliability",
                "--deselect",
                "tests/reliability/test_load.py::test_program_server_under_sustained_concurrency",
            ],
            env,
            work / "suite.xml",
        )
        figures = _figures(report_file)
        ok &= code == 0
        for case in cases:
            rows.append(
                (
                    f"{case['module']}::{case['name']}",
                    case["outcome"],
                    f"{case['seconds']:.1f}s",
                    _short(
                        figures.get(case["name"]) or figures.get(case["name"].split("[")[0], [])
                    ),
                )
            )
        results["steps"].append(
            {
                "step": "pytest -m reliability",
                "exit": code,
                "seconds": wall,
                "cases": cases,
                "figures": figures,
            }
        )

        # 2. SIGKILL during `lmforge compile`, then resume (the optimizer's acceptance test).
        resume = ROOT / "tests/acceptance/test_compile_resume.py"
        if not args.skip_resume and resume.exists():
            code, cases, wall = _pytest([str(resume.relative_to(ROOT))], env, work / "resume.xml")
            ok &= code == 0
            for case in cases:
                rows.append(
                    (
                        f"{case['module']}::{case['name']}",
                        case["outcome"],
                        f"{case['seconds']:.1f}s",
                        RESUME_NOTES.get(case["name"], ""),
                    )
                )
            results["steps"].append(
                {"step": "compile resume", "exit": code, "seconds": wall, "cases": cases}
            )

        # 3. Sustained load.
        print(f"$ load test: {args.clients} clients for {args.seconds:g} s", flush=True)
        load_started = time.perf_counter()
        report: LoadReport = run_load(args.clients, args.seconds, 0.05)
        ok &= report.passed
        rows.append(
            (
                f"load ({args.clients} clients, {args.seconds:g} s)",
                "passed" if report.passed else "FAILED",
                f"{time.perf_counter() - load_started:.1f}s",
                report.summary(),
            )
        )
        results["steps"].append(
            {
                "step": "load",
                "passed": report.passed,
                "figures": {**report.__dict__, "memory_flat": report.memory_flat},
            }
        )

    total = time.perf_counter() - started
    print()
    print(_table(rows))
    print(
        f"\n{'PASSED' if ok else 'FAILED'}: {sum(r[1] == 'passed' for r in rows)} passed, "
        f"{sum(r[1] in ('FAILED', 'ERROR') for r in rows)} failed, "
        f"{sum(r[1] == 'skipped' for r in rows)} skipped in {total / 60:.1f} min"
    )
    results.update(passed=ok, seconds=total)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
