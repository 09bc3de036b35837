"""The adapter contract: pure ``format`` (signature + demos + inputs -> prompt) and ``parse``.

Prompts are rendered from jinja2 templates a user can override. Rendering is split into a
static prefix (instructions, field schema, demos: identical across calls, so provider and
vLLM prefix caches hit) and the per-call input part, so callers can reuse the prefix.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ParseError, UsageError
from ..fields import NO_DEFAULT
from ..lm.types import LMRequest, LMResponse, Message, OutputConstraint
from ..lm.vision import content_text
from ..signature import Field, Signature

if TYPE_CHECKING:
    import jinja2

    from ..lm.lm import LM
    from .sandbox import BoundedEnvironment
    from .turns import Layout

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
        parts = [f"[{m['role']}]\n{content_text(m.get('content'))}" for m in self.messages or ()]
        return "\n\n".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class PromptPrefix:
    """The static part of a prompt: everything before the call's inputs. ``layout`` is
    the signature's layout (:func:`lmforge.adapters.turns.layout_of`) when the adapter
    built the prefix, so a call need not look it up again."""

    messages: tuple[Message, ...] = ()
    text: str = ""
    layout: Layout | None = None


def field_info(field: Field) -> dict[str, Any]:
    """What templates know about a field."""
    from ..constraints import describe_constraints, unwrap_annotated
    from ..fieldtypes import choice_labels

    base = unwrap_annotated(field.annotation)
    choices = choice_labels(base)
    description = field.description
    bounds = describe_constraints(field.annotation)
    if bounds:
        description = f"{description} ({bounds})" if description else bounds
    return {
        "name": field.name,
        "label": field.label,
        "type": field.type_name,
        "description": description,
        "choices": list(choices) if choices else None,
        "is_text": base is str,
    }


def missing_output(field: Field, message: str, raw: str) -> Any:
    """The value of an output the answer leaves out: its default (None when Optional);
    a ``ParseError`` with ``message`` when the field is required."""
    value = field.missing_value()
    if value is NO_DEFAULT:
        raise ParseError(message, raw=raw, field=field.name)
    return value


@functools.lru_cache(maxsize=64)
def _builtin_template(name: str) -> str:
    from importlib import resources

    return resources.files("lmforge.adapters").joinpath("templates", name).read_text()


_ENV_OPTIONS: dict[str, Any] = {
    "keep_trailing_newline": False,
    "trim_blocks": True,
    "lstrip_blocks": True,
    "autoescape": False,  # prompts are plain text, not HTML
}


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    """The environment of the built-in templates, which ship with lmforge."""
    import jinja2  # imported on first render: keeps `import lmforge` cheap

    return jinja2.Environment(undefined=jinja2.StrictUndefined, **_ENV_OPTIONS)


@functools.lru_cache(maxsize=1)
def _user_env() -> BoundedEnvironment:
    """The environment of template overrides, sandboxed: they may come from a loaded
    artifact, and a template must neither reach Python internals (``x.__init__.__globals__``)
    nor exhaust memory or time (see :mod:`.sandbox`)."""
    import jinja2

    from .sandbox import BoundedEnvironment

    return BoundedEnvironment(undefined=jinja2.StrictUndefined, **_ENV_OPTIONS)


@functools.lru_cache(maxsize=64)
def _compiled_builtin(name: str) -> jinja2.Template:
    return _env().from_string(_builtin_template(name))


def _compile_user(role: str, source: str) -> jinja2.Template:
    import jinja2

    from .sandbox import TemplateRefusedError, compile_template

    try:
        return compile_template(_user_env(), source)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(
            f"template {role!r} has a syntax error on line {exc.lineno}: {exc.message}"
        ) from None
    except TemplateRefusedError as exc:
        raise UsageError(f"template {role!r} is refused: {exc}") from None


def _render_user(role: str, template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Render a user template under the sandbox's limits; any failure is a ``UsageError``."""
    from .sandbox import TemplateRefusedError, render

    try:
        return render(template, context)
    except TemplateRefusedError as exc:
        raise UsageError(f"template {role!r} is refused: {exc}") from None
    except Exception as exc:  # a user template can fail in any way; none is a crash
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"template {role!r} failed to render: {message}") from None


# Values a template override is tried with when an adapter is built, so that one exceeding
# the sandbox's limits is refused at load (and export) time, not on the first call.
_SAMPLE_FIELD = {
    "name": "question",
    "label": "Question",
    "type": "str",
    "description": "the question",
    "choices": None,
    "is_text": True,
}
_SAMPLE_CONTEXT: Mapping[str, Any] = {
    "instructions": "Answer the question.",
    "inputs": [_SAMPLE_FIELD],
    "outputs": [{**_SAMPLE_FIELD, "name": "answer", "label": "Answer"}],
    "fields": [("question", "What is 2 + 2?")],
    "reminder": True,
}


# Stands in for a value while a template's static skeleton is rendered (see render_fields).
_SLOT = "\x00lmforge-slot-{}\x00"
_MAX_SKELETONS = 512


class _RenderCache:
    """An adapter's compiled templates and rendered skeletons; copies start empty."""

    __slots__ = ("skeletons", "templates", "values")

    def __init__(self) -> None:
        self.templates: dict[str, jinja2.Template] = {}
        self.skeletons: dict[Hashable, tuple[str, ...]] = {}
        self.values: dict[Hashable, Any] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> _RenderCache:
        return _RenderCache()

    def __copy__(self) -> _RenderCache:
        return _RenderCache()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_RenderCache, ())


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
        self._cache = _RenderCache()
        for role in self.template_overrides:
            self._try_template(role)

    def _try_template(self, role: str) -> None:
        """Compile a template override and render it once with sample values: syntax
        errors and templates over the sandbox's limits show here, not on the first call."""
        from .sandbox import TemplateRefusedError, render

        template = self._template(role)
        try:
            render(template, _SAMPLE_CONTEXT)
        except TemplateRefusedError as exc:
            raise UsageError(f"template {role!r} is refused: {exc}") from None
        except Exception:
            pass  # may come from the sample values; real values will tell

    def _template(self, role: str) -> jinja2.Template:
        template = self._cache.templates.get(role)
        if template is None:
            source = self.template_overrides.get(role)
            file = self.template_names[role]
            template = _compile_user(role, source) if source else _compiled_builtin(file)
            self._cache.templates[role] = template
        return template

    def render(self, role: str, **context: Any) -> str:
        template = self._template(role)
        if role not in self.template_overrides:
            return template.render(**context).strip("\n")
        return _render_user(role, template, context).strip("\n")

    def render_fields(
        self,
        role: str,
        key: Hashable,
        fields: Sequence[tuple[str, str]],
        context: Callable[[], Mapping[str, Any]],
    ) -> str:
        """``render(role, fields=fields, **context())``, fast for repeated calls.

        ``key`` must determine ``context()`` and the names (first items) of ``fields``; only
        the values vary per call. A built-in template is rendered once per key with
        placeholders for the values, which each call then fills in: the same text, without
        running the template. User templates (which may transform values) always render.
        """
        skeleton = self._cache.skeletons.get((role, key))
        if skeleton is None:
            skeleton = self._skeleton(role, [name for name, _ in fields], context())
            skeletons = self._cache.skeletons
            if len(skeletons) >= _MAX_SKELETONS:
                skeletons.clear()
            skeletons[(role, key)] = skeleton
        if not skeleton:
            return self.render(role, fields=list(fields), **context())
        pieces = [skeleton[0]]
        for (_, value), tail in zip(fields, skeleton[1:], strict=True):
            pieces.append(value)
            pieces.append(tail)
        return "".join(pieces).strip("\n")

    def _skeleton(
        self, role: str, names: Sequence[str], context: Mapping[str, Any]
    ) -> tuple[str, ...]:
        """The template's output split around each value, or ``()`` when it cannot be."""
        if self.template_overrides.get(role) or type(self).render is not Adapter.render:
            return ()
        slots = [_SLOT.format(i) for i in range(len(names))]
        text = self._template(role).render(fields=list(zip(names, slots, strict=True)), **context)
        pieces: list[str] = []
        for slot in slots:
            head, found, text = text.partition(slot)
            if not found or slot in text or "\x00lmforge-slot-" in head:
                return ()
            pieces.append(head)
        if "\x00lmforge-slot-" in text:
            return ()
        return (*pieces, text)

    def cached(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """A per-adapter memo for values that depend only on ``key`` (e.g. a signature)."""
        try:
            return self._cache.values[key]
        except KeyError:
            values = self._cache.values
            if len(values) >= _MAX_SKELETONS:
                values.clear()
            value = values[key] = build()
            return value

    # -- the contract -------------------------------------------------------------------

    def format(
        self, signature: Signature, demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any]
    ) -> Prompt:
        """Build the prompt for ``inputs``, with ``demos`` rendered in order before them."""
        prefix = self.format_prefix(signature, demos)
        return self.format_inputs(signature, prefix, signature.check_inputs(inputs))

    @abc.abstractmethod
    def format_prefix(
        self, signature: Signature, demos: Sequence[Mapping[str, Any]]
    ) -> PromptPrefix:
        """Render the static part: instructions, field schema and demos."""

    @abc.abstractmethod
    def format_inputs(
        self, signature: Signature, prefix: PromptPrefix, inputs: Mapping[str, Any]
    ) -> Prompt:
        """Complete ``prefix`` with this call's inputs, already checked by
        ``signature.check_inputs`` (defaults of omitted inputs filled in)."""

    @abc.abstractmethod
    def parse(self, signature: Signature, text: str) -> dict[str, Any]:
        """Parse the LM's text into typed output values; raises ``ParseError``."""

    async def complete_core(self, lm: LM, request: LMRequest, *, blocking: bool) -> LMResponse:
        """Send ``request`` (built from this adapter's prompt) to ``lm``: a
        :mod:`lmforge.steps` core, awaited with the caller's ``blocking``."""
        return await lm.complete_core(request, blocking=blocking)

    def format_reply(self, signature: Signature, outputs: Mapping[str, Any]) -> str:
        """The LM text that :meth:`parse` reads back as ``outputs`` (for test doubles such as
        :class:`lmforge.testing.DummyLM`); adapters that can, override it."""
        raise UsageError(
            f"{type(self).__name__} cannot write replies for fake LMs; give the fake LM reply "
            "text (lmforge.testing.ScriptedLM) or use the chat, json or completion adapter"
        )

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


def is_complete_demo(signature: Signature, demo: Mapping[str, Any]) -> bool:
    return all(f.name in demo for f in signature.fields)
