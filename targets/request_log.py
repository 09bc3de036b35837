"""The opt-in request log: what the server answered, written off the hot path.

A served answer becomes a row (inputs, outputs, confidence, light, latency, model,
artifact hash; never headers or keys) put on a bounded queue; one background thread
takes rows off it in batches and commits each batch in one transaction. When the queue is
full the row is dropped and counted (``lmforge_request_log_dropped_total``): a slow or
broken store never blocks or fails a request. Named fields can be hashed or dropped
before anything is queued, and a retention limit prunes the oldest rows (rows with
feedback are kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lmforge.adapters.coerce import render_value
from lmforge.errors import UsageError

from .request_store import RequestStore, open_store

__all__ = ["SALT_ENV", "RequestLog", "RequestLogSettings", "wants_feedback"]

SALT_ENV = "LMFORGE_REQUEST_LOG_SALT"

_log = logging.getLogger("lmforge.server")
_BATCH = 256


@dataclasses.dataclass(frozen=True)
class RequestLogSettings:
    """How the request log records answers.

    Attributes:
        url: the store: a SQLite file path (relative to the bundle when served from one),
            ``sqlite:///path`` or ``postgresql://user@host/db``.
        hash_fields: input/output fields stored as a SHA-256 digest, not their value (an
            HMAC keyed by ``$LMFORGE_REQUEST_LOG_SALT`` when set, so short values such as
            emails cannot be found by hashing guesses).
        drop_fields: input/output fields not stored at all.
        max_rows: keep at most this many requests (oldest without feedback pruned).
        max_age_days: prune requests without feedback older than this.
        feedback_sample: share (0-1) of green answers also asked for feedback (yellow and
            red ones always are), so precision of green answers stays measured.
        queue_size: rows waiting for the writer at most; more are dropped and counted.
    """

    url: str
    hash_fields: tuple[str, ...] = ()
    drop_fields: tuple[str, ...] = ()
    max_rows: int | None = None
    max_age_days: float | None = None
    feedback_sample: float = 0.0
    queue_size: int = 10_000

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.strip():
            raise UsageError("request_log.url must name a SQLite file or a postgresql:// URL")
        if not 0.0 <= self.feedback_sample <= 1.0:
            raise UsageError(
                f"request_log.feedback_sample must be a share between 0 and 1, "
                f"got {self.feedback_sample!r}"
            )
        for name in ("max_rows", "queue_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise UsageError(f"request_log.{name} must be at least 1, got {value!r}")
        if self.max_age_days is not None and not (
            math.isfinite(self.max_age_days) and self.max_age_days > 0
        ):
            raise UsageError(f"request_log.max_age_days must be > 0, got {self.max_age_days!r}")

    @classmethod
    def from_json(cls, data: Any) -> RequestLogSettings:
        """From serving.json's ``request_log`` object (UsageError on a bad key or value)."""
        if isinstance(data, str):
            return cls(url=data)
        if not isinstance(data, Mapping):
            raise UsageError("serving.json: 'request_log' must be an object with a 'url'")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(
                f"serving.json: unknown request_log setting(s) {unknown}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        values = dict(data)
        for name in ("hash_fields", "drop_fields"):
            if name in values:
                values[name] = tuple(str(v) for v in values[name])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if v not in ((), None)
        }


def wants_feedback(request_id: str, light: str | None, share: float) -> bool:
    """Whether to ask for feedback on this answer: always for yellow and red ones, and for
    a deterministic ``share`` of the others (by request id, so a replay asks the same)."""
    if light in ("yellow", "red"):
        return True
    if share <= 0:
        return False
    digest = hashlib.sha256(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class RequestLog:
    """A store plus the background thread writing to it (see the module docstring)."""

    def __init__(
        self,
        settings: RequestLogSettings,
        *,
        base: Path | None = None,
        on_drop: Callable[[str, int], None] | None = None,
        store: RequestStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings.url, base)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(settings.queue_size)
        self._on_drop = on_drop or (lambda reason, count: None)
        self._hash = frozenset(settings.hash_fields)
        self._salt = os.environ.get(SALT_ENV, "").encode()
        self._drop = frozenset(settings.drop_fields)
        self._thread = threading.Thread(target=self._run, name="lmforge-request-log", daemon=True)
        self._thread.start()

    def scrub(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with the hashed fields digested and the dropped ones removed."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name in self._drop:
                continue
            if name in self._hash:
                text = render_value(value).encode()
                digest = (
                    hmac.new(self._salt, text, hashlib.sha256).hexdigest()
                    if self._salt
                    else hashlib.sha256(text).hexdigest()
                )
                out[name] = f"sha256:{digest}"
            else:
                out[name] = value
        return out

    def record(self, row: dict[str, Any]) -> bool:
        """Queue one row (never blocks); False when the queue was full and it was dropped."""
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self._on_drop("queue_full", 1)
            return False
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued row is written (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the writer and close the store."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self.store.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while first is not None and len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            rows = [row for row in batch if row is not None]
            try:
                if rows:
                    self._write(rows)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                self.store.close()  # this thread's connection
                return

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            self.store.write(rows)
        except Exception as exc:  # StoreError, or anything else: a dead writer stops the log
            # Rows already committed stay; this batch is lost and counted, requests go on.
            _log.error("%s; %d answer(s) not logged", exc, len(rows))
            self._on_drop("store_error", len(rows))
            return
        if self.settings.max_rows is None and self.settings.max_age_days is None:
            return
        age = self.settings.max_age_days
        try:
            self.store.prune(self.settings.max_rows, age * 86400 if age else None)
        except Exception as exc:
            _log.error("%s (pruning old answers); retention is not applied", exc)
