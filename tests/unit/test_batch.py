"""``lmforge batch`` on this machine: every input row comes out, with its outputs or its
error, in input order; runs resume from their finished chunks; mistakes are one-line errors.

The model is a loopback OpenAI-compatible server (see batch_fakes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lmforge.cli.batch  # noqa: F401  (registers the command on the app)
import pytest
from batch_fakes import (
    expected_row,
    failing,
    model_server,
    read_jsonl,
    write_artifact,
    write_rows,
)
from lmforge.cli.app import app
from lmforge.integrations.batchrun import run_batch
from lmforge.integrations.outcomes import OutputTable
from lmforge.integrations.programs import ProgramSpec
from typer.testing import CliRunner


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["batch", *args])


def one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def check_rows(rows: list[dict[str, Any]], count: int) -> None:
    """Every row, in input order, with its outputs or its error (and its own columns)."""
    assert [r["id"] for r in rows] == list(range(count))
    for n, row in enumerate(rows):
        assert row["question"] == f"q-{n}"
        for key, value in expected_row(n).items():
            assert row[key] == value, (n, row)
        if failing(n):
            assert row["error"].startswith("ParseError:"), row


def test_every_row_comes_out_with_its_outputs_or_its_error(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 45)
    out = tmp_path / "out.jsonl"
    with model_server() as server:
        result = invoke(
            str(artifact), "-i", str(data), "-o", str(out), "--api-base", server.base_url,
            "--chunk-size", "10",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert server.stats.requests == 45
    rows = read_jsonl(out)
    check_rows(rows, 45)
    failed = sum(1 for n in range(45) if failing(n))
    assert sum(1 for r in rows if r["error"]) == failed
    assert "45 row(s)" in result.output and f"({failed} failed)" in result.output
    assert not (tmp_path / "out.jsonl.chunks").exists()  # the run folder is gone when done


def test_parquet_in_and_out_keeps_types_and_renames_clashing_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    artifact = write_artifact(tmp_path / "program.json")
    table = pa.table(
        {
            "id": list(range(12)),
            "question": [f"q-{n}" for n in range(12)],
            "answer": [f"gold-{n}" for n in range(12)],  # a label named like an output
        }
    )
    parquet.write_table(table, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    with model_server() as server:
        result = invoke(
            str(artifact), "-i", str(tmp_path / "in.parquet"), "-o", str(out),
            "--api-base", server.base_url,
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = parquet.read_table(out)
    assert written.column_names == ["id", "question", "answer_input", "answer", "score", "error"]
    assert written.schema.field("score").type == pa.int64()
    assert written.schema.field("id").type == pa.int64()
    rows = written.to_pylist()
    check_rows(rows, 12)
    assert [r["answer_input"] for r in rows] == [f"gold-{n}" for n in range(12)]


class InterruptedRunError(Exception):
    pass


def test_an_interrupted_run_resumes_from_its_finished_chunks(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 50)
    out = tmp_path / "out.jsonl"
    ran: list[int] = []
    interrupt_at = [3]

    def fake_outcomes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ran.append(len(rows))
        if len(ran) == interrupt_at[0]:
            raise InterruptedRunError  # as Ctrl-C or a lost machine would, mid-run
        return [
            {"answer": f"A-{int(str(r['question'])[2:])}", "score": 1, "error": None} for r in rows
        ]

    spec = ProgramSpec.from_file(artifact)
    table = OutputTable(spec.load())
    with pytest.raises(InterruptedRunError):
        run_batch(data, out, spec, table, fake_outcomes, chunk_size=10)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "out.jsonl.chunks").iterdir()) == [
        "chunk-000000.jsonl",
        "chunk-000001.jsonl",
        "run.json",
    ]
    ran.clear()
    interrupt_at[0] = 0
    summary = run_batch(data, out, spec, table, fake_outcomes, chunk_size=10)
    assert ran == [10, 10, 10]  # only the three chunks that had not finished
    assert summary.resumed_chunks == 2 and summary.rows == 50
    assert [r["answer"] for r in read_jsonl(out)] == [f"A-{n}" for n in range(50)]


def test_a_killed_run_resumes_without_redoing_finished_chunks(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 60)
    out = tmp_path / "out.jsonl"
    chunks = tmp_path / "out.jsonl.chunks"
    with model_server(latency=0.05) as server:
        command = [
            sys.executable, "-m", "lmforge.cli.main", "batch", str(artifact),
            "-i", str(data), "-o", str(out), "--api-base", server.base_url,
            "--chunk-size", "10", "--concurrency", "2",
        ]  # fmt: skip
        child = subprocess.Popen(command, env=subprocess_env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(list(chunks.glob("chunk-*.jsonl"))) < 2:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "no chunk finished in time"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        finished = len(list(chunks.glob("chunk-*.jsonl")))
        assert 2 <= finished < 6 and not out.exists()
        before = server.stats.requests
        # A fresh cache: whatever the first run cached cannot hide repeated work.
        env = {**subprocess_env, "LMFORGE_CACHE_DIR": str(tmp_path / "cache2")}
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert server.stats.requests - before == 60 - 10 * finished
    assert f"{finished} chunk(s) resumed" in rerun.stderr
    check_rows(read_jsonl(out), 60)
    assert not chunks.exists()


def test_a_run_folder_of_another_run_is_refused(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 5)
    chunks = tmp_path / "out.jsonl.chunks"
    chunks.mkdir()
    (chunks / "run.json").write_text(json.dumps({"format": 1, "input": "other"}))
    result = invoke(str(artifact), "-i", str(data), "-o", str(tmp_path / "out.jsonl"))
    line = one_line_error(result, 2)
    assert "unfinished run with another" in line and "delete that folder" in line


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('{"question": "q-1"}\nnot json\n', ".jsonl", "line 2: not valid JSON"),
        ('["a list"]\n', ".jsonl", "line 1: expected a JSON object"),
        ("", ".jsonl", "has no records"),
        ("id,question\n", ".csv", "use a .jsonl or .parquet file"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = tmp_path / f"in{suffix}"
    data.write_text(content)
    result = invoke(str(artifact), "-i", str(data), "-o", str(tmp_path / "out.jsonl"))
    assert message in one_line_error(result, 2)


def test_bad_options_are_one_line_usage_errors(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 2)
    out = str(tmp_path / "out.jsonl")
    assert "--output" in one_line_error(invoke(str(artifact), "-i", str(data), "-o", "x.txt"), 2)
    line = one_line_error(invoke(str(artifact), "-i", str(data), "-o", out, "--chunk-size", "0"), 2)
    assert "--chunk-size must be 1 or more" in line
    line = one_line_error(invoke(str(artifact), "-i", str(data), "-o", out, "--spark", " "), 2)
    assert "--spark is empty" in line
    missing = one_line_error(invoke(str(tmp_path / "nope.json"), "-i", str(data), "-o", out), 1)
    assert "no such artifact file" in missing


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = tmp_path / "in.parquet"
    data.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    result = invoke(str(artifact), "-i", str(data), "-o", str(tmp_path / "out.jsonl"))
    assert "pip install 'lmforge[parquet]'" in one_line_error(result, 1)


def test_the_command_and_the_integrations_import_no_engine(python: str) -> None:
    code = (
        "import sys, json, lmforge, lmforge.integrations, lmforge.cli.batch\n"
        "import lmforge.integrations.batchrun\n"
        "heavy = ('pyspark', 'pyarrow', 'pandas', 'numpy', 'py4j')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_a_spec_rebuilds_the_program_where_the_artifact_file_is_not(tmp_path: Path) -> None:
    # An executor on another machine has the artifact's bytes, not the driver's file.
    artifact = write_artifact(tmp_path / "program.json")
    spec = ProgramSpec.from_file(artifact, api_base="http://127.0.0.1:9/v1")
    artifact.write_text("{}")  # the driver's file is gone or changed
    program = spec.load()
    assert spec.artifact_path() != artifact and spec.artifact_path().read_bytes() == spec.data
    lm = program.predictors()[0].lm
    assert (lm.model, lm.api_base) == ("openai/fake-model", "http://127.0.0.1:9/v1")


def test_a_run_folder_with_only_a_killed_writers_temporary_file_is_reused(
    tmp_path: Path,
) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 3)
    chunks = tmp_path / "out.jsonl.chunks"
    chunks.mkdir()
    # Killed while writing run.json: only its temporary file is there.
    (chunks / ".run.json.0badc0de-999999-deadbeef.tmp").write_text("{")
    out = tmp_path / "out.jsonl"
    with model_server() as server:
        result = invoke(
            str(artifact), "-i", str(data), "-o", str(out), "--api-base", server.base_url
        )
    assert result.exit_code == 0, result.output
    check_rows(read_jsonl(out), 3)


def test_no_cache_calls_the_model_again_for_rows_already_asked(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "program.json")
    data = write_rows(tmp_path / "in.jsonl", 8)
    args = [str(artifact), "-i", str(data), "-o", str(tmp_path / "out.jsonl")]
    with model_server() as server:
        for extra in ([], [], ["--no-cache"]):
            result = invoke(*args, "--api-base", server.base_url, *extra)
            assert result.exit_code == 0, result.output
        # The second run is answered from the cache; the third, without it, asks again.
        assert server.stats.requests == 16
    check_rows(read_jsonl(tmp_path / "out.jsonl"), 8)
