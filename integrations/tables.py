"""Reading a batch run's input rows and writing its output table (JSONL or Parquet).

JSONL needs nothing beyond the standard library; Parquet needs pyarrow (the ``parquet``
extra), imported only when a Parquet file is read or written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lmforge.data import DataError
from lmforge.errors import MissingExtraError, UsageError

from .outcomes import Column

__all__ = ["FORMATS", "file_digest", "read_rows", "table_format", "write_table"]

FORMATS = (".jsonl", ".parquet")


def table_format(path: Path, option: str) -> str:
    """``"jsonl"`` or ``"parquet"`` from the file's suffix (``option`` names it in errors)."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"{option} {path}: unknown format {suffix or '(no suffix)'}; "
            "use a .jsonl or .parquet file"
        )
    return suffix[1:]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL or Parquet file, as dicts, in file order."""
    kind = table_format(path, "--input")
    if not path.is_file():
        raise DataError(f"{path}: no such input file")
    if kind == "parquet":
        parquet = _pyarrow_parquet("reading Parquet input")
        try:
            rows: list[dict[str, Any]] = parquet.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow's errors name the damage; one line is enough
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    else:
        rows = list(_jsonl_records(path))
    if not rows:
        raise DataError(f"{path}: the file has no records")
    return rows


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    from lmforge.jsonlimits import TooDeepError, loads_bounded

    with path.open(encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = loads_bounded(line)
                except TooDeepError as exc:
                    raise DataError(f"{path} line {number}: {exc}; flatten the record") from None
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path} line {number}: not valid JSON ({exc.msg} at column "
                        f"{exc.colno}); each line must be one JSON object"
                    ) from None
                if not isinstance(record, dict):
                    raise DataError(
                        f"{path} line {number}: expected a JSON object, got {type(record).__name__}"
                    )
                yield record
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def write_table(
    path: Path,
    inputs: Sequence[dict[str, Any]],
    outcomes: Sequence[dict[str, Any]],
    columns: Sequence[Column],
) -> None:
    """Write each input row joined with its outcome row, atomically, as JSONL or Parquet.

    The outcome columns come after the input columns; an input column with the name of an
    outcome column is kept as ``<name>_input``.
    """
    from lmforge._atomic import atomic_path, write_text_atomic

    names = {c.name for c in columns}
    rename = {key: f"{key}_input" for row in inputs for key in row if key in names}
    joined = [
        {**{rename.get(k, k): v for k, v in row.items()}, **outcome}
        for row, outcome in zip(inputs, outcomes, strict=True)
    ]
    if table_format(path, "--output") == "jsonl":
        from lmforge.adapters.coerce import _json_default

        lines = (json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in joined)
        write_text_atomic(path, "".join(lines))
        return
    table = _arrow_table(joined, columns)
    parquet = _pyarrow_parquet("writing Parquet output")
    with atomic_path(path) as tmp:
        parquet.write_table(table, os.fspath(tmp))


def _arrow_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> Any:
    """An Arrow table of ``rows``: outcome columns typed by their kind, input columns as
    Arrow infers them (as JSON text where their values have mixed types)."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "json": pa.string(),
        "integer": pa.int64(),
        "number": pa.float64(),
        "boolean": pa.bool_(),
    }
    kinds = {c.name: c.kind for c in columns}
    order: dict[str, None] = {}
    for row in rows:
        order.update(dict.fromkeys(row))
    arrays = {}
    for name in order:
        values = [row.get(name) for row in rows]
        if name in kinds:
            arrays[name] = pa.array(values, type=types[kinds[name]])
            continue
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            from lmforge.adapters.coerce import _json_default

            arrays[name] = pa.array(
                [None if v is None else json.dumps(v, default=_json_default) for v in values],
                type=pa.string(),
            )
    return pa.table(arrays)


def _pyarrow_parquet(purpose: str) -> Any:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise MissingExtraError("pyarrow", "parquet", purpose) from None
    return parquet
