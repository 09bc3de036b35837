"""Credentials an upstream echoes in its error text never reach lmforge's errors or the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import lmforge as lf
import pytest
from lmforge.errors import AuthenticationError, LMError, ProviderError
from lmforge.lm.litellm_backend import translate_error
from lmforge.lm.redaction import redact
from lmforge.lm.retry import RetryPolicy
from loopback import Loop, read_request

KEY = "sk-lmforge-Secret+Key/42=="
NO_RETRY = RetryPolicy(max_attempts=1)


def forms(key: str) -> list[str]:
    """Every way a key shows up in text: as is, URL-quoted, and its distinctive middle."""
    return [key, quote(key, safe=""), key[3:-2]]


def leaks(text: str, key: str = KEY) -> list[str]:
    return [form for form in forms(key) if form in text]


def echoing(status: bytes) -> object:
    """A server that answers ``status`` with a body quoting the request's credentials."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            auth = ""
            for line in request.decode("latin-1").split("\r\n"):
                if line.lower().startswith("authorization:"):
                    auth = line.split(":", 1)[1].strip()
            key = auth.removeprefix("Bearer ")
            message = (
                f"Incorrect API key provided: {key}. You sent 'Authorization: {auth}' "
                f"(quoted: {quote(key, safe='')}) to http://proxy-user:{key}@upstream/v1 "
                + "padding " * 60  # the key sits where a shortened message would cut it
                + f"api_key={key}"
            )
            body = json.dumps({"error": {"message": message, "type": "invalid_request"}})
            data = body.encode()
            writer.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, len(data)))
            writer.write(data)
            await writer.drain()

    return handle


@pytest.fixture
def net() -> Iterator[Loop]:
    loop = Loop()
    try:
        yield loop
    finally:
        loop.close()


def test_redact_takes_out_every_form_of_a_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-environment")
    text = (
        f"key {KEY} / {quote(KEY, safe='')}; Authorization: Bearer tok-123456789; "
        "Basic dXNlcjpwYXNzd29yZA==; see https://bob:hunter2@example.com/v1?api_key=abcdef123 "
        "and sk-ant-from-the-environment; x-api-key: 'zzz-secret-zzz'"
    )
    out = redact(text, (KEY,))
    for secret in (
        *forms(KEY),
        "tok-123456789",
        "dXNlcjpwYXNzd29yZA",
        "hunter2",
        "abcdef123",
        "sk-ant-from-the-environment",
        "zzz-secret-zzz",
    ):
        assert secret not in out, (secret, out)
    assert "https://[redacted]@example.com/v1" in out
    assert redact("no credential here: HTTP 500 from 127.0.0.1:8000") == (
        "no credential here: HTTP 500 from 127.0.0.1:8000"
    )


@pytest.mark.parametrize("status", [b"401 Unauthorized", b"400 Bad Request"])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("source", ["api_key", "environment"])
def test_http_errors_never_carry_the_key(
    net: Loop, status: bytes, mode: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = net.serve(echoing(status))  # type: ignore[arg-type]
    options = {"api_key": KEY} if source == "api_key" else {}
    if source == "environment":
        monkeypatch.setenv("HOSTED_VLLM_API_KEY", KEY)
    lm = lf.LM(
        "hosted_vllm/m",
        api_base=f"http://127.0.0.1:{port}/v1",
        cache=False,
        retry=NO_RETRY,
        **options,
    )
    request = lm.request(prompt="hi")
    with pytest.raises(LMError) as info:
        if mode == "sync":
            lm.complete(request)
        else:
            asyncio.run(lm.acomplete(request))
    expected = AuthenticationError if status.startswith(b"401") else ProviderError
    assert isinstance(info.value, expected)
    assert "Incorrect API key provided: [redacted]" in str(info.value)
    assert leaks(str(info.value)) == [] and leaks(repr(info.value)) == []
    # nor in the cause a traceback or logging.exception would print
    assert info.value.__cause__ is None or leaks(str(info.value.__cause__)) == []


def test_litellm_errors_never_carry_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-environment-key")

    class UpstreamAuthError(Exception):
        status_code = 401

    echoed = UpstreamAuthError(
        "Error code: 401 - Incorrect API key provided: sk-openai-environment-key; "
        + "x" * 600
        + f" Authorization: Bearer {KEY}"
    )
    error = translate_error(echoed, "openai/gpt-4o-mini", (KEY,))
    assert isinstance(error, AuthenticationError)
    assert "sk-openai-environment-key" not in str(error) and leaks(str(error)) == []


LMS = """
import lmforge as lf

lm = lf.LM("hosted_vllm/m", api_base="http://127.0.0.1:{port}/v1", cache=False, retry=1{key})
"""


@pytest.mark.parametrize("source", ["api_key", "environment"])
def test_lmforge_eval_never_prints_the_key(
    net: Loop,
    tmp_path: Path,
    subprocess_env: dict[str, str],
    python: str,
    source: str,
) -> None:
    port = net.serve(echoing(b"401 Unauthorized"))  # type: ignore[arg-type]
    lf.Predict("question -> answer").save(tmp_path / "prog.json")
    (tmp_path / "dev.jsonl").write_text('{"question": "q1", "answer": "a"}\n')
    key = f", api_key={KEY!r}" if source == "api_key" else ""
    (tmp_path / "lms.py").write_text(LMS.format(port=port, key=key))
    env = dict(subprocess_env)
    if source == "environment":
        env["HOSTED_VLLM_API_KEY"] = KEY
    base = [python, "-m", "lmforge.cli.main", "eval", "prog.json", "--data", "dev.jsonl"]
    base += ["--metric", "exact_match", "--model", "lms.py:lm"]
    for extra in (["--no-progress"], ["--json"]):
        done = subprocess.run(
            [*base, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        output = done.stdout + done.stderr
        assert "AuthenticationError" in output, output
        assert "[redacted]" in output and leaks(output) == [], output
