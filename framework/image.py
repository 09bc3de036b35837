"""``lf.Image``: an image input, sent to vision models in the OpenAI content-part format.

Stored as a URL: an ``http(s)`` URL as given, a file or bytes as a ``data:`` URL (base64),
so an image in a demo or artifact is plain JSON. Adapters put each image where its field
is, as an ``image_url`` part of the user message; text-only models refuse it (see
:mod:`.lm.vision`).

This module imports pydantic; ``lmforge`` loads it on first access of ``lf.Image``.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from pathlib import Path
from typing import Any, ClassVar

import pydantic

from .errors import UsageError
from .inputtypes import KIND_KEY

__all__ = ["MAX_IMAGE_BYTES", "Image"]

#: The largest image accepted (OpenAI's limit per image); larger ones fail on every call.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
_SCHEMES = ("http://", "https://", "data:image/")


class Image(pydantic.BaseModel):
    """An image: ``lf.Image(url=...)``, ``lf.Image(path=...)``, :meth:`from_file` or
    :meth:`from_bytes`."""

    model_config = pydantic.ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={KIND_KEY: "image"}
    )
    #: What adapters look for to send this field as an image part (see :mod:`.inputtypes`).
    lmforge_input_kind: ClassVar[str] = "image"

    url: str = pydantic.Field(description="an http(s) URL or a data:image/... URL")

    def __init__(
        self, url: str | None = None, /, *, path: str | os.PathLike[str] | None = None, **data: Any
    ) -> None:
        if path is not None:
            if url is not None or "url" in data:
                raise UsageError("lf.Image takes a url or a path, not both")
            data["url"] = _file_url(Path(path))
        elif url is not None:
            data["url"] = url
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise UsageError(f"lf.Image: {exc.errors()[0]['msg']}") from None

    @pydantic.field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if not url.startswith(_SCHEMES):
            raise ValueError(
                f"url must start with http://, https:// or data:image/, got {url[:40]!r}; "
                "use lf.Image(path=...) for a file"
            )
        return url

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Image:
        """The image in the file at ``path``, as a ``data:`` URL."""
        return cls(path=path)

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str = "image/png") -> Image:
        """An image from encoded bytes (PNG, JPEG, ...) of type ``mime_type``."""
        if not isinstance(data, bytes | bytearray):
            raise UsageError(f"lf.Image.from_bytes takes bytes, got {type(data).__name__}")
        return cls(_data_url(bytes(data), mime_type))

    def __repr__(self) -> str:
        shown = self.url if len(self.url) <= 60 else f"{self.url[:45]}...({len(self.url)} chars)"
        return f"Image(url={shown!r})"

    __str__ = __repr__


def _file_url(path: Path) -> str:
    mime_type = mimetypes.guess_type(path.name)[0]
    if mime_type is None or not mime_type.startswith("image/"):
        raise UsageError(
            f"lf.Image: cannot tell the image type of {path.name!r} from its extension; "
            "use lf.Image.from_bytes(data, mime_type='image/png')"
        )
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise UsageError(_too_large(size))
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"lf.Image: cannot read {path}: {exc.strerror or exc}") from None
    return _data_url(data, mime_type)


def _data_url(data: bytes, mime_type: str) -> str:
    if not mime_type.startswith("image/"):
        raise UsageError(f"lf.Image: mime_type must be image/..., got {mime_type!r}")
    if len(data) > MAX_IMAGE_BYTES:
        raise UsageError(_too_large(len(data)))
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def _too_large(size: int) -> str:
    return (
        f"lf.Image: the image has {size} bytes, over the {MAX_IMAGE_BYTES} byte limit; "
        "resize or compress it"
    )
