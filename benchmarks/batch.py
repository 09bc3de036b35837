"""Batch inference: Spark local[N] vs the local ``lmforge batch`` path, as a fraction of ideal.

    python benchmarks/batch.py                                  # 2,000 rows, 50 ms, local[2]
    python benchmarks/batch.py --rows 4000 --latency 0.1 --concurrency 32 --master local[4]

A fixed-latency OpenAI-compatible server (benchmarks/throughput.py's, in its own process on
127.0.0.1) stands in for the model. The same compiled ``question -> answer`` program runs
over the same distinct rows (caches start empty) through

- the local path: ``lmforge batch``'s chunked, resumable runner with ``Module.abatch`` at
  ``--concurrency`` calls in flight, in this process;
- Spark: the same runner with ``--spark MASTER`` (``program_udf`` on every executor core,
  ``--concurrency`` calls in flight per executor process).

Ideal time is ``rows * latency / total concurrency`` (total: ``--concurrency`` for the local
path, executor cores x ``--concurrency`` for Spark); the fraction of ideal is
``ideal / measured``. One-time costs are left out of the timed run and printed apart: the
Spark session's start, and a warm-up job that starts every executor's Python worker and
makes its first call (Python workers are reused between jobs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from throughput import start_server  # the same fixed-latency fake server


def _write_inputs(path: Path, rows: int, prefix: str) -> Path:
    lines = (json.dumps({"id": n, "question": f"{prefix} question {n}?"}) for n in range(rows))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _measure(
    label: str,
    runner: Any,
    spec: Any,
    table: Any,
    folder: Path,
    rows: int,
    latency: float,
    total_concurrency: int,
) -> dict[str, Any]:
    from lmforge.integrations.batchrun import run_batch

    data = _write_inputs(folder / f"{label}.jsonl", rows, label)
    out = folder / f"{label}-out.jsonl"
    started = time.perf_counter()
    summary = run_batch(data, out, spec, table, runner, chunk_size=rows)
    seconds = time.perf_counter() - started
    ideal = rows * latency / total_concurrency
    return {
        "path": label,
        "rows": summary.rows,
        "failed": summary.failed,
        "total_concurrency": total_concurrency,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds, 1),
        "ideal_s": round(ideal, 2),
        "fraction_of_ideal": round(ideal / seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=16, help="per process")
    parser.add_argument("--master", default="local[2]", help="the Spark master")
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--no-cache", action="store_true", help="as `lmforge batch --no-cache`")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="lmforge-batch-bench-"))
    # Every run starts with an empty response cache (the rows are distinct too).
    os.environ["LMFORGE_CACHE_DIR"] = str(folder / "cache")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    server, base = start_server(args.latency, max_requests=10 * args.rows + 1000, lifetime=3600)
    results = []
    try:
        import lmforge as lf
        from lmforge.integrations.batchrun import local_chunk_runner
        from lmforge.integrations.outcomes import OutputTable
        from lmforge.integrations.programs import ProgramSpec

        artifact = folder / "program.json"
        lf.Predict("question -> answer", lm=lf.LM("openai/bench-model")).save(artifact)
        spec = ProgramSpec.from_file(artifact, api_base=base, cache=not args.no_cache)
        program = spec.load()
        table = OutputTable(program)
        program(question="warm-up")  # first-call imports, outside the timed run
        local = local_chunk_runner(
            program, table, spec, concurrency=args.concurrency, on_row=_no_op
        )
        results.append(
            _measure(
                "local",
                local,
                spec,
                table,
                folder,
                args.rows,
                args.latency,
                args.concurrency,
            )
        )
        if not args.skip_spark:
            results.append(_spark(args, spec, table, folder))
    finally:
        server.kill()
    for result in results:
        print(json.dumps(result))


def _spark(args: argparse.Namespace, spec: Any, table: Any, folder: Path) -> dict[str, Any]:
    from lmforge.integrations.spark import spark_chunk_runner
    from pyspark.sql import SparkSession

    started = time.perf_counter()
    session = (
        SparkSession.builder.master(args.master)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    cores = session.sparkContext.defaultParallelism
    session_s = time.perf_counter() - started
    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(
            spark_chunk_runner(args.master, spec, concurrency=args.concurrency)
        )
        started = time.perf_counter()
        runner([{"question": f"warm-up {n}"} for n in range(cores * 4)])
        warm_s = time.perf_counter() - started
        result = _measure(
            "spark",
            runner,
            spec,
            table,
            folder,
            args.rows,
            args.latency,
            cores * args.concurrency,
        )
    session.stop()
    return {**result, "master": args.master, "session_start_s": round(session_s, 1),
            "warm_up_s": round(warm_s, 1)}  # fmt: skip


def _no_op() -> None:
    pass


if __name__ == "__main__":
    main()
