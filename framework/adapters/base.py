"""The adapter contract: pure ``format`` (signature + demos + inputs -> prompt) and ``parse``.

Prompts are rendered from jinja2 templates a user can override. Rendering is split into a
static prefix (instructions, field schema, demos: identical across calls, so provider and
vLLM prefix caches hit) and the per-call input part, so callers can reuse the prefix.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, ClassVar

import jinja2

from ..errors import UsageError
from ..lm.types import Message, OutputConstraint
from ..signature import Field, Signature
from .coerce import render_value

__all__ = ["Adapter", "Prompt", "PromptPrefix"]


@dataclasses.dataclass(frozen=True, slots=True)
class Prompt:
    """A formatted request body: chat ``messages`` or completion ``text``, plus extras."""

    messages: tuple[Message, ...] | None = None
    text: str | None = None
    response_format: dict[str, Any] | None = None
    constraint: OutputConstraint | None = None
    stop: tuple[str, ...] | None = None

    def render(self) -> str:
        """The prompt as one readable string (for inspection)."""
        if self.text is not None:
            return self.text
        parts = [f"[{m['role']}]\n{m.get('content', '')}" for m in self.messages or ()]
        return "\n\n".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class PromptPrefix:
    """The static part of a prompt: everything before the call's inputs."""

    messages: tuple[Message, ...] = ()
    text: str = ""


def field_info(field: Field) -> dict[str, Any]:
    """What templates know about a field."""
    from ..fieldtypes import is_enum_like

    choices = is_enum_like(field.annotation)
    return {
        "name": field.name,
        "label": field.label,
        "type": field.type_name,
        "description": field.description,
        "choices": [str(c) for c in choices] if choices else None,
        "is_text": field.annotation is str,
    }


@functools.lru_cache(maxsize=64)
def _builtin_template(name: str) -> str:
    return resources.files("lmforge.adapters").joinpath("templates", name).read_text()


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,  # prompts are plain text, not HTML
)


class Adapter(abc.ABC):
    """Base class of adapters. Subclasses set ``name`` and ``template_names``.

    ``templates`` overrides built-in templates by role (e.g. ``{"system": "..."}``), as
    jinja2 source.
    """

    name: ClassVar[str] = "base"
    template_names: ClassVar[Mapping[str, str]] = {}

    def __init__(self, templates: Mapping[str, str] | None = None) -> None:
        unknown = set(templates or {}) - set(self.template_names)
        if unknown:
            raise UsageError(
                f"{type(self).__name__} has no template(s) {sorted(unknown)}; "
                f"overridable: {sorted(self.template_names)}"
            )
        self.template_overrides = dict(templates or {})
        self._templates = {
            role: _ENV.from_string(self.template_overrides.get(role) or _builtin_template(file))
            for role, file in self.template_names.items()
        }

    def render(self, role: str, **context: Any) -> str:
        return self._templates[role].render(**context).strip("\n")

    # -- the contract -------------------------------------------------------------------

    def format(
        self, signature: Signature, demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any]
    ) -> Prompt:
        """Build the prompt for ``inputs``, with ``demos`` rendered in order before them."""
        return self.format_inputs(signature, self.format_prefix(signature, demos), inputs)

    @abc.abstractmethod
    def format_prefix(self, signature: Signature, demos: Sequence[Mapping[str, Any]]) -> PromptPrefix:
        """Render the static part: instructions, field schema and demos."""

    @abc.abstractmethod
    def format_inputs(
        self, signature: Signature, prefix: PromptPrefix, inputs: Mapping[str, Any]
    ) -> Prompt:
        """Complete ``prefix`` with this call's inputs."""

    @abc.abstractmethod
    def parse(self, signature: Signature, text: str) -> dict[str, Any]:
        """Parse the LM's text into typed output values; raises ``ParseError``."""

    # -- serialisation ------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.name}
        if self.template_overrides:
            data["templates"] = dict(self.template_overrides)
        return data

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config() == self.config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.template_overrides.items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def demo_values(signature: Signature, demo: Mapping[str, Any], kind: str) -> list[tuple[Field, str]]:
    """The (field, rendered value) pairs of ``demo`` for fields of ``kind`` it has."""
    fields = signature.input_fields if kind == "input" else signature.output_fields
    return [(f, render_value(demo[f.name])) for f in fields if f.name in demo]


def is_complete_demo(signature: Signature, demo: Mapping[str, Any]) -> bool:
    return all(f.name in demo for f in signature.fields)
