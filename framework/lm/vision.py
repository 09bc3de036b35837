"""Refusing images for models that cannot read them, before any request is sent.

A text-only model given an image part would fail at the provider, or worse (a text-mode
LM or the local model) silently drop the image and answer without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UsageError
from .profiles import ModelProfile

__all__ = ["content_text", "digest_images", "has_images", "refuse_images"]


def has_images(messages: Iterable[Mapping[str, Any]] | None) -> bool:
    """Whether any message holds an OpenAI ``image_url`` content part."""
    for message in messages or ():
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(part, Mapping) and part.get("type") == "image_url" for part in content
        ):
            return True
    return False


def digest_images(messages: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``messages`` with each image URL replaced by its SHA-256, for cache keys: JSON-encoding
    a megabytes-long ``data:`` URL costs several times more than hashing it."""
    import hashlib

    def part(value: Any) -> Any:
        if isinstance(value, Mapping) and value.get("type") == "image_url":
            url = str((value.get("image_url") or {}).get("url", ""))
            digest = hashlib.sha256(url.encode()).hexdigest()
            return {**value, "image_url": {"sha256": digest}}
        return value

    return [
        {**m, "content": [part(p) for p in m["content"]]}
        if isinstance(m.get("content"), list)
        else m
        for m in messages
    ]


def content_text(content: Any) -> str:
    """Message content as readable text (inspection, traces): image parts become
    ``[image: URL]``, a ``data:`` URL shortened to its type and size."""
    if type(content) is str:  # the common case, first
        return content
    if not isinstance(content, list):
        return "" if content is None else str(content)
    pieces = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:"):
                url = f"{url.split(',', 1)[0]},... ({len(url)} chars)"
            pieces.append(f"[image: {url}]")
        elif isinstance(part, Mapping):
            pieces.append(str(part.get("text", "")))
    return "".join(pieces)


def refuse_images(
    model: str,
    model_type: str,
    profile: ModelProfile,
    messages: Iterable[Mapping[str, Any]] | None,
) -> None:
    """Raise ``UsageError`` when ``messages`` hold images ``model`` cannot read."""
    if messages is None or not has_images(messages):
        return
    hint = "use a chat model that reads images, e.g. openai/gpt-4o-mini"
    if model.startswith("local/"):
        reason = "the local backend runs text-only models"
    elif model_type == "text":
        reason = 'it is a text-completion model (model_type="text")'
    elif not profile.vision:
        reason = "its profile says it reads no images"
        hint += ", or pass profile=lf.ModelProfile(vision=True) if this one does"
    else:
        return
    raise UsageError(f"{model} cannot take lf.Image inputs: {reason}; {hint}")
