"""The managed target against a local fake OpenAI-compatible provider over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
import httpx
import lmforge as lf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from lmforge.lm.types import LMRequest
from lmforge.targets import create_app
from lmforge.targets.backends import CacheHintBackend
from lmforge.targets.export import ExportOptions, export_bundle

from ._serving import serve

KEY = "managed-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(autouse=True)
def _local_http_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests call a fake provider on 127.0.0.1 through litellm: allow that client."""
    monkeypatch.delenv("LMFORGE_BLOCK_NETWORK", raising=False)


def fake_provider(seen: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        if body["model"] == "broken-model":
            return JSONResponse(
                {"error": {"message": "overloaded", "type": "server_error"}}, status_code=500
            )
        content = json.dumps(
            {"team": "billing" if "refund" in body["messages"][-1]["content"] else "tech"}
        )
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
        }

    return app


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    program = lf.Predict(
        sig,
        lm=lf.LM("openai/gpt-4o-mini", cache=False),
        adapter=lf.JSONAdapter(),
        demos=[{"ticket": "charged twice", "team": "billing"}],
    )
    path = tmp_path / "triage@gpt-4o-mini.json"
    program.save(path)
    return path


def test_managed_bundle_calls_provider_with_model_schema_and_cache_key(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = export_bundle(artifact, tmp_path / "bundle", ExportOptions(target="managed")).path
    assert {"Dockerfile", "compose.yaml", "README.md", "k8s/program.yaml"} <= {
        p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()
    }
    assert not (bundle / "vllm.yaml").exists()
    seen: list[dict[str, Any]] = []
    with serve(fake_provider(seen)) as provider:
        monkeypatch.setenv("LMFORGE_PROVIDER_API_BASE", f"{provider}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-provider-secret")
        monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
        with serve(create_app(bundle)) as url:
            assert httpx.get(f"{url}/ready", headers=HEADERS).json() == {"status": "ready"}
            first = httpx.post(
                f"{url}/v1/programs/triage",
                json={"ticket": "refund please"},
                headers=HEADERS,
                timeout=30,
            )
            second = httpx.post(
                f"{url}/v1/programs/triage",
                json={"ticket": "app is down"},
                headers=HEADERS,
                timeout=30,
            )
    assert first.json() == {"team": "billing"} and second.json() == {"team": "tech"}
    bodies = [s["body"] for s in seen]
    assert [b["model"] for b in bodies] == ["gpt-4o-mini", "gpt-4o-mini"]
    schema = bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["team"]["enum"] == ["billing", "tech"]
    assert seen[0]["auth"] == "Bearer sk-provider-secret"
    # The static prefix (system + demos) is identical, so the cache key is too.
    assert bodies[0]["prompt_cache_key"] == bodies[1]["prompt_cache_key"]
    assert bodies[0]["messages"][:-1] == bodies[1]["messages"][:-1]


def test_missing_provider_key_fails_ready_with_reason(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = export_bundle(artifact, tmp_path / "bundle", ExportOptions(target="managed")).path
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("LMFORGE_API_KEYS", KEY)

    async def check() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(bundle)), base_url="http://t"
        ) as c:
            response = await c.get("/ready", headers=HEADERS)
            assert response.status_code == 503
            assert response.json()["error"]["message"] == (
                "provider key missing: set OPENAI_API_KEY for openai/gpt-4o-mini"
            )

    import asyncio

    asyncio.run(check())


def test_fallback_model_answers_when_primary_fails(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = ExportOptions(
        target="managed", model="openai/broken-model", fallback_model="openai/gpt-4o-mini"
    )
    bundle = export_bundle(artifact, tmp_path / "bundle", options).path
    seen: list[dict[str, Any]] = []
    seen_by_fallback: list[dict[str, Any]] = []
    with serve(fake_provider(seen)) as provider, serve(fake_provider(seen_by_fallback)) as other:
        monkeypatch.setenv("LMFORGE_PROVIDER_API_BASE", f"{provider}/v1")
        monkeypatch.setenv("LMFORGE_FALLBACK_API_BASE", f"{other}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-provider-secret")
        monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
        with serve(create_app(bundle)) as url:
            answer = httpx.post(
                f"{url}/v1/programs/triage", json={"ticket": "refund"}, headers=HEADERS, timeout=60
            )
    assert answer.status_code == 200 and answer.json() == {"team": "billing"}
    # The primary endpoint only saw the primary model; the fallback went to its own endpoint.
    assert {s["body"]["model"] for s in seen} == {"broken-model"}
    assert [s["body"]["model"] for s in seen_by_fallback] == ["gpt-4o-mini"]


def test_fallback_never_inherits_the_primary_api_base(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge.targets import load_bundle
    from lmforge.targets.backends import CacheHintBackend, FallbackBackend

    def fallback_of(program: Any) -> Any:
        backend = program.lm.backend
        while isinstance(backend, CacheHintBackend):
            backend = backend.inner
        assert isinstance(backend, FallbackBackend)
        return backend

    options = ExportOptions(
        target="managed", model="openai/gpt-4o-mini", fallback_model="anthropic/claude-3-5-haiku"
    )
    bundle = export_bundle(artifact, tmp_path / "bundle", options).path
    serving = json.loads((bundle / "serving.json").read_text())
    assert serving["backend"]["fallback_api_base_env"] == "LMFORGE_FALLBACK_API_BASE"
    monkeypatch.setenv("LMFORGE_PROVIDER_API_BASE", "http://primary.internal/v1")
    monkeypatch.delenv("LMFORGE_FALLBACK_API_BASE", raising=False)
    monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
    backend = fallback_of(load_bundle(bundle)[0])
    assert backend.primary._api_base == "http://primary.internal/v1"
    assert backend.fallback._api_base is None  # the provider's own default endpoint
    monkeypatch.setenv("LMFORGE_FALLBACK_API_BASE", "http://fallback.internal/v1")
    backend = fallback_of(load_bundle(bundle)[0])
    assert backend.fallback._api_base == "http://fallback.internal/v1"
    readme = (bundle / "README.md").read_text()
    assert "LMFORGE_FALLBACK_API_BASE" in readme


def test_anthropic_cache_control_marks_the_static_prefix() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.requests: list[LMRequest] = []

        def complete(self, request: LMRequest) -> Any:
            self.requests.append(request)
            return lf.LMResponse(texts=("ok",))

        async def acomplete(self, request: LMRequest) -> Any:
            return self.complete(request)

    inner = Recorder()
    messages = (
        {"role": "system", "content": "instructions"},
        {"role": "user", "content": "demo in"},
        {"role": "assistant", "content": "demo out"},
        {"role": "user", "content": "the input"},
    )
    CacheHintBackend(inner, "anthropic").complete(
        LMRequest(model="anthropic/claude", messages=messages)
    )
    sent = inner.requests[0].messages
    assert sent is not None
    assert sent[2]["content"] == [
        {"type": "text", "text": "demo out", "cache_control": {"type": "ephemeral"}}
    ]
    assert sent[3] == messages[3] and sent[:2] == messages[:2]  # inputs are never marked
