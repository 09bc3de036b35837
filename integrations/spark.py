"""Batch inference on Spark: a compiled program as a pandas UDF.

``program_udf(artifact)`` returns a pandas UDF (Arrow batches) whose result is a struct of
the program's output fields plus ``error``. Each executor process rebuilds the program once
(from the artifact's bytes, shipped with the UDF) and runs every Arrow batch through
``Module.abatch`` with bounded concurrency. A row that fails has its error in ``error`` and
null outputs: no row is lost and the job does not fail.

The model is reached over HTTP from the executors: point the artifact's ``openai/...`` (or
``hosted_vllm/...``) model at a server with ``api_base=``; each executor reads its API key
from its own environment.

Needs the ``spark`` extra (``pip install 'lmforge[spark]'``) and a Java runtime.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lmforge as lf
from lmforge.errors import MissingExtraError
from lmforge.module import BatchError

from .outcomes import Column, OutputTable, plain_value
from .programs import ProgramSpec

__all__ = ["program_udf", "spark_chunk_runner"]


def program_udf(
    artifact: str | os.PathLike[str],
    *,
    concurrency: int = 16,
    model: str | None = None,
    api_base: str | None = None,
    allow_endpoints: bool = False,
    trust: Sequence[str] = (),
    json_input: bool = False,
    cache: bool = True,
) -> Any:
    """A pandas UDF that runs the compiled program in ``artifact`` on each row.

    Call it on the input columns, in the order of the program's input fields, or on one
    struct column whose fields are named like them::

        run = program_udf("triage@gpt-4o-mini.json", api_base="http://vllm:8000/v1")
        df.withColumn("out", run("ticket")).select("id", "out.*")
        df.withColumn("out", run(F.struct("ticket")))

    With ``json_input=True`` it takes one string column holding a JSON object of inputs per
    row (``spark.read.text("data.jsonl")`` gives one). The result is a struct column: the
    program's output fields (strings, numbers and booleans typed; other values JSON text)
    and ``error`` (null, or ``"ErrorType: message"`` for a row that failed).

    Args:
        artifact: the compiled program (read now; its bytes travel with the UDF).
        concurrency: calls in flight per executor process (per Arrow batch).
        model: replace every predictor's model (``openai/served-name``).
        api_base: the OpenAI-compatible server the executors call.
        allow_endpoints: trust ``api_base`` values recorded in the artifact.
        trust: modules the artifact may import (its custom program classes).
        json_input: the UDF takes one column of JSON objects instead of input columns.
        cache: use each executor's on-disk response cache (``$LMFORGE_CACHE_DIR``).
    """
    if concurrency < 1:
        raise lf.UsageError(f"concurrency must be 1 or more, got {concurrency}")
    pandas_udf, types = _pyspark()
    spec = ProgramSpec.from_file(
        artifact,
        model=model,
        api_base=api_base,
        allow_endpoints=allow_endpoints,
        trust=trust,
        cache=cache,
    )
    table = OutputTable(spec.load())  # fails here, on the driver, for a bad artifact
    body = _udf_body(spec, table.inputs, concurrency=concurrency, json_input=json_input)
    return pandas_udf(body, returnType=spark_schema(table.columns, types))


def spark_schema(columns: Sequence[Column], types: Any) -> Any:
    """The Spark struct type of the outcome columns."""
    kinds = {
        "string": types.StringType(),
        "json": types.StringType(),
        "integer": types.LongType(),
        "number": types.DoubleType(),
        "boolean": types.BooleanType(),
    }
    return types.StructType([types.StructField(c.name, kinds[c.kind], True) for c in columns])


def _udf_body(
    spec: ProgramSpec, inputs: list[str], *, concurrency: int, json_input: bool
) -> Callable[..., Any]:
    """The function Spark calls with each Arrow batch's columns (pandas Series, or a
    DataFrame for a struct column); it must not close over anything unpicklable."""
    import pandas as pd

    def apply(*columns: Any) -> Any:
        import asyncio

        program, table = _program(spec)
        rows = _batch_rows(columns, inputs, json_input=json_input)
        valid = [i for i, row in enumerate(rows) if isinstance(row, dict)]
        # Other fields of a row (ids, labels) are the caller's, not the program's inputs.
        items = [{k: v for k, v in rows[i].items() if k in table.inputs} for i in valid]
        with spec.calls():
            ran = asyncio.run(program.abatch(items, concurrency=concurrency))
        outcomes: list[Any] = [BatchError(i, {}, row) for i, row in enumerate(rows)]
        for index, outcome in zip(valid, ran, strict=True):
            outcomes[index] = outcome
        records = [table.row(outcome) for outcome in outcomes]
        return pd.DataFrame(
            {name: pd.Series([r[name] for r in records], dtype=object) for name in table.names}
        )

    # Spark reads the kind of pandas UDF from these hints (a struct column still arrives
    # as a DataFrame).
    apply.__annotations__ = {"columns": pd.Series, "return": pd.DataFrame}
    return apply


# One program per executor process and spec: a Python worker serves many tasks and batches,
# and rebuilding the program (and its HTTP pools) for each would dominate short batches.
@functools.lru_cache(maxsize=4)
def _program(spec: ProgramSpec) -> tuple[lf.Module, OutputTable]:
    program = spec.load()
    return program, OutputTable(program)


def _batch_rows(columns: Sequence[Any], inputs: list[str], *, json_input: bool) -> list[Any]:
    """Each row's inputs as a dict, or the error that makes the row unreadable."""
    if json_input:
        if len(columns) != 1:
            raise lf.UsageError("a json_input UDF takes one column of JSON objects")
        return [_json_row(value) for value in columns[0]]
    if len(columns) == 1 and hasattr(columns[0], "columns"):  # one struct column
        frame = columns[0]
        return [
            {k: plain_value(v) for k, v in record.items()}
            for record in frame.to_dict(orient="records")
        ]
    if len(columns) != len(inputs):
        raise lf.UsageError(
            f"the program takes {len(inputs)} input column(s) ({', '.join(inputs)}) in that "
            f"order, or one struct column of them; got {len(columns)} column(s)"
        )
    return [
        {name: plain_value(value) for name, value in zip(inputs, values, strict=True)}
        for values in zip(*columns, strict=True)
    ]


def _json_row(value: Any) -> dict[str, Any] | lf.UsageError:
    from lmforge.jsonlimits import loads_bounded

    try:
        record = loads_bounded(value) if isinstance(value, (str, bytes)) else None
    except ValueError:  # not JSON, or nested too deep
        record = None
    if not isinstance(record, dict):
        return lf.UsageError(f"the input is not a JSON object of inputs: {str(value)[:100]!r}")
    return record


@contextlib.contextmanager
def spark_chunk_runner(
    master: str, spec: ProgramSpec, *, concurrency: int
) -> Iterator[Callable[[list[dict[str, Any]]], list[dict[str, Any]]]]:
    """A chunk runner for ``lmforge batch --spark``: each chunk becomes a DataFrame of JSON
    inputs spread over the cluster's cores, run through :func:`program_udf`. A Spark
    session started here is stopped when the block ends (one already running is reused)."""
    import json

    from lmforge.adapters.coerce import _json_default

    _pyspark()
    from pyspark.sql import SparkSession, functions

    owned = SparkSession.getActiveSession() is None
    builder = (
        SparkSession.builder.master(master)
        .appName("lmforge-batch")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # Local executors are this machine's processes: run them on this interpreter, the
        # one that has lmforge. Spark takes their interpreter from $PYSPARK_PYTHON when the
        # context starts (default: whatever `python3` is on PATH; the spark.pyspark.python
        # setting is not read there), so it is set for that moment only.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        try:
            session = builder.getOrCreate()
        finally:
            del os.environ["PYSPARK_PYTHON"]
    else:
        session = builder.getOrCreate()
    try:
        udf = program_udf(
            spec.source or "",
            concurrency=concurrency,
            model=spec.model,
            api_base=spec.api_base,
            allow_endpoints=spec.allow_endpoints,
            trust=spec.trust,
            json_input=True,
            cache=spec.cache,
        )
        parallelism = max(1, session.sparkContext.defaultParallelism)

        def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            data = [(i, json.dumps(row, default=_json_default)) for i, row in enumerate(rows)]
            frame = session.createDataFrame(data, "row long, inputs string")
            frame = frame.repartition(min(parallelism, len(rows)))
            result = frame.select("row", udf(functions.col("inputs")).alias("out"))
            collected = sorted(result.select("row", "out.*").collect(), key=lambda r: r["row"])
            if len(collected) != len(rows):
                raise lf.LMForgeError(f"Spark returned {len(collected)} of {len(rows)} rows")
            return [{k: v for k, v in r.asDict().items() if k != "row"} for r in collected]

        yield run
    finally:
        if owned:
            session.stop()


def _pyspark() -> tuple[Any, Any]:
    try:
        import pandas  # noqa: F401  (the UDF's batches are pandas objects)
        import pyarrow  # noqa: F401
        from pyspark.sql import types
        from pyspark.sql.functions import pandas_udf
    except ImportError as exc:
        raise MissingExtraError(exc.name or "pyspark", "spark", "a Spark UDF") from None
    return pandas_udf, types
