"""Run checkpoints in a database, for workers on several machines with no shared filesystem.

A search optimizer given ``storage="postgresql://..."`` (any SQLAlchemy database URL but
SQLite) keeps everything its workers share in that database next to the optuna study: the
run's identity and every checkpointed step (data summary, instruction candidates, demo
sets, trial and full evaluations). Each worker then restores what another computed, and
ends with the same artifact. Two tables, created on first use: ``lmforge_runs`` and
``lmforge_run_steps``. A run's budget (``lf.Budget``) applies to each worker process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lmforge.errors import MissingExtraError, UsageError

from .store import RunStore, fingerprint, jsonable

__all__ = ["DatabaseRunStore", "database_url", "is_database_url"]

# SQLAlchemy's plain "postgresql://" means psycopg2; the postgres extra installs psycopg 3.
_DRIVERLESS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def database_url(url: str) -> str:
    """``url`` with the psycopg 3 driver named when it names none (``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return f"{_DRIVERLESS[scheme]}{sep}{rest}" if sep and scheme in _DRIVERLESS else url


def is_database_url(url: str | None) -> bool:
    """Whether ``url`` is a database server shared by workers (not SQLite, not a file)."""
    return url is not None and "://" in url and not url.startswith("sqlite")


class DatabaseRunStore(RunStore):
    """:class:`RunStore` whose checkpoints live in a database shared by every worker.

    ``directory`` (optional) is this worker's own folder for files nobody else needs
    (``result.json``).
    """

    shared = True

    def __init__(
        self, url: str, identity: Mapping[str, Any], directory: str | Path | None = None
    ) -> None:
        super().__init__(None, identity)
        self.url = database_url(url)
        self.run_id = fingerprint(self.identity)
        self._engine = _engine(self.url, url)
        self._tables = _create_tables(self._engine, url)
        self._register()
        if directory is not None:
            self.directory = Path(directory)
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def persistent(self) -> bool:
        return False  # budgets apply per worker: nothing of this process to save

    def _register(self) -> None:
        from sqlalchemy.exc import IntegrityError

        runs, _ = self._tables
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    runs.insert().values(
                        run=self.run_id, identity=json.dumps(self.identity, sort_keys=True)
                    )
                )
        except IntegrityError:
            pass  # another worker registered the run first

    def _key(self, key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            if key in self._memory:
                return self._memory[key]  # type: ignore[no-any-return]
        _, steps = self._tables
        query = steps.select().where(steps.c.run == self.run_id, steps.c.key == self._key(key))
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        record = json.loads(row.record)
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        with self._lock:
            self._memory[key] = record
        return record

    def put(self, key: str, value: Any, usage: Mapping[str, Any]) -> dict[str, Any]:
        from sqlalchemy.exc import IntegrityError

        record = jsonable({"key": key, "value": value, "usage": dict(usage)})
        _, steps = self._tables
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    steps.insert().values(
                        run=self.run_id, key=self._key(key), record=json.dumps(record)
                    )
                )
        except IntegrityError:
            # Another worker stored this step first: keep its record, so every worker
            # continues from the same value.
            stored = self.get(key)
            if stored is not None:
                return stored
        with self._lock:
            self._memory[key] = record
        return record

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A PostgreSQL advisory lock, held by this worker's connection: the server frees
        it when the worker dies. Other databases get no lock (the work is then done by
        each worker that gets there first, with the same result)."""
        if self._engine.dialect.name != "postgresql":
            yield
            return
        from sqlalchemy import text

        lock = int(hashlib.sha256(f"{self.run_id}:{name}".encode()).hexdigest()[:15], 16)
        with self._engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:lock)"), {"lock": lock})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:lock)"), {"lock": lock})
                conn.commit()


def _engine(url: str, given: str) -> Any:
    try:
        import sqlalchemy
    except ImportError:  # pragma: no cover - optuna depends on SQLAlchemy
        raise MissingExtraError("sqlalchemy", "optimize", "A database storage") from None
    try:
        return sqlalchemy.create_engine(url, pool_pre_ping=True)
    except (ImportError, ModuleNotFoundError) as exc:
        raise UsageError(
            f"storage {_redacted(given)!r} needs a database driver that is missing ({exc}); "
            "for PostgreSQL: pip install 'lmforge[postgres]'"
        ) from None
    except Exception as exc:  # SQLAlchemy's ArgumentError and friends: a malformed URL
        raise _unusable(given, exc) from None


def _create_tables(engine: Any, url: str) -> tuple[Any, Any]:
    import sqlalchemy as sa

    metadata = sa.MetaData()
    runs = sa.Table(
        "lmforge_runs",
        metadata,
        sa.Column("run", sa.String(40), primary_key=True),
        sa.Column("identity", sa.Text, nullable=False),
    )
    steps = sa.Table(
        "lmforge_run_steps",
        metadata,
        sa.Column("run", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("record", sa.Text, nullable=False),
    )
    for attempt in range(3):
        try:
            metadata.create_all(engine, checkfirst=True)
            return runs, steps
        except Exception as exc:  # workers starting together race on CREATE TABLE
            if attempt == 2:
                raise _unusable(url, exc) from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _unusable(url: str, exc: Exception) -> UsageError:
    lines = str(exc).strip().splitlines() or [""]
    reason = f"{type(exc).__name__}: {lines[0][:300]}"
    return UsageError(f"cannot open optuna storage {_redacted(url)!r}: {reason}")


def _redacted(url: str) -> str:
    from lmforge.lm._http import without_userinfo

    return without_userinfo(url)
