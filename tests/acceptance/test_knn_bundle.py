"""A KNNFewShot program exported as a managed bundle and served: the server rebuilds the
per-input demo selection from program.json, and the bundle installs the retrieval extra."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("bm25s")
import httpx
import lmforge as lf
from fastapi import FastAPI, Request
from lmforge.optimizers import KNNFewShot
from lmforge.targets import create_app
from lmforge.targets.export import ExportOptions, export_bundle

from ._serving import serve

KEY = "knn-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TRAIN = [
    lf.Example(ticket=t, team=y).with_inputs("ticket")
    for t, y in [
        ("refund for the double charge on my card", "billing"),
        ("invoice shows the wrong amount", "billing"),
        ("the app crashes when I open settings", "tech"),
        ("password reset email never arrives", "tech"),
    ]
]


@pytest.fixture(autouse=True)
def _local_http_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle calls a fake provider on 127.0.0.1 through litellm: allow that client."""
    monkeypatch.delenv("LMFORGE_BLOCK_NETWORK", raising=False)


def fake_provider(seen: list[list[dict[str, Any]]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        seen.append(body["messages"])
        content = json.dumps({"team": "tech"})
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


def test_served_knn_program_picks_demos_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    student = lf.Predict(sig, adapter=lf.JSONAdapter())
    lm = lf.LM("openai/gpt-4o-mini", cache=False)
    compiled = KNNFewShot(k=1).compile(
        student, TRAIN, metric=lf.metrics.exact_match, lm=lm, progress=False
    )
    artifact = tmp_path / "triage@gpt-4o-mini.json"
    compiled.save(artifact)
    bundle = export_bundle(artifact, tmp_path / "bundle", ExportOptions(target="managed")).path
    dockerfile = (bundle / "Dockerfile").read_text()
    assert f'ARG LMFORGE_SPEC="lmforge[serve,retrieval]=={lf.__version__}"' in dockerfile

    seen: list[list[dict[str, Any]]] = []
    with serve(fake_provider(seen)) as provider:
        monkeypatch.setenv("LMFORGE_PROVIDER_API_BASE", f"{provider}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-provider-secret")
        monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
        with serve(create_app(bundle)) as url:
            for ticket in ("I want a refund for this charge", "the app crashes on start"):
                response = httpx.post(
                    f"{url}/v1/programs/triage",
                    json={"ticket": ticket},
                    headers=HEADERS,
                    timeout=30,
                )
                assert response.status_code == 200, response.text
    demos = [json.dumps(messages[:-1]) for messages in seen]
    assert len(demos) == 2
    assert "double charge" in demos[0] and "crashes" not in demos[0]
    assert "crashes when I open settings" in demos[1] and "double charge" not in demos[1]
