"""A resumable batch run: input rows through a compiled program, in chunks, to one table.

Each finished chunk's outcomes are written atomically into a run folder beside the output
(``out.parquet.chunks/``) with a ``run.json`` naming the input, artifact, model and chunk
size. A run that is interrupted or killed resumes from the chunks already there; the output
file is assembled atomically at the end and the run folder removed. A run folder of a
different run (another input, artifact, model or chunk size) is refused, never mixed in.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge._atomic import write_json_atomic, write_text_atomic
from lmforge.errors import UsageError
from lmforge.progress import ProgressTask

from .outcomes import ERROR_COLUMN, OutputTable
from .programs import ProgramSpec
from .tables import file_digest, read_rows, table_format, write_table

__all__ = ["BatchSummary", "ChunkRunner", "local_chunk_runner", "run_batch"]

ChunkRunner = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
"""Runs one chunk of input rows; returns one outcome row (outputs + ``error``) per input."""

_RUN_FORMAT = 1


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did."""

    rows: int
    failed: int
    chunks: int
    resumed_chunks: int
    seconds: float


def local_chunk_runner(
    program: lf.Module,
    table: OutputTable,
    spec: ProgramSpec,
    *,
    concurrency: int,
    on_row: Callable[[], None],
) -> ChunkRunner:
    """Run each chunk in this process with ``Module.abatch`` (``concurrency`` in flight),
    under the spec's call settings."""
    import asyncio

    def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = [{k: row[k] for k in table.inputs if k in row} for row in rows]
        with spec.calls():
            outcomes = asyncio.run(
                program.abatch(items, concurrency=concurrency, on_result=lambda *_: on_row())
            )
        return [table.row(outcome) for outcome in outcomes]

    return run


def run_batch(
    input_path: Path,
    output_path: Path,
    spec: ProgramSpec,
    table: OutputTable,
    runner: ChunkRunner,
    *,
    chunk_size: int,
    progress: ProgressTask | None = None,
) -> BatchSummary:
    """Run every chunk not already finished, then assemble the output.

    ``progress`` gets the row count, and is advanced over the chunks found finished (the
    runner advances it over the rows it runs).
    """
    started = time.perf_counter()
    table_format(output_path, "--output")
    rows = read_rows(input_path)
    folder = output_path.with_name(output_path.name + ".chunks")
    identity = {
        "format": _RUN_FORMAT,
        "input": file_digest(input_path),
        "artifact": spec.digest,
        "model": spec.model,
        "chunk_size": chunk_size,
        "rows": len(rows),
    }
    _claim(folder, identity)
    if progress is not None:
        progress.update(total=len(rows))
    starts = range(0, len(rows), chunk_size)
    outcomes: list[dict[str, Any]] = []
    resumed = 0
    for number, start in enumerate(starts):
        chunk = rows[start : start + chunk_size]
        path = folder / f"chunk-{number:06d}.jsonl"
        done = _read_chunk(path, len(chunk), table.names)
        if done is None:
            done = runner(chunk)
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done)
            write_text_atomic(path, text)
        else:
            resumed += 1
            if progress is not None:
                progress.advance(len(chunk))
        outcomes.extend(done)
    write_table(output_path, rows, outcomes, table.columns)
    shutil.rmtree(folder, ignore_errors=True)
    return BatchSummary(
        rows=len(rows),
        failed=sum(1 for o in outcomes if o.get(ERROR_COLUMN) is not None),
        chunks=len(starts),
        resumed_chunks=resumed,
        seconds=time.perf_counter() - started,
    )


def _claim(folder: Path, identity: dict[str, Any]) -> None:
    """Create the run folder, or check that the one there belongs to this very run."""
    manifest = folder / "run.json"
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if recorded != identity:
            differs = (
                sorted(k for k in identity if recorded.get(k) != identity[k])
                if isinstance(recorded, dict)
                else ["run.json"]
            )
            raise UsageError(
                f"{folder} holds an unfinished run with another {', '.join(differs)}; "
                "delete that folder to start over, or rerun with its inputs to resume it"
            )
        return
    # Hidden entries are the temporary files of a writer killed before run.json was in place.
    if folder.exists() and any(not p.name.startswith(".") for p in folder.iterdir()):
        raise UsageError(f"{folder} exists and is not a batch run folder; move it away")
    write_json_atomic(manifest, identity)


def _read_chunk(path: Path, expected: int, names: Sequence[str]) -> list[dict[str, Any]] | None:
    """A finished chunk's outcomes, or None when it is not there (or not usable)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    wanted = set(names)
    if len(rows) != expected or any(not isinstance(r, dict) or set(r) != wanted for r in rows):
        return None
    return rows
