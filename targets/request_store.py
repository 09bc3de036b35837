"""Where the request log and its feedback live: SQLite (default) or Postgres by URL.

Two tables: ``requests`` (one row per served answer, keyed by request id) and
``feedback`` (at most one row per request id, written by ``POST .../feedback``). Every
write is one transaction; SQLite runs in WAL mode, so a crash loses no committed row and
readers (the exporter, ``/metrics``) never block the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError, MissingExtraError, UsageError

__all__ = ["RequestStore", "StoreError", "open_store", "store_location"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS requests (
        request_id TEXT PRIMARY KEY,
        program TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        inputs TEXT NOT NULL,
        outputs TEXT NOT NULL,
        confidence DOUBLE PRECISION,
        light TEXT,
        latency_s DOUBLE PRECISION,
        model TEXT,
        artifact_sha256 TEXT,
        feedback_requested INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS feedback (
        request_id TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        outputs TEXT,
        score DOUBLE PRECISION,
        correct DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS requests_created ON requests (created_at)",
)
_COLUMNS = (
    "request_id",
    "program",
    "created_at",
    "inputs",
    "outputs",
    "confidence",
    "light",
    "latency_s",
    "model",
    "artifact_sha256",
    "feedback_requested",
)
WEEK_S = 7 * 24 * 3600
_MONDAY_S = 3 * 24 * 3600  # the Unix epoch is a Thursday; weeks start on Monday (ISO)


class StoreError(LMForgeError):
    """The request-log store cannot be written or read (full, read-only, unreachable)."""


def store_location(url: str, base: Path | None = None) -> str:
    """``url`` checked: ``postgresql://...``, ``sqlite:///path``, or a file path (relative
    paths resolve against ``base``, e.g. the bundle folder). UsageError otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise UsageError("the request log needs a store: a SQLite file path or a postgresql:// URL")
    if url.startswith(("postgresql://", "postgres://")):
        return url
    if "://" in url and not url.startswith("sqlite:///"):
        raise UsageError(
            f"unknown request-log store {url.split('://')[0]!r}://; use a file path, "
            "sqlite:///path/to/requests.db or postgresql://user@host/db"
        )
    path = Path(url.removeprefix("sqlite://"))
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path)


def open_store(url: str, base: Path | None = None) -> RequestStore:
    """The store at ``url`` (see :func:`store_location`), tables created if missing."""
    location = store_location(url, base)
    if location.startswith(("postgresql://", "postgres://")):
        return RequestStore(location, postgres=True)
    return RequestStore(location, postgres=False)


def _storage_error(exc: BaseException, where: str) -> StoreError:
    text = str(exc).lower()
    if "full" in text:
        reason = "the disk or database is full; free space or lower the retention limit"
    elif "readonly" in text or "read-only" in text or "permission" in text:
        reason = "it is read-only; give the server write access to it"
    else:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return StoreError(f"request log {where}: cannot write ({reason})")


class RequestStore:
    """One connection per thread to a SQLite file or a Postgres database."""

    def __init__(self, location: str, *, postgres: bool) -> None:
        self.location = location
        self.postgres = postgres
        self._local = threading.local()
        # Never show the password of a postgres URL in messages.
        self.where = location.split("@")[-1] if postgres else location
        try:
            with self._transaction() as cursor:
                for statement in _SCHEMA:
                    cursor.execute(statement)
        except StoreError:
            raise
        except Exception as exc:
            raise _storage_error(exc, self.where) from None

    def _connect(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self.postgres:
            try:
                import psycopg
            except ImportError:
                raise MissingExtraError("psycopg", "postgres", "a Postgres request log") from None
            connection = psycopg.connect(self.location, connect_timeout=10)
        else:
            try:
                Path(self.location).parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.location, timeout=10, isolation_level=None)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
            except (OSError, sqlite3.Error) as exc:
                raise _storage_error(exc, self.where) from None
        self._local.connection = connection
        return connection

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    class _Tx:
        def __init__(self, store: RequestStore) -> None:
            self.store = store

        def __enter__(self) -> Any:
            self.connection = self.store._connect()
            self.cursor = self.connection.cursor()
            if not self.store.postgres:
                self.cursor.execute("BEGIN IMMEDIATE")
            return _Cursor(self.cursor, self.store)

        def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
            if kind is None and self.store.postgres:
                self.connection.commit()
            elif kind is None:
                self.cursor.execute("COMMIT")
            else:
                try:
                    self.connection.rollback()
                except Exception:  # the connection may be gone; nothing was committed
                    self.store._local.connection = None

    def _transaction(self) -> RequestStore._Tx:
        return RequestStore._Tx(self)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert request rows in one transaction; a request id already there keeps its
        first row. Returns how many were new. Raises StoreError."""
        marks = ", ".join("?" for _ in _COLUMNS)
        verb = "INSERT" if self.postgres else "INSERT OR IGNORE"
        tail = " ON CONFLICT (request_id) DO NOTHING" if self.postgres else ""
        statement = f"{verb} INTO requests ({', '.join(_COLUMNS)}) VALUES ({marks}){tail}"
        try:
            with self._transaction() as cursor:
                added = 0
                for row in rows:
                    cursor.execute(statement, [row.get(c) for c in _COLUMNS])
                    added += max(0, cursor.rowcount)
            return added
        except StoreError:
            raise
        except Exception as exc:
            raise _storage_error(exc, self.where) from None

    def prune(self, max_rows: int | None, max_age_s: float | None) -> int:
        """Delete the oldest requests beyond the retention limits, except those with
        feedback (what a user sent is kept). Returns how many were deleted."""
        no_feedback = "request_id NOT IN (SELECT request_id FROM feedback)"
        deleted = 0
        try:
            with self._transaction() as cursor:
                if max_age_s is not None:
                    cursor.execute(
                        f"DELETE FROM requests WHERE created_at < ? AND {no_feedback}",
                        [time.time() - max_age_s],
                    )
                    deleted += max(0, cursor.rowcount)
                if max_rows is not None:
                    cursor.execute("SELECT COUNT(*) FROM requests")
                    excess = int(cursor.fetchone()[0]) - max_rows
                    if excess > 0:
                        cursor.execute(
                            f"DELETE FROM requests WHERE request_id IN (SELECT request_id FROM "
                            f"requests WHERE {no_feedback} ORDER BY created_at LIMIT ?)",
                            [excess],
                        )
                        deleted += max(0, cursor.rowcount)
        except Exception as exc:
            raise _storage_error(exc, self.where) from None
        return deleted

    def request(self, request_id: str) -> dict[str, Any] | None:
        """The logged request ``request_id`` with its feedback (or None)."""
        found = list(self._select("r.request_id = ?", [request_id]))
        return found[0] if found else None

    def add_feedback(
        self,
        request_id: str,
        outputs: Mapping[str, Any] | None,
        score: float | None,
        correct: float,
    ) -> bool:
        """Record feedback; False when this request already has some (left unchanged)."""
        verb = "INSERT" if self.postgres else "INSERT OR IGNORE"
        tail = " ON CONFLICT (request_id) DO NOTHING" if self.postgres else ""
        text = json.dumps(dict(outputs), ensure_ascii=False) if outputs is not None else None
        try:
            with self._transaction() as cursor:
                cursor.execute(
                    f"{verb} INTO feedback (request_id, created_at, outputs, score, correct) "
                    f"VALUES (?, ?, ?, ?, ?){tail}",
                    [request_id, time.time(), text, score, correct],
                )
                return bool(cursor.rowcount > 0)
        except Exception as exc:
            raise _storage_error(exc, self.where) from None

    def with_feedback(self) -> Iterator[dict[str, Any]]:
        """Every logged request that has feedback, oldest first."""
        return self._select("f.request_id IS NOT NULL", [])

    def weekly_scores(self, weeks: int = 8) -> list[tuple[int, float, int]]:
        """(Monday 00:00 UTC of the week as Unix seconds, mean feedback correctness, count)
        for the recent weeks with feedback."""
        since = time.time() - weeks * WEEK_S
        try:
            with self._transaction() as cursor:
                cursor.execute(
                    "SELECT created_at, correct FROM feedback WHERE created_at >= ?", [since]
                )
                rows = cursor.fetchall()
        except Exception as exc:
            raise _storage_error(exc, self.where) from None
        buckets: dict[int, list[float]] = {}
        for created, correct in rows:
            week = int((created + _MONDAY_S) // WEEK_S) * WEEK_S - _MONDAY_S
            buckets.setdefault(week, []).append(float(correct))
        return [(week, sum(v) / len(v), len(v)) for week, v in sorted(buckets.items())]

    def _select(self, where: str, params: list[Any]) -> Iterator[dict[str, Any]]:
        columns = ", ".join(f"r.{c}" for c in _COLUMNS)
        statement = (
            f"SELECT {columns}, f.outputs, f.score, f.correct, f.request_id FROM requests r "
            f"LEFT JOIN feedback f ON f.request_id = r.request_id WHERE {where} "
            "ORDER BY r.created_at"
        )
        try:
            with self._transaction() as cursor:
                cursor.execute(statement, params)
                rows = cursor.fetchall()
        except Exception as exc:
            raise _storage_error(exc, self.where) from None
        for row in rows:
            record = dict(zip(_COLUMNS, row[: len(_COLUMNS)], strict=True))
            record["inputs"] = json.loads(record["inputs"])
            record["outputs"] = json.loads(record["outputs"])
            corrected, score, correct, has = row[len(_COLUMNS) :]
            record["feedback"] = (
                None
                if has is None
                else {
                    "outputs": json.loads(corrected) if corrected is not None else None,
                    "score": score,
                    "correct": correct,
                }
            )
            yield record

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


class _Cursor:
    """A DB-API cursor taking ``?`` placeholders on both engines."""

    def __init__(self, cursor: Any, store: RequestStore) -> None:
        self._cursor = cursor
        self._store = store

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._store._sql(statement), list(params))

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())
