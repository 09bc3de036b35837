"""An OpenAI-compatible face for a compiled program: ``/v1/chat/completions``, ``/v1/models``.

``model`` is the program's name. A program with one input takes the last user message
as that input; otherwise the message must be a JSON object of inputs. The answer is the
output as text for one output field, a JSON object otherwise. ``stream=true`` answers as
server-sent events ending with ``data: [DONE]``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pydantic
import pydantic_core

from .program import output_text

__all__ = ["ChatRequest", "StreamOptions", "add_openai_routes", "message_text"]

_CHUNK = 48


class StreamOptions(pydantic.BaseModel):
    """OpenAI's ``stream_options`` object (``include_usage``; other options are accepted)."""

    model_config = pydantic.ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(pydantic.BaseModel):
    """The parts of an OpenAI chat request the shim uses (other options are accepted)."""

    model_config = pydantic.ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]] = pydantic.Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    tool_choice: str | dict[str, Any] | None = None


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message (string content, or the text parts of a content list)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def add_openai_routes(app: Any, runtime: Any, error_response: Callable[[Any, Any], Any]) -> None:
    """Register the OpenAI-compatible routes for ``runtime`` on ``app``."""
    from fastapi.responses import JSONResponse, StreamingResponse

    from .runtime import ApiError

    name = runtime.name
    metrics = runtime.metrics

    @app.get("/v1/models", tags=["openai"])
    async def list_models() -> dict[str, Any]:
        """The program, listed as a model."""
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "lmforge"}],
        }

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatRequest) -> Any:
        """Call the program as if it were a chat model."""
        if body.model != name:
            raise ApiError(
                404, "model_not_found", f"model {body.model!r} is not served here; use {name!r}"
            )
        _check_options(body, ApiError)
        inputs = runtime.validate(_inputs_from_messages(runtime, body.messages, ApiError))
        runtime.acquire()
        status = 200
        try:
            answer = await runtime.answer(inputs)
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            runtime.release()
            metrics.requests.labels(name, "chat", str(status)).inc()
        usage = answer.usage
        # A withheld answer reads as OpenAI's filtered one: no content, "content_filter".
        text = "" if answer.withheld else output_text(runtime.signature, answer.payload)
        finish = "content_filter" if answer.withheld else "stop"
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(
                _sse(completion_id, created, name, text, usage if include_usage else None, finish),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", **answer.headers()},
            )
        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None if answer.withheld else text},
                    "finish_reason": finish,
                }
            ],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        }
        return JSONResponse(completion, headers=answer.headers())


def _check_options(body: ChatRequest, api_error: Any) -> None:
    """Refuse (422) the chat options a program cannot honour, rather than ignore them."""
    if body.n is not None and body.n != 1:
        raise api_error(
            422,
            "invalid_input",
            f"n={body.n} is not supported: a program gives one answer per call; "
            "send n separate requests (or omit n)",
        )
    if body.tool_choice is not None and body.tool_choice not in ("none", "auto"):
        raise api_error(
            422,
            "invalid_input",
            "tool_choice that forces a tool call is not supported: the program answers with "
            "its output, never a tool call; omit tool_choice (or use 'auto' or 'none')",
        )


def _inputs_from_messages(runtime: Any, messages: list[dict[str, Any]], api_error: Any) -> Any:
    user = [m for m in messages if m.get("role") == "user"]
    if not user:
        raise api_error(
            422, "invalid_input", "messages hold no user message; put the program's input in one"
        )
    content = user[-1].get("content")
    has_text = isinstance(content, str) or (
        isinstance(content, list)
        and any(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content)
    )
    if not has_text:
        raise api_error(
            422,
            "invalid_input",
            "the last user message has no text content; send the program's input as a "
            "string (or as text parts of a content list)",
        )
    text = message_text(user[-1])
    fields = runtime.signature.input_fields
    if len(fields) == 1:
        return {fields[0].name: text}
    # pydantic's parser, as for the program route's body: it bounds nesting (json.loads
    # raised RecursionError, a 500, for a message of 50,000 nested brackets).
    problem = ""
    try:
        data = pydantic_core.from_json(text)
    except ValueError as exc:
        data, problem = None, f" (not valid JSON: {exc})"
    if not isinstance(data, dict):
        names = ", ".join(f.name for f in fields)
        raise api_error(
            422,
            "invalid_input",
            f"program {runtime.name!r} takes several inputs ({names}); the last user message "
            f"must be a JSON object of them{problem}",
        )
    return data


async def _sse(
    completion_id: str,
    created: int,
    model: str,
    text: str,
    usage: dict[str, int] | None,
    finish: str = "stop",
) -> AsyncIterator[bytes]:
    def event(
        delta: dict[str, Any], finish: str | None, extra: dict[str, Any] | None = None
    ) -> bytes:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **(extra or {}),
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

    yield event({"role": "assistant", "content": ""}, None)
    for start in range(0, len(text), _CHUNK):
        yield event({"content": text[start : start + _CHUNK]}, None)
    yield event({}, finish)
    if usage is not None:
        total = usage["prompt_tokens"] + usage["completion_tokens"]
        final = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": {**usage, "total_tokens": total},
        }
        yield f"data: {json.dumps(final)}\n\n".encode()
    yield b"data: [DONE]\n\n"
