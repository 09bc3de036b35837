"""``lmforge batch``: run a compiled program over a JSONL or Parquet file, locally or on Spark."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer
from lmforge.errors import UsageError

from . import options as check
from .app import app, friendly
from .loading import TRUST_HELP, is_lm_spec


@app.command()
@friendly
def batch(
    artifact: Path = typer.Argument(..., help="A compiled program (artifact JSON)."),
    input: Path = typer.Option(
        ..., "--input", "-i", help="Input rows: a .jsonl or .parquet file, one row per call."
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Where to write the input rows with the outputs and an error column "
        "(.parquet or .jsonl).",
    ),
    spark: str | None = typer.Option(
        None,
        "--spark",
        help="Run on Spark at this master (local[2], spark://host:7077, ...); "
        "needs the 'spark' extra.",
    ),
    concurrency: int = typer.Option(
        16, help="Calls in flight (per Spark executor process with --spark)."
    ),
    chunk_size: int = typer.Option(
        1000,
        "--chunk-size",
        help="Rows per chunk; a rerun skips the chunks already finished.",
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Override the model of every predictor."
    ),
    api_base: str | None = typer.Option(
        None,
        "--api-base",
        envvar="LMFORGE_API_BASE",
        help="The OpenAI-compatible server to call (http://host:8000/v1); "
        "keys come from the environment.",
    ),
    allow_endpoints: bool = typer.Option(
        False, help="Trust api_base values stored in the artifact."
    ),
    trust: list[str] = typer.Option([], "--trust", help=TRUST_HELP),
    cache: bool = typer.Option(
        True, help="Use the on-disk response cache ($LMFORGE_CACHE_DIR) for the calls."
    ),
) -> None:
    """Run a compiled program on every row of a file; failed rows keep their error, none is
    lost, and an interrupted run resumes from its finished chunks."""
    from lmforge.integrations.batchrun import local_chunk_runner, run_batch
    from lmforge.integrations.outcomes import OutputTable
    from lmforge.integrations.programs import ProgramSpec, configure_lms
    from lmforge.integrations.tables import table_format
    from lmforge.progress import task

    model = check.model_option(model)
    check.at_least(concurrency, "--concurrency", 1)
    check.at_least(chunk_size, "--chunk-size", 1)
    table_format(input, "--input")
    table_format(output, "--output")
    if spark is not None and not spark.strip():
        raise UsageError("--spark is empty; pass a master such as local[2] or spark://host:7077")
    if spark is not None and model is not None and is_lm_spec(model):
        raise UsageError("--spark needs --model as a model name (executors rebuild the LM from it)")
    spec = ProgramSpec.from_file(
        artifact,
        model=model,
        api_base=api_base,
        allow_endpoints=allow_endpoints,
        trust=trust,
        cache=cache,
    )
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(task("batch", None))
        if spark is None:
            from .run import load_program

            program = load_program(
                artifact, model=model, allow_endpoints=allow_endpoints, trust=trust
            )
            if api_base:
                configure_lms(program, model=None, api_base=api_base)
            table = OutputTable(program)
            runner = local_chunk_runner(
                program, table, spec, concurrency=concurrency, on_row=progress.advance
            )
        else:
            from lmforge.integrations.spark import spark_chunk_runner

            table = OutputTable(spec.load())
            on_spark = stack.enter_context(
                spark_chunk_runner(spark.strip(), spec, concurrency=concurrency)
            )

            def runner(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
                done = on_spark(rows)
                progress.advance(len(rows))
                return done

        summary = run_batch(
            input, output, spec, table, runner, chunk_size=chunk_size, progress=progress
        )
    resumed = f", {summary.resumed_chunks} chunk(s) resumed" if summary.resumed_chunks else ""
    sys.stderr.write(
        f"{summary.rows} row(s) -> {output} in {summary.seconds:.1f}s "
        f"({summary.failed} failed{resumed})\n"
    )
