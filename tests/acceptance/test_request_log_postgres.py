"""The request log on a real PostgreSQL: answers, feedback (idempotent), retention and the
export, through the same server and CLI as SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx
import lmforge as lf
from _postgres import postgres_url
from lmforge.cli.feedback import export_feedback
from lmforge.targets import ServerConfig, create_app
from lmforge.targets.request_log import RequestLogSettings
from lmforge.targets.request_store import open_store
from lmforge.testing import FunctionLM

pytestmark = pytest.mark.postgres

KEY = "postgres-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
SIG = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")


async def test_answers_and_feedback_round_trip_through_postgres(tmp_path: Path) -> None:
    with postgres_url() as url:
        program = lf.Predict(
            SIG, lm=FunctionLM(lambda r: "[[ ## team ## ]]\ntech\n\n[[ ## completed ## ]]")
        )
        settings = RequestLogSettings(url=url, hash_fields=("ticket",), max_rows=3)
        app = create_app(
            program, ServerConfig(name="triage", api_keys=(KEY,), request_log=settings)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ids = []
            for index in range(5):
                answer = await client.post(
                    "/v1/programs/triage", json={"ticket": f"refund {index}"}, headers=AUTH
                )
                ids.append(answer.headers["x-request-id"])
                assert app.state.feedback.log.flush()
            body = {"request_id": ids[-1], "outputs": {"team": "billing"}}
            first = await client.post("/v1/programs/triage/feedback", json=body, headers=AUTH)
            again = await client.post("/v1/programs/triage/feedback", json=body, headers=AUTH)
            other = await client.post(
                "/v1/programs/triage/feedback",
                json={"request_id": ids[-1], "score": 1},
                headers=AUTH,
            )
            unknown = await client.post(
                "/v1/programs/triage/feedback",
                json={"request_id": "nope", "score": 1},
                headers=AUTH,
            )
            metrics = (await client.get("/metrics", headers=AUTH)).text
        app.state.feedback.close()
        assert [first.json()["status"], again.json()["status"]] == ["recorded", "duplicate"]
        assert other.status_code == 409 and unknown.status_code == 404
        assert "lmforge_feedback_score{" in metrics
        store = open_store(url)
        kept = [rid for rid in ids if store.request(rid)]
        assert kept == ids[2:]  # retention: the three newest
        (row,) = list(store.with_feedback())
        assert row["inputs"]["ticket"].startswith("sha256:") and row["feedback"]["correct"] == 0
        store.close()
        counts = export_feedback(url, tmp_path / "data.jsonl")
        assert counts["corrected"] == 1
        line = json.loads((tmp_path / "data.jsonl").read_text())
        assert line["team"] == "billing"
