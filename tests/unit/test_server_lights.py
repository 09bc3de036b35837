"""The program server's confidence and light: headers by default (the body stays the
outputs), the body envelope on request or by setting, withheld answers, the Prometheus
counter by light and the OpenAPI schema."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi")
import httpx
import lmforge as lf
from lmforge.lights import Thresholds
from lmforge.lm.types import LMRequest
from lmforge.targets import ServerConfig, create_app
from lmforge.testing import FunctionLM

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
URL = "/v1/programs/triage"


def _team(request: LMRequest) -> str:
    text = request.as_text().rsplit("Ticket", 1)[-1].lower()
    return "[[ ## team ## ]]\n" + ("billing" if "refund" in text else "tech")


class Rated(lf.Module):
    """Answers with a confidence: sure about refunds, unsure about tickets saying maybe."""

    def __init__(self) -> None:
        self.predict = lf.Predict(
            "ticket: str -> team: Literal['billing', 'tech']", lm=FunctionLM(_team)
        )

    def forward(self, ticket: str) -> lf.Prediction:
        prediction = self.predict(ticket=ticket)
        if "silent" not in ticket:
            prediction.confidence = (
                0.2 if "maybe" in ticket else 0.95 if "refund" in ticket else 0.6
            )
        return prediction


def _app(**changes: Any) -> Any:
    program = Rated()
    program.artifact_meta = {"lights": Thresholds(green=0.9, red=0.5).to_dict()}  # type: ignore[attr-defined]
    return create_app(program, ServerConfig(name="triage", api_keys=(KEY,), **changes))


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_confidence_and_light_travel_as_headers_and_the_body_is_unchanged() -> None:
    async with _client(_app()) as client:
        sure = await client.post(URL, json={"ticket": "refund me"}, headers=AUTH)
        unsure = await client.post(URL, json={"ticket": "maybe broken"}, headers=AUTH)
        unknown = await client.post(URL, json={"ticket": "silent"}, headers=AUTH)
    assert sure.status_code == 200 and sure.json() == {"team": "billing"}
    assert sure.headers["x-lmforge-confidence"] == "0.95"
    assert sure.headers["x-lmforge-light"] == "green"
    assert set(unsure.json()) == {"team"} and unsure.headers["x-lmforge-light"] == "red"
    assert unknown.json() == {"team": "tech"}
    assert "x-lmforge-light" not in unknown.headers
    assert "x-lmforge-confidence" not in unknown.headers


async def test_the_body_carries_the_metadata_on_request_or_by_setting() -> None:
    async with _client(_app()) as client:
        asked = await client.post(f"{URL}?metadata=true", json={"ticket": "x"}, headers=AUTH)
    assert asked.json() == {"answer": {"team": "tech"}, "confidence": 0.6, "light": "yellow"}
    async with _client(_app(answer_metadata=True)) as client:
        always = await client.post(URL, json={"ticket": "refund"}, headers=AUTH)
        batch = await client.post(
            f"{URL}:batch",
            json={"items": [{"ticket": "refund"}, {"ticket": "silent"}]},
            headers=AUTH,
        )
    assert always.json() == {"answer": {"team": "billing"}, "confidence": 0.95, "light": "green"}
    assert batch.json()["results"] == [
        {"output": {"team": "billing"}, "confidence": 0.95, "light": "green"},
        {"output": {"team": "tech"}, "confidence": None, "light": None},
    ]


async def test_withheld_red_answers_are_http_200_with_a_null_answer() -> None:
    async with _client(_app(withhold="red")) as client:
        red = await client.post(URL, json={"ticket": "maybe refund"}, headers=AUTH)
        yellow = await client.post(URL, json={"ticket": "x"}, headers=AUTH)
        batch = await client.post(
            f"{URL}:batch", json={"items": [{"ticket": "maybe"}, {"ticket": "x"}]}, headers=AUTH
        )
    assert red.status_code == 200
    assert red.json() == {"answer": None, "confidence": 0.2, "light": "red", "withheld": True}
    assert red.headers["x-lmforge-light"] == "red"
    assert yellow.json() == {"team": "tech"}  # others keep the plain body
    assert batch.json()["results"] == [
        {"output": None, "confidence": 0.2, "light": "red", "withheld": True},
        {"output": {"team": "tech"}},
    ]
    async with _client(_app(withhold="yellow")) as client:
        held = await client.post(URL, json={"ticket": "x"}, headers=AUTH)
    assert held.json()["withheld"] is True and held.json()["light"] == "yellow"


async def test_answers_are_counted_by_light_for_dashboards() -> None:
    async with _client(_app()) as client:
        for ticket in ("refund", "refund again", "maybe", "silent"):
            await client.post(URL, json={"ticket": ticket}, headers=AUTH)
        text = (await client.get("/metrics", headers=AUTH)).text
    assert 'lmforge_answers_total{light="green",program="triage"} 2.0' in text
    assert 'lmforge_answers_total{light="red",program="triage"} 1.0' in text
    assert 'lmforge_answers_total{light="none",program="triage"} 1.0' in text


async def test_openapi_documents_the_headers_the_flag_and_the_envelope() -> None:
    async with _client(_app()) as client:
        schema = (await client.get("/openapi.json", headers=AUTH)).json()
    operation = schema["paths"][URL]["post"]
    headers = operation["responses"]["200"]["headers"]
    assert {"X-LMForge-Confidence", "X-LMForge-Light"} <= set(headers)
    assert any(p["name"] == "metadata" and p["in"] == "query" for p in operation["parameters"])
    # by default the body is the outputs, as before; the envelope is documented beside it
    body = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TriageResponse"}
    envelope = schema["components"]["schemas"]["TriageAnswer"]
    assert set(envelope["properties"]) == {"answer", "confidence", "light", "withheld"}
    assert "$defs" not in envelope


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"answer_metadata": True}, [{"$ref": "#/components/schemas/TriageAnswer"}]),
        (
            {"withhold": "red"},
            [
                {"$ref": "#/components/schemas/TriageResponse"},
                {"$ref": "#/components/schemas/TriageAnswer"},
            ],
        ),
    ],
)
async def test_the_documented_body_follows_the_server_settings(
    changes: dict[str, Any], expected: list[dict[str, str]]
) -> None:
    async with _client(_app(**changes)) as client:
        schema = (await client.get("/openapi.json", headers=AUTH)).json()
    body = schema["paths"][URL]["post"]["responses"]["200"]["content"]["application/json"]
    options = body["schema"].get("anyOf") or [body["schema"]]
    assert [{"$ref": o["$ref"]} for o in options] == expected


def test_withhold_takes_red_or_yellow_only() -> None:
    with pytest.raises(lf.UsageError, match="withhold must be"):
        ServerConfig(name="triage", api_keys=(KEY,), withhold="blue")


async def test_the_openai_shim_sends_the_headers_and_filters_withheld_answers() -> None:
    def chat(ticket: str) -> dict[str, Any]:
        return {"model": "triage", "messages": [{"role": "user", "content": ticket}]}

    async with _client(_app(withhold="red")) as client:
        sure = await client.post("/v1/chat/completions", json=chat("refund"), headers=AUTH)
        held = await client.post("/v1/chat/completions", json=chat("maybe"), headers=AUTH)
        streamed = await client.post(
            "/v1/chat/completions", json={**chat("maybe"), "stream": True}, headers=AUTH
        )
    assert sure.headers["x-lmforge-light"] == "green"
    assert sure.json()["choices"][0]["message"]["content"] == "billing"
    choice = held.json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == (None, "content_filter")
    assert held.headers["x-lmforge-light"] == "red"
    assert '"finish_reason": "content_filter"' in streamed.text and "tech" not in streamed.text
