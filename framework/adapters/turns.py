"""Rendering ``lf.History`` fields as prior turns and ``lf.Image`` fields as image parts.

A signature's *layout* says which input fields are rendered as fields (all but a history
field), which one holds the history and which hold images; adapters cache it per
signature, so calls of signatures without either pay one lookup. An image value becomes a
slot in the rendered text, which :meth:`Images.content` then splits into OpenAI content
parts, the image where its field is.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UsageError
from ..inputtypes import input_kind
from ..signature import Field, Signature
from .coerce import render_value
from .markers import marked_value

__all__ = ["Images", "Layout", "history_turns", "layout_of"]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Layout:
    """How a signature's inputs are rendered (one per signature, compared by identity)."""

    fields: tuple[Field, ...]  # input fields rendered as fields: all but the history field
    history: str | None  # the name of the lf.History input field, if any
    images: frozenset[str]  # names of the lf.Image and list[lf.Image] input fields
    # No history and no images: the adapters' plain fast path applies. A field, not a
    # property: it is read on every call.
    plain: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain", self.history is None and not self.images)


def layout_of(signature: Signature) -> Layout:
    """The :class:`Layout` of ``signature`` (adapters cache it with ``Adapter.cached``)."""
    history = [f.name for f in signature.input_fields if input_kind(f.annotation) == "history"]
    if len(history) > 1:
        raise UsageError(
            f"signature {signature.name} has {len(history)} lf.History fields "
            f"({', '.join(history)}); a signature takes at most one"
        )
    images = frozenset(f.name for f in signature.input_fields if _holds_images(f.annotation))
    return Layout(
        fields=tuple(f for f in signature.input_fields if f.name not in history),
        history=history[0] if history else None,
        images=images,
    )


def _holds_images(annotation: Any) -> bool:
    """``lf.Image`` or ``list[lf.Image]``."""
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation) or (None,)
    return input_kind(annotation) == "image"


def history_turns(layout: Layout, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The turns held by the history field of ``values`` (an input dict or a demo)."""
    if layout.history is None or layout.history not in values:
        return []
    value = values[layout.history]
    messages = getattr(value, "messages", None)
    if messages is None and isinstance(value, Mapping):  # read back from JSON
        messages = value.get("messages")
    if messages is None and isinstance(value, list):
        messages = value
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise UsageError(
            f"field {layout.history!r} takes lf.History(messages=[{{...}}, ...]), "
            f"got {type(value).__name__}"
        )
    return [dict(m) for m in messages]


class Images:
    """Collects the image URLs of one message while it is rendered."""

    __slots__ = ("_pattern", "_token", "urls")

    def __init__(self) -> None:
        self.urls: list[str] = []
        # A random token per message: no text value can forge a slot.
        self._token = os.urandom(8).hex()
        self._pattern = re.compile(f"\x00image-{self._token}-(\\d+)\x00")

    def slot(self, field: Field, value: Any) -> str:
        """A placeholder for the image ``value`` of ``field`` (a list: one per image)."""
        if isinstance(value, list | tuple):
            return "\n".join(self.slot(field, item) for item in value)
        self.urls.append(_image_url(field, value))
        return f"\x00image-{self._token}-{len(self.urls) - 1}\x00"

    def content(self, text: str) -> str | list[dict[str, Any]]:
        """``text`` as message content: itself without images, else text and image parts."""
        if not self.urls:
            return text
        parts: list[dict[str, Any]] = []
        placed: list[int] = []
        for i, piece in enumerate(self._pattern.split(text)):
            if i % 2:
                placed.append(int(piece))
                parts.append({"type": "image_url", "image_url": {"url": self.urls[placed[-1]]}})
            elif piece.strip():
                parts.append({"type": "text", "text": piece})
        if sorted(placed) != list(range(len(self.urls))):
            # Only a template override that changes or repeats values gets here.
            raise UsageError(
                "the message template changed or repeated an image field's value; render "
                "image fields with {{ value }} exactly once"
            )
        return parts


def field_values(
    layout: Layout, values: Mapping[str, Any], images: Images | None
) -> list[tuple[Field, str]]:
    """The rendered (field, value) pairs of the input fields ``values`` has: text with
    field markers neutralised, images as slots of ``images``."""
    return [
        (f, images.slot(f, values[f.name]))
        if images is not None and f.name in layout.images
        else (f, marked_value(render_value(values[f.name])))
        for f in layout.fields
        if f.name in values
    ]


def refuse_images(layout: Layout, adapter: str) -> None:
    """Adapters that send text only refuse image fields up front."""
    if layout.images:
        raise UsageError(
            f"the {adapter} adapter sends text only, but the signature has image field(s) "
            f"{', '.join(sorted(layout.images))}; use a chat model with vision (ChatAdapter or "
            "JSONAdapter)"
        )


def _image_url(field: Field, value: Any) -> str:
    if input_kind(type(value)) == "image":
        return str(value.url)
    if isinstance(value, Mapping):  # read back from JSON
        value = value.get("url")
    if isinstance(value, str):
        from ..image import Image  # validates the URL as lf.Image(url) does

        return Image(value).url
    raise UsageError(
        f"field {field.name!r} takes lf.Image(url=...) or lf.Image.from_file(path), "
        f"got {type(value).__name__}"
    )


def output_pairs(signature: Signature, values: Mapping[str, Any]) -> Sequence[tuple[Field, str]]:
    """The rendered (field, value) pairs of the output fields ``values`` has."""
    return [
        (f, marked_value(render_value(values[f.name])))
        for f in signature.output_fields
        if f.name in values
    ]
