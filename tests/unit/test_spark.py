"""Spark batch inference with a real pyspark in local[2] mode: the program UDF on 2,000 rows
gives every row, and the same rows as the local ``lmforge batch`` path; ``lmforge batch
--spark`` writes the same table. The model is a loopback OpenAI-compatible server reached
over HTTP from the executor processes (see batch_fakes).

Needs the ``spark`` extra and a Java runtime; skipped without either.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.spark

pytest.importorskip("pyspark")
pytest.importorskip("pyarrow")
pytest.importorskip("pandas")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip(
        "Spark needs a Java runtime (Debian: default-jre-headless)", allow_module_level=True
    )

import lmforge.cli.batch  # noqa: E402, F401  (registers the command on the app)
from batch_fakes import (  # noqa: E402
    expected_row,
    failing,
    model_server,
    read_jsonl,
    write_artifact,
    write_rows,
)
from lmforge.cli.app import app  # noqa: E402
from lmforge.integrations.spark import program_udf  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

ROWS = 2000


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local[2] session for the module; its executors run this interpreter, with a
    private cache folder and real network calls blocked (they inherit this environment)."""
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        patch.setenv("LMFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("executor-cache")))
        patch.setenv("LMFORGE_BLOCK_NETWORK", "1")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("lmforge-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        try:
            yield session
        finally:
            session.stop()


def outcomes_by_id(rows: list[dict[str, Any]]) -> dict[int, tuple[Any, Any, Any]]:
    return {int(r["id"]): (r["answer"], r["score"], r["error"]) for r in rows}


def test_udf_gives_every_row_and_the_local_paths_rows(spark: Any, tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", ROWS)
    with model_server() as server:
        run = program_udf(artifact, api_base=server.base_url, concurrency=16)
        frame = spark.read.json(str(data)).repartition(4)
        result = frame.select("id", run("question").alias("out")).select("id", "out.*")
        on_spark = [row.asDict() for row in result.collect()]
        assert server.stats.requests == ROWS  # every row was a real call from an executor
        args = ["batch", str(artifact), "-i", str(data), "-o", str(tmp_path / "out.jsonl")]
        local = CliRunner().invoke(app, [*args, "--api-base", server.base_url])
        assert local.exit_code == 0, local.output
    assert len(on_spark) == ROWS
    spark_rows = outcomes_by_id(on_spark)
    assert sorted(spark_rows) == list(range(ROWS))
    assert spark_rows == outcomes_by_id(read_jsonl(tmp_path / "out.jsonl"))
    for n in (0, 3, 1999):
        row = {"answer": spark_rows[n][0], "score": spark_rows[n][1], "error": spark_rows[n][2]}
        assert expected_row(n).items() <= row.items()
    assert sum(1 for v in spark_rows.values() if v[2]) == sum(map(failing, range(ROWS)))


def test_struct_and_json_inputs_and_unreadable_rows(spark: Any, tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": n, "question": f"q-{n}"}) for n in range(10)] + ["not json"]
    data.write_text("\n".join(lines) + "\n")
    from pyspark.sql import functions

    with model_server() as server:
        by_json = program_udf(artifact, api_base=server.base_url, json_input=True)
        text = spark.read.text(str(data))
        rows = text.select(by_json("value").alias("out")).select("out.*").collect()
        by_struct = program_udf(artifact, api_base=server.base_url)
        pairs = [(n, f"q-{n}") for n in range(10)]
        frame = spark.createDataFrame(pairs, "id long, question string")
        structs = frame.select("id", by_struct(functions.struct("question")).alias("o")).collect()
    assert len(rows) == 11  # the unreadable line is a row with its error, not a failed job
    errors = [r["error"] for r in rows if r["error"]]
    assert sum("not a JSON object" in e for e in errors) == 1
    assert sorted(r["answer"] for r in rows if r["answer"]) == sorted(
        f"A-{n}" for n in range(10) if not failing(n)
    )
    assert {r["id"]: r["o"]["score"] for r in structs} == {
        n: None if failing(n) else n for n in range(10)
    }


def test_lmforge_batch_on_spark_writes_the_same_table(spark: Any, tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out.parquet"
    with model_server() as server:
        args = ["batch", str(artifact), "-i", str(data), "-o", str(out), "--spark", "local[2]"]
        result = CliRunner().invoke(
            app, [*args, "--api-base", server.base_url, "--chunk-size", "100"]
        )
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as parquet

    rows = parquet.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == list(range(300))
    for n, row in enumerate(rows):
        assert expected_row(n).items() <= row.items(), row
    assert spark.sparkContext._jsc is not None  # the test's session was reused, not stopped


def test_mlflow_spark_udf_runs_the_logged_model(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlflow.pyfunc.spark_udf`` on a model logged by ``log_model``: each executor loads
    the artifact from the model folder and calls the model at the endpoint model_config
    names; every row comes back typed."""
    mlflow = pytest.importorskip("mlflow")
    from lmforge.integrations.mlflow import log_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    info = log_model(write_artifact(tmp_path / "program.json"), "program")
    # The pyfunc model raises on a row it cannot answer (MLflow's contract): good rows only.
    ids = [n for n in range(300) if not failing(n)]
    frame = spark.createDataFrame([(n, f"q-{n}") for n in ids], "id long, question string")
    with model_server() as server:
        udf = mlflow.pyfunc.spark_udf(
            spark,
            info.model_uri,
            result_type="answer string, score long",
            env_manager="local",
            model_config={"api_base": server.base_url},
        )
        out = frame.repartition(3).select("id", udf("question").alias("o")).collect()
        assert server.stats.requests == len(ids)  # every row a real call from an executor
    assert sorted((r["id"], r["o"]["answer"], r["o"]["score"]) for r in out) == [
        (n, f"A-{n}", n) for n in ids
    ]


def test_lmforge_batch_on_a_local_master_runs_executors_on_this_interpreter(
    tmp_path: Path,
) -> None:
    """Without $PYSPARK_PYTHON, Spark starts executors with whatever `python3` is on PATH
    (often one without lmforge or pandas); ``lmforge batch --spark local[N]`` must use the
    interpreter it runs on. A `python3` that refuses to run comes first on PATH here."""
    import subprocess

    decoy = tmp_path / "bin"
    decoy.mkdir()
    (decoy / "python3").write_text("#!/bin/sh\necho 'not this interpreter' >&2\nexit 3\n")
    (decoy / "python3").chmod(0o755)
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 20)
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_PYTHON"}
    env["PATH"] = f"{decoy}{os.pathsep}{env.get('PATH', '')}"
    with model_server() as server:
        args = ["batch", str(artifact), "-i", str(data), "-o", str(tmp_path / "out.jsonl")]
        args += ["--spark", "local[2]", "--api-base", server.base_url]
        result = subprocess.run(
            [sys.executable, "-m", "lmforge.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 20
