"""The request log and the feedback route against real SQLite: bad feedback, full and
read-only stores, a full writer queue, privacy options, retention and the settings."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
import httpx
import lmforge as lf
from lmforge.errors import ArtifactError, UsageError
from lmforge.targets import ServerConfig, create_app
from lmforge.targets.request_log import RequestLog, RequestLogSettings, wants_feedback
from lmforge.targets.request_store import RequestStore, open_store
from lmforge.targets.serving_file import bundle_request_log
from lmforge.testing import FunctionLM

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
SIG = lf.Signature.parse("ticket: str, priority: int -> team: Literal['billing', 'tech']")


def _team(request: Any) -> str:
    text = request.as_text().rsplit("Ticket", 1)[-1].lower()
    return "[[ ## team ## ]]\n" + ("billing" if "refund" in text else "tech")


def _app(db: Path, **settings: Any) -> Any:
    program = lf.Predict(SIG, lm=FunctionLM(_team))
    log = RequestLogSettings(url=str(db), **settings)
    return create_app(
        program,
        ServerConfig(name="triage", api_keys=(KEY,), request_log=log, max_body_bytes=65536),
    )


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _rows(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as connection:
        requests = connection.execute(
            "SELECT request_id, inputs, outputs FROM requests ORDER BY request_id"
        ).fetchall()
        feedback = connection.execute(
            "SELECT request_id, outputs, score, correct FROM feedback ORDER BY request_id"
        ).fetchall()
    return requests, feedback


async def _answer(client: httpx.AsyncClient, ticket: str = "refund me") -> str:
    answer = await client.post(
        "/v1/programs/triage", json={"ticket": ticket, "priority": 1}, headers=AUTH
    )
    assert answer.status_code == 200
    return str(answer.headers["x-request-id"])


async def test_bad_feedback_gets_a_clear_error_and_loses_no_row(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    app = _app(db)
    async with _client(app) as client:
        first = await _answer(client)
        second = await _answer(client, "screen is black")
        ok = await client.post(
            "/v1/programs/triage/feedback",
            json={"request_id": first, "outputs": {"team": "tech"}},
            headers=AUTH,
        )
        assert ok.status_code == 200 and ok.json() == {"request_id": first, "status": "recorded"}
        before = _rows(db)
        cases: list[tuple[Any, int, str, str]] = [
            ({"request_id": "no-such-id", "score": 1}, 404, "unknown_request", "X-Request-ID"),
            ({"request_id": first, "outputs": {"team": "tech"}}, 200, "", ""),
            ({"request_id": first, "score": 0.5}, 409, "feedback_conflict", "once per"),
            ({"request_id": second, "outputs": {"team": 5}}, 422, "invalid_input", "outputs.team"),
            ({"request_id": second, "outputs": {"tem": "x"}}, 422, "invalid_input", "outputs"),
            ({"request_id": second, "score": "high"}, 422, "invalid_input", "score"),
            ({"request_id": second, "score": 2}, 422, "invalid_input", "score"),
            ({"request_id": second}, 422, "invalid_input", "exactly one"),
            ({"request_id": second, "score": 1, "outputs": {"team": "tech"}}, 422, "", "exactly"),
            ({"request_id": "bad id!", "score": 1}, 422, "invalid_input", "request_id"),
            ([1, 2], 422, "invalid_input", ""),
        ]
        for body, status, kind, words in cases:
            answer = await client.post("/v1/programs/triage/feedback", json=body, headers=AUTH)
            assert answer.status_code == status, (body, answer.text)
            if status != 200:
                error = answer.json()["error"]
                assert error["type"] == (kind or error["type"]) and words in error["message"]
                assert "Traceback" not in answer.text
        duplicate = await client.post(
            "/v1/programs/triage/feedback",
            json={"request_id": first, "outputs": {"team": "tech"}},
            headers=AUTH,
        )
        assert duplicate.json()["status"] == "duplicate"
        huge = await client.post(
            "/v1/programs/triage/feedback",
            content=json.dumps({"request_id": second, "score": 1, "pad": "x" * 100_000}),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert huge.status_code == 413
        anonymous = await client.post(
            "/v1/programs/triage/feedback", json={"request_id": second, "score": 1}
        )
        assert anonymous.status_code == 401
    app.state.feedback.close()
    assert _rows(db) == before
    requests, feedback = before
    assert len(requests) == 2 and feedback == [(first, '{"team": "tech"}', None, 0.0)]


async def test_feedback_on_a_batch_item_and_on_a_server_without_a_log(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    app = _app(db)
    async with _client(app) as client:
        batch = await client.post(
            "/v1/programs/triage:batch",
            json={"items": [{"ticket": "refund", "priority": 1}, {"ticket": "bug", "priority": 2}]},
            headers={**AUTH, "X-Request-ID": "batch-7"},
        )
        assert batch.status_code == 200
        ok = await client.post(
            "/v1/programs/triage/feedback",
            json={"request_id": "batch-7.1", "score": 1},
            headers=AUTH,
        )
        assert ok.status_code == 200 and ok.json()["status"] == "recorded"
    app.state.feedback.close()
    program = lf.Predict(SIG, lm=FunctionLM(_team))
    plain = create_app(program, ServerConfig(name="triage", api_keys=(KEY,)))
    async with _client(plain) as client:
        off = await client.post(
            "/v1/programs/triage/feedback", json={"request_id": "x", "score": 1}, headers=AUTH
        )
    assert off.status_code == 404 and "--request-log" in off.json()["error"]["message"]
    async with _client(plain) as client:
        schema = (await client.get("/openapi.json", headers=AUTH)).json()
    post = schema["paths"]["/v1/programs/triage/feedback"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TriageFeedback"}
    fields = schema["components"]["schemas"]["TriageFeedback"]["properties"]
    assert set(fields) == {"request_id", "outputs", "score"}


class _LimitedStore(RequestStore):
    """Real SQLite, with every connection made read-only or size-capped (as root in CI,
    file permissions cannot make a database read-only)."""

    pragma = ""

    def _connect(self) -> Any:
        fresh = getattr(self._local, "connection", None) is None
        connection = super()._connect()
        if fresh and self.pragma:
            connection.execute(self.pragma)
        return connection


@pytest.mark.parametrize(
    ("pragma", "words"),
    [("PRAGMA query_only=ON", "read-only"), ("PRAGMA max_page_count=1", "full")],
)
async def test_full_or_read_only_store_errors_clearly_and_keeps_rows(
    tmp_path: Path, pragma: str, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "log.db"
    app = _app(db)
    async with _client(app) as client:
        first = await _answer(client)
        assert app.state.feedback.log.flush()
        if "max_page" in pragma:
            _fill(db, pragma)
        before = _rows(db)
        limited = _LimitedStore(str(db), postgres=False)
        limited.pragma = pragma
        app.state.feedback.log.store = limited
        with caplog.at_level(logging.ERROR, logger="lmforge.server"):
            await _answer(client, "x" * 20000 if "max_page" in pragma else "bug")
            assert app.state.feedback.log.flush()
        assert any(words in r.getMessage() for r in caplog.records), caplog.text
        posted = await client.post(
            "/v1/programs/triage/feedback",
            json={"request_id": first, "outputs": {"team": "tech"}},
            headers=AUTH,
        )
        assert posted.status_code == 503, posted.text
        error = posted.json()["error"]
        assert error["type"] == "store_unavailable" and words in error["message"]
        assert "not recorded" in error["message"]
        metrics = (await client.get("/metrics", headers=AUTH)).text
        assert 'lmforge_request_log_rows_total{outcome="store_error"} 1.0' in metrics
        assert 'result="store_unavailable"' in metrics
    app.state.feedback.close()
    assert _rows(db) == before


def _fill(db: Path, pragma: str) -> None:
    """Fill the size-capped database until SQLite reports it full."""
    connection = sqlite3.connect(db, isolation_level=None)
    connection.execute(pragma)
    for index in range(10_000):
        try:
            connection.execute(
                "INSERT INTO feedback VALUES (?, 0, NULL, NULL, 0)", [f"filler-{index:05d}"]
            )
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)
            break
    connection.close()


class _SlowStore(RequestStore):
    def __init__(self, location: str) -> None:
        super().__init__(location, postgres=False)
        self.gate = threading.Event()

    def write(self, rows: Any) -> int:
        self.gate.wait(10)
        return super().write(rows)


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    dropped: list[tuple[str, int]] = []
    store = _SlowStore(str(tmp_path / "log.db"))
    log = RequestLog(
        RequestLogSettings(url="unused", queue_size=2),
        store=store,
        on_drop=lambda reason, count: dropped.append((reason, count)),
    )
    row = {
        "program": "p",
        "created_at": 1.0,
        "inputs": "{}",
        "outputs": "{}",
        "feedback_requested": 0,
    }
    started = time.perf_counter()
    queued = [log.record({**row, "request_id": f"r{index}"}) for index in range(20)]
    assert time.perf_counter() - started < 0.5
    assert sum(count for reason, count in dropped if reason == "queue_full") >= 17
    assert queued.count(False) == sum(count for _, count in dropped)
    store.gate.set()
    assert log.flush()
    log.close()
    assert {reason for reason, _ in dropped} == {"queue_full"}
    written = open_store(str(tmp_path / "log.db"))
    assert 1 <= len([r for r in range(20) if written.request(f"r{r}")]) <= 3


async def test_hashed_and_dropped_fields_never_reach_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMFORGE_REQUEST_LOG_SALT", "pepper")
    db = tmp_path / "log.db"
    app = _app(db, hash_fields=("ticket",), drop_fields=("priority",))
    async with _client(app) as client:
        rid = await _answer(client, "refund jane.doe@example.com")
        posted = await client.post(
            "/v1/programs/triage/feedback",
            json={"request_id": rid, "outputs": {"team": "billing"}},
            headers=AUTH,
        )
        assert posted.json()["status"] == "recorded"
    app.state.feedback.close()
    (request,), (feedback,) = _rows(db)
    inputs = json.loads(request[1])
    ticket = b"refund jane.doe@example.com"
    keyed = hmac.new(b"pepper", ticket, hashlib.sha256).hexdigest()
    assert inputs == {"ticket": f"sha256:{keyed}"}
    assert hashlib.sha256(ticket).hexdigest() not in request[1]
    assert feedback[3] == 1.0  # same as the served answer
    assert b"jane.doe" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


def test_retention_prunes_the_oldest_but_keeps_answers_with_feedback(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "log.db"))
    rows = [
        {
            "request_id": f"r{i}",
            "program": "p",
            "created_at": 1000.0 + i,
            "inputs": "{}",
            "outputs": "{}",
            "feedback_requested": 0,
        }
        for i in range(10)
    ]
    assert store.write(rows) == 10
    assert store.write(rows[:1]) == 0  # a request id keeps its first row
    assert store.add_feedback("r0", None, 1.0, 1.0)
    assert store.prune(max_rows=5, max_age_s=None) == 5
    kept = [f"r{i}" for i in range(10) if store.request(f"r{i}")]
    assert kept == ["r0", "r6", "r7", "r8", "r9"]
    assert store.prune(max_rows=None, max_age_s=60) == 4  # all older than a minute
    assert [r["request_id"] for r in store.with_feedback()] == ["r0"]


def test_feedback_sampling_settings_and_store_urls(tmp_path: Path) -> None:
    assert wants_feedback("a", "yellow", 0.0) and wants_feedback("a", "red", 0.0)
    assert not wants_feedback("a", "green", 0.0) and wants_feedback("a", "green", 1.0)
    share = sum(wants_feedback(f"id-{i}", "green", 0.2) for i in range(2000)) / 2000
    assert 0.15 < share < 0.25
    assert wants_feedback("id-1", None, 0.2) == wants_feedback("id-1", None, 0.2)
    with pytest.raises(UsageError, match="between 0 and 1"):
        RequestLogSettings(url="x.db", feedback_sample=1.5)
    with pytest.raises(UsageError, match="unknown request-log store 'mysql'"):
        open_store("mysql://host/db")
    serving = {"request_log": {"url": "data/r.db", "keep": 1}}
    with pytest.raises(ArtifactError, match="unknown request_log setting"):
        bundle_request_log(serving, tmp_path)
    settings = bundle_request_log({"request_log": {"url": "data/r.db"}}, tmp_path)
    assert settings is not None and settings.url == str(tmp_path / "data" / "r.db")
    assert bundle_request_log({}, tmp_path) is None
