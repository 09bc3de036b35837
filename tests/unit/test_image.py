"""lf.Image: sent as OpenAI image content parts; refused by models that cannot read it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lmforge as lf
import pytest
from lmforge.lm import ResponseCache, litellm_backend
from lmforge.lm.types import LMRequest
from lmforge.testing import FunctionLM
from test_openai_backend import FakeServer, chat_body

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
REPLY = "[[ ## answer ## ]]\na cat\n\n[[ ## completed ## ]]"
VISION = lf.ModelProfile(vision=True)


class Describe(lf.Signature):
    """Answer about the photo."""

    photo: lf.Image = lf.InputField()
    question: str = lf.InputField()
    answer: str = lf.OutputField()


def recording(reply: str = REPLY, **kwargs: Any) -> tuple[FunctionLM, list[LMRequest]]:
    seen: list[LMRequest] = []

    def answer(request: LMRequest) -> str:
        seen.append(request)
        return reply

    kwargs.setdefault("profile", VISION)
    return FunctionLM(answer, **kwargs), seen


def image_parts(url: str, question: str, *, reminder: bool) -> list[dict[str, Any]]:
    tail = f"\n\n[[ ## question ## ]]\n{question}"
    if reminder:
        tail += (
            "\n\nRespond with the output fields `[[ ## answer ## ]]`, and end with "
            "`[[ ## completed ## ]]`."
        )
    return [
        {"type": "text", "text": "[[ ## photo ## ]]\n"},
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": tail},
    ]


# -- the type ----------------------------------------------------------------------------


def test_image_from_url_file_and_bytes(tmp_path: Path) -> None:
    assert lf.Image(url="https://example.com/cat.png").url == "https://example.com/cat.png"
    assert lf.Image("https://example.com/cat.png") == lf.Image(url="https://example.com/cat.png")
    file = tmp_path / "cat.png"
    file.write_bytes(PNG)
    assert lf.Image.from_file(file).url == PNG_URL
    assert lf.Image(path=str(file)).url == PNG_URL
    assert lf.Image.from_bytes(PNG, mime_type="image/png").url == PNG_URL
    assert "base64" in repr(lf.Image.from_bytes(PNG * 100)) and len(repr(lf.Image(PNG_URL))) < 100


def test_bad_images_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(lf.UsageError, match="http://, https:// or data:image/"):
        lf.Image(url="ftp://example.com/cat.png")
    with pytest.raises(lf.UsageError, match="cannot read"):
        lf.Image.from_file(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(lf.UsageError, match="image type"):
        lf.Image.from_file(tmp_path / "notes.txt")
    with pytest.raises(lf.UsageError, match="mime_type"):
        lf.Image.from_bytes(PNG, mime_type="text/plain")
    with pytest.raises(lf.UsageError, match="not both"):
        lf.Image(url="https://x/y.png", path=tmp_path / "cat.png")


def test_signature_json_round_trip_keeps_the_image_type() -> None:
    rebuilt = lf.Signature.from_json(Describe.to_json())
    assert rebuilt == Describe
    assert rebuilt.field("photo").annotation is lf.Image


# -- rendering ---------------------------------------------------------------------------


def test_chat_adapter_sends_image_parts_where_the_field_is() -> None:
    lm, seen = recording()
    demo = {"photo": lf.Image(url="https://x/dog.png"), "question": "What?", "answer": "a dog"}
    program = lf.Predict(Describe, lm=lm, adapter=lf.ChatAdapter(), demos=[demo])
    assert program(photo=lf.Image.from_bytes(PNG), question="And this?").answer == "a cat"
    messages = seen[0].messages
    assert messages is not None
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == image_parts("https://x/dog.png", "What?", reminder=False)
    assert messages[3]["content"] == image_parts(PNG_URL, "And this?", reminder=True)
    assert isinstance(messages[0]["content"], str)


def test_json_adapter_sends_image_parts() -> None:
    lm, seen = recording('{"answer": "a cat"}')
    program = lf.Predict(Describe, lm=lm, adapter=lf.JSONAdapter())
    assert program(photo=lf.Image(PNG_URL), question="What?").answer == "a cat"
    messages = seen[0].messages
    assert messages is not None
    assert messages[-1]["content"] == image_parts(PNG_URL, "What?", reminder=False)


def test_images_in_history_turns_and_loaded_demos_render(tmp_path: Path) -> None:
    class Chat(lf.Signature):
        photo: lf.Image = lf.InputField()
        question: str = lf.InputField()
        history: lf.History = lf.InputField()
        answer: str = lf.OutputField()

    lm, seen = recording()
    demo = {"photo": lf.Image(PNG_URL), "question": "What?", "answer": "a cat"}
    history = lf.History(
        [{"photo": lf.Image("https://x/dog.png"), "question": "Q1", "answer": "A1"}]
    )
    program = lf.Predict(Chat, lm=lm, demos=[demo])
    program(photo=lf.Image(PNG_URL), question="Q2", history=history)
    messages = seen[0].messages
    assert messages is not None
    assert messages[1]["content"][1]["image_url"]["url"] == PNG_URL  # the demo
    assert messages[3]["content"][1]["image_url"]["url"] == "https://x/dog.png"  # the turn
    program.save(tmp_path / "p.json")
    loaded = lf.load(tmp_path / "p.json")
    loaded.lm, again = recording()
    loaded(photo=lf.Image(PNG_URL), question="Q2", history=history)
    assert again[0].messages == messages


def test_a_text_value_cannot_forge_an_image_slot() -> None:
    lm, seen = recording()
    lf.Predict(Describe, lm=lm)(photo=lf.Image(PNG_URL), question="\x00image-0-0\x00")
    messages = seen[0].messages
    assert messages is not None
    parts = messages[-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]


def test_a_non_image_value_is_a_usage_error() -> None:
    lm, _ = recording()
    with pytest.raises(lf.UsageError, match=r"takes lf\.Image"):
        lf.Predict(Describe, lm=lm)(photo=42, question="What?")


# -- who refuses images ------------------------------------------------------------------


def test_models_without_vision_refuse_images() -> None:
    lm, seen = recording(profile=lf.ModelProfile())
    with pytest.raises(lf.UsageError, match=r"reads no images.*vision=True"):
        lf.Predict(Describe, lm=lm)(photo=lf.Image(PNG_URL), question="What?")
    assert seen == []


def test_text_models_and_the_completion_adapter_refuse_images() -> None:
    lm, seen = recording(model_type="text")
    with pytest.raises(lf.UsageError, match="completion adapter sends text only"):
        lf.Predict(Describe, lm=lm, adapter=lf.CompletionAdapter())(
            photo=lf.Image(PNG_URL), question="What?"
        )
    with pytest.raises(lf.UsageError, match='model_type="text"'):
        lf.Predict(Describe, lm=lm, adapter=lf.ChatAdapter())(
            photo=lf.Image(PNG_URL), question="What?"
        )
    assert seen == []


def test_the_local_model_refuses_images_before_loading() -> None:
    lm = lf.LM("local/gemma-3-270m", profile=VISION, cache=False)
    with pytest.raises(lf.UsageError, match="local backend runs text-only models"):
        lf.Predict(Describe, lm=lm, adapter=lf.ChatAdapter())(
            photo=lf.Image(PNG_URL), question="What?"
        )
    # The backend itself refuses too, for requests built without lf.LM.request.
    request = LMRequest(
        model="local/gemma-3-270m",
        messages=({"role": "user", "content": image_parts(PNG_URL, "q", reminder=False)},),
    )
    with pytest.raises(lf.UsageError, match="local backend runs text-only models"):
        lm.backend.complete(request)


@pytest.mark.parametrize(
    ("model", "vision"),
    [
        ("openai/gpt-4o-mini", True),
        ("gpt-4.1-nano", True),
        ("anthropic/claude-3-5-sonnet-20241022", True),
        ("anthropic/claude-sonnet-4-20250514", True),
        ("gemini/gemini-2.0-flash", True),
        ("openai/gpt-3.5-turbo", False),
        ("hosted_vllm/my-model", False),
        ("local/gemma-3-270m", False),
    ],
)
def test_vision_families_are_declared(model: str, vision: bool) -> None:
    assert lf.LM(model).profile.vision is vision
    assert lf.LM(model, model_type="text").profile.vision is False


# -- the wire ----------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    try:
        yield srv
    finally:
        srv.close()


def test_lean_http_client_sends_image_parts(server: FakeServer) -> None:
    server.reply = lambda req: (200, {}, chat_body(REPLY))
    lm = lf.LM("hosted_vllm/vl-model", api_base=server.base, profile=VISION, cache=False)
    assert lf.Predict(Describe, lm=lm)(photo=lf.Image(PNG_URL), question="What?").answer == "a cat"
    (request,) = server.requests
    assert request["body"]["messages"][-1]["content"] == image_parts(
        PNG_URL, "What?", reminder=True
    )


def test_litellm_receives_image_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    def completion(**kwargs: Any) -> Any:
        sent.append(kwargs)
        message = SimpleNamespace(content=REPLY, tool_calls=None)
        return SimpleNamespace(
            choices=[SimpleNamespace(message=message, finish_reason="stop")], usage=None
        )

    monkeypatch.setattr(litellm_backend, "_litellm", lambda: SimpleNamespace(completion=completion))
    monkeypatch.delenv("LMFORGE_BLOCK_NETWORK")
    lm = lf.LM("openai/gpt-4o-mini", cache=False)
    assert lf.Predict(Describe, lm=lm)(photo=lf.Image(PNG_URL), question="What?").answer == "a cat"
    assert sent[0]["messages"][-1]["content"] == image_parts(PNG_URL, "What?", reminder=True)


def test_cache_keys_are_stable_and_tell_images_apart(tmp_path: Path) -> None:
    lm, seen = recording(cache=ResponseCache(tmp_path))
    program = lf.Predict(Describe, lm=lm)
    program(photo=lf.Image(PNG_URL), question="What?")
    program(photo=lf.Image.from_bytes(PNG), question="What?")  # the same image: cached
    assert len(seen) == 1
    program(photo=lf.Image.from_bytes(PNG[::-1]), question="What?")
    assert len(seen) == 2
    keys = {request.cache_key() for request in seen}
    assert len(keys) == 2


def test_traces_and_inspection_show_images_short() -> None:
    lm, seen = recording()
    program = lf.Predict(Describe, lm=lm)
    big = lf.Image.from_bytes(PNG * 1000)
    program(photo=big, question="What?")
    text = seen[0].as_text()
    assert f"[image: data:image/png;base64,... ({len(big.url)} chars)]" in text
    assert big.url not in text
    (shown,) = lf.inspect(program, show=False)
    assert "[image: data:image/png;base64,..." in shown and big.url not in shown


def test_a_list_of_images_sends_one_part_each() -> None:
    class Compare(lf.Signature):
        photos: list[lf.Image] = lf.InputField()
        answer: str = lf.OutputField()

    assert lf.Signature.from_json(Compare.to_json()) == Compare
    lm, seen = recording()
    urls = ["https://x/a.png", PNG_URL]
    lf.Predict(Compare, lm=lm)(photos=[lf.Image(url) for url in urls])
    messages = seen[0].messages
    assert messages is not None
    parts = messages[-1]["content"]
    assert [p["image_url"]["url"] for p in parts if p["type"] == "image_url"] == urls
    assert "data:image" not in messages[0]["content"]


def test_cache_key_hashes_a_large_image_without_json_encoding_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lmforge.lm import types

    big = lf.Image.from_bytes(PNG * 20_000)  # ~1.7 MB of base64
    request = LMRequest(
        model="m",
        messages=({"role": "user", "content": image_parts(big.url, "q", reminder=False)},),
    )
    encoded: list[int] = []
    real_dumps = types.json.dumps

    def dumps(value: Any, **kwargs: Any) -> str:
        text = real_dumps(value, **kwargs)
        encoded.append(len(text))
        return text

    monkeypatch.setattr(types.json, "dumps", dumps)
    key = request.cache_key()
    assert encoded and max(encoded) < 2_000  # the image enters as its digest
    other = LMRequest(
        model="m",
        messages=(
            {"role": "user", "content": image_parts(big.url[:-4] + "AAAA", "q", reminder=False)},
        ),
    )
    assert other.cache_key() != key


def test_a_template_that_mangles_an_image_slot_is_a_usage_error() -> None:
    template = (
        "{% for name, value in fields %}[[ ## {{ name }} ## ]]\n{{ value|upper }}\n{% endfor %}"
    )
    lm, seen = recording()
    program = lf.Predict(Describe, lm=lm, adapter=lf.ChatAdapter(templates={"user": template}))
    with pytest.raises(lf.UsageError, match="image field's value"):
        program(photo=lf.Image(PNG_URL), question="What?")
    assert seen == []
