"""Input types adapters render specially: ``lf.History`` (prior turns) and ``lf.Image``.

Kept free of pydantic (the types themselves import it) so that the adapters and the LM can
ask "is this a history or image field?" without loading either type.
"""

from __future__ import annotations

from typing import Any, Literal

from .errors import SignatureError

__all__ = ["KIND_KEY", "InputKind", "input_kind", "type_for_kind"]

InputKind = Literal["history", "image"]

#: The JSON-schema key naming the kind; how a signature read from JSON gets the type back.
KIND_KEY = "x-lmforge-type"


def input_kind(annotation: Any) -> InputKind | None:
    """``"history"`` or ``"image"`` for ``lf.History`` and ``lf.Image`` fields, else None."""
    kind = getattr(annotation, "lmforge_input_kind", None) if isinstance(annotation, type) else None
    return kind if kind in ("history", "image") else None


def type_for_kind(kind: object) -> type:
    """The type a JSON schema marked with ``KIND_KEY: kind`` stands for."""
    if kind == "history":
        from .history import History

        return History
    if kind == "image":
        from .image import Image

        return Image
    raise SignatureError(f"unknown lmforge input type {kind!r}; expected 'history' or 'image'")
