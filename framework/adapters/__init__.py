"""Adapters turn a signature, demos and inputs into a prompt, and LM text back into values."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .base import Adapter, Prompt, PromptPrefix
from .chat import ChatAdapter
from .completion import CompletionAdapter
from .json_adapter import JSONAdapter

__all__ = [
    "Adapter",
    "ChatAdapter",
    "CompletionAdapter",
    "JSONAdapter",
    "Prompt",
    "PromptPrefix",
    "adapter_from_config",
    "adapter_named",
]

_BY_NAME: dict[str, type[Adapter]] = {
    "chat": ChatAdapter,
    "json": JSONAdapter,
    "completion": CompletionAdapter,
}


def adapter_named(name: str) -> Adapter:
    try:
        return _BY_NAME[name]()
    except KeyError:
        raise UsageError(f"unknown adapter {name!r}; choose one of {sorted(_BY_NAME)}") from None


def adapter_from_config(data: dict[str, Any]) -> Adapter:
    kind = data.get("type")
    if kind not in _BY_NAME:
        raise UsageError(f"unknown adapter {kind!r}; choose one of {sorted(_BY_NAME)}")
    kwargs: dict[str, Any] = {"templates": data.get("templates")}
    if kind == "json" and "mode" in data:
        kwargs["mode"] = data["mode"]
    return _BY_NAME[kind](**kwargs)
