"""Tools: plain Python functions (sync or async) described to a model by a JSON schema.

The schema comes from the function's type hints (validated with pydantic) and docstring
(the first paragraph describes the tool; an ``Args:`` section or ``:param x:`` lines
describe the parameters). Arguments from the model are validated before the call.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import lmforge as lf

from ._spec import callable_ref, resolve_callable

if TYPE_CHECKING:
    import pydantic

__all__ = ["Tool", "ToolArgumentError", "render_observation"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$", re.I)
_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_GOOGLE_PARAM = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


class ToolArgumentError(lf.LMForgeError):
    """The model's arguments for a tool did not validate; the message says why."""


class Tool:
    """A function the model may call: ``Tool(search)`` or ``Tool(search, name="lookup")``.

    Args:
        func: a module-level function (sync or ``async def``) with type-hinted parameters.
        name: the name shown to the model (default: the function's name).
        description: what the tool does (default: the docstring's first paragraph).
    """

    def __init__(
        self, func: Callable[..., Any], *, name: str | None = None, description: str | None = None
    ) -> None:
        target: Callable[..., Any] = func.func if isinstance(func, Tool) else func
        if not callable(target):
            raise lf.UsageError(f"a tool must be a function, got {type(target).__name__}")
        self.func: Callable[..., Any] = target
        self.name: str = name or str(getattr(target, "__name__", ""))
        if not _NAME.match(self.name):
            raise lf.UsageError(
                f"tool name {self.name!r} must be letters, digits, '_' or '-' (at most 64); "
                "pass name='...' to Tool"
            )
        self.is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            type(target).__call__
        )
        summary, param_docs = _parse_docstring(inspect.getdoc(target) or "")
        self.description = description if description is not None else summary
        self._model, self._aliases = _args_model(target, self.name, param_docs)
        self.parameters: dict[str, Any] = _untitled(self._model.model_json_schema(by_alias=True))

    # -- descriptions -------------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style tool schema (``{"type": "function", "function": {...}}``)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def describe(self) -> str:
        """One line for a text prompt: name, description and argument schema."""
        props = json.dumps(self.parameters.get("properties", {}), ensure_ascii=False)
        text = f"{self.name}: {self.description}" if self.description else self.name
        return f"{text} Arguments (JSON schema): {props}"

    def ref(self) -> str:
        """The function's import path, used to save the tool."""
        return callable_ref(self.func)

    @classmethod
    def from_ref(cls, ref: str, *, name: str | None = None, description: str | None = None) -> Tool:
        hint = "build the program with tools=[...] yourself and pass it: lf.load(path, program=...)"
        return cls(
            resolve_callable(ref, what="tool", hint=hint), name=name, description=description
        )

    # -- calling ------------------------------------------------------------------------

    def validate(self, args: Any) -> dict[str, Any]:
        """Check the model's arguments; raises :class:`ToolArgumentError` saying what is wrong."""
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                raise ToolArgumentError(
                    f"arguments for {self.name} are not a JSON object: {args[:200]!r}"
                ) from None
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise ToolArgumentError(
                f"arguments for {self.name} must be a JSON object, got {type(args).__name__}"
            )
        import pydantic

        try:
            parsed = self._model.model_validate(dict(args))
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ToolArgumentError(f"bad arguments for {self.name}: {problems}") from None
        return {alias: getattr(parsed, attr) for attr, alias in self._aliases.items()}

    def __call__(self, **kwargs: Any) -> Any:
        """Run the tool synchronously (an async tool runs on an event loop)."""
        result = self.func(**kwargs)
        if inspect.isawaitable(result):
            return _run_coroutine(result)
        return result

    async def acall(self, **kwargs: Any) -> Any:
        """Run the tool without blocking the event loop (sync tools run in a thread)."""
        if self.is_async:
            return await self.func(**kwargs)
        import asyncio  # imported on first async use: plain calls never need it

        result = await asyncio.to_thread(self.func, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


def render_observation(value: Any) -> str:
    """A tool's result as text for the model."""
    if isinstance(value, str):
        return value
    if callable(getattr(value, "model_dump_json", None)):  # a pydantic model
        return str(value.model_dump_json())
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError):
        return str(value)


def _json_default(value: Any) -> Any:
    if callable(getattr(value, "model_dump", None)):  # a pydantic model
        return value.model_dump(mode="json")
    return str(value)


def _untitled(schema: Any) -> Any:
    """Drop pydantic's generated ``title`` strings: they repeat the names and cost tokens."""
    if isinstance(schema, dict):
        return {
            k: _untitled(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def _args_model(
    func: Callable[..., Any], name: str, docs: Mapping[str, str]
) -> tuple[type[pydantic.BaseModel], dict[str, str]]:
    import pydantic

    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        raise lf.UsageError(
            f"cannot read the parameters of tool {name}; use a plain function"
        ) from None
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to Any
        hints = {}
    fields: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    for i, param in enumerate(signature.parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise lf.UsageError(
                f"tool {name} takes *args/**kwargs; give it named, type-hinted parameters instead"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise lf.UsageError(
                f"tool {name} has positional-only parameter {param.name!r}; "
                "tools are called by name"
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        attr = f"p{i}"
        aliases[attr] = param.name
        fields[attr] = (
            annotation,
            pydantic.Field(default, alias=param.name, description=docs.get(param.name) or None),
        )
    config = pydantic.ConfigDict(
        extra="forbid", populate_by_name=False, arbitrary_types_allowed=True
    )
    try:
        model = pydantic.create_model(f"{name}_arguments", __config__=config, **fields)
        model.model_json_schema(by_alias=True)
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise lf.UsageError(
            f"tool {name}: its parameter types have no JSON schema ({exc})"
        ) from None
    return model, aliases


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and parameter descriptions from Google or Sphinx style."""
    lines = doc.splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip() or _ARGS_HEADER.match(line) or line.strip().startswith(":"):
            break
        summary_lines.append(line.strip())
    params: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in lines:
        sphinx = _SPHINX_PARAM.match(line)
        if sphinx:
            params[sphinx.group(1)] = sphinx.group(2).strip()
            continue
        if _ARGS_HEADER.match(line):
            in_args, current = True, None
            continue
        if not in_args:
            continue
        if _SECTION.match(line):
            in_args = False
            continue
        google = _GOOGLE_PARAM.match(line)
        if google and (len(line) - len(line.lstrip())) <= 4:
            current = google.group(1).lstrip("*")
            params[current] = google.group(3).strip()
        elif current and line.strip():
            params[current] = f"{params[current]} {line.strip()}".strip()
    return " ".join(summary_lines), params


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even under a running event loop."""
    import asyncio
    import concurrent.futures
    import contextvars

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, asyncio.run, coro).result()
