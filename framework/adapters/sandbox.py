"""A jinja2 sandbox for user template overrides that also bounds the work a template does.

jinja2's sandbox stops a template from reaching Python internals but not from exhausting
memory or time (``{{ 'a' * 2000000000 }}``, ``{{ 9 ** (9 ** 9) }}``, nested loops). Here
every value a template builds by repetition is size-checked *before* it is built, loops,
calls and operators spend from a per-render budget, and the rendered text is capped.
Templates cannot load other templates (no loader is configured, by design).

This module imports jinja2 at import time; :mod:`.base` imports it only on first use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import jinja2
from jinja2 import nodes, pass_context
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from .limits import (
    CONTAINERS,
    MAX_CHARS,
    TemplateRefusedError,
    check_format_spec,
    check_power,
    check_printf,
    check_repeat,
    check_size,
    guard_str_method,
    guarded_filters,
    is_sized,
    size_of,
)

__all__ = ["BoundedEnvironment", "TemplateRefusedError", "compile_template", "render"]

MAX_WRITTEN = 4 * MAX_CHARS  # all text of one render's {{ }} expressions, macros' included
MAX_RANGE = 100_000  # most items of one range()
MAX_STEPS = 300_000  # loop iterations + calls + intercepted operators per render
MAX_CPU_SECONDS = 2.0  # CPU time of one render (checked every _CLOCK_EVERY steps)
_CLOCK_EVERY = 1024
_BUDGET_KEY = "lmforge budget"  # not an identifier, so templates cannot name it
_LOADS = {
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
}


class _Budget:
    """The steps, CPU time and written text one render may still spend."""

    __slots__ = ("_deadline", "_steps", "_written")

    def __init__(self) -> None:
        self._steps = 0
        self._written = 0
        self._deadline = time.thread_time() + MAX_CPU_SECONDS

    def write(self, size: int) -> None:
        self._written += size
        if self._written > MAX_WRITTEN:
            raise TemplateRefusedError(
                f"the template writes more than {MAX_WRITTEN} characters (macros and "
                "{% set %} blocks included)"
            )

    def spend(self) -> None:
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise TemplateRefusedError(
                f"the template takes more than {MAX_STEPS} steps (loop iterations, calls, "
                "operators); make its loops smaller"
            )
        if not self._steps % _CLOCK_EVERY and time.thread_time() > self._deadline:
            raise TemplateRefusedError(
                f"the template renders for more than {MAX_CPU_SECONDS:g}s of CPU; simplify it"
            )


def _budget(context: Context | None) -> _Budget | None:
    return None if context is None else context.parent.get(_BUDGET_KEY)


def _counted(budget: _Budget | None, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        if budget is not None:
            budget.spend()
        yield item


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateRefusedError(
            f"range() of {len(numbers)} items is too large (at most {MAX_RANGE})"
        )
    return numbers


def _no_lipsum(*args: Any, **kwargs: Any) -> str:
    # Lorem ipsum of any length is no prompt's need; refusing it keeps the size checks few.
    raise TemplateRefusedError("lipsum() is not available in prompt templates")


class _Namespace(Namespace):
    """``namespace()`` whose text is short: its attributes can be big, and are output
    (and size-checked) one by one."""

    def __repr__(self) -> str:
        return "<namespace>"


@pass_context
def _finalize(context: Context, value: Any) -> str:
    """Every ``{{ }}`` value as text, counted against the render's written-text budget
    (macro bodies and ``{% set %}`` blocks too, which the output cap cannot see)."""
    text = str(value)
    budget = _budget(context)
    if budget is not None:
        budget.write(len(text))
    return text


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose templates build bounded values in bounded time.

    Templates must be compiled with :func:`compile_template` and rendered with
    :func:`render`, which install the loop counting and the per-render budget.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.globals["namespace"] = _Namespace
        self.globals["lipsum"] = _no_lipsum
        self.globals["range"] = _bounded_range
        self.filters.update(guarded_filters(self.filters))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget(context)
        if budget is not None:
            budget.spend()
        if operator == "*":
            check_repeat(left, right)
        elif operator == "**":
            check_power(left, right)
        elif operator == "+":
            if is_sized(left) and is_sized(right):
                check_size(size_of(left) + size_of(right), "'+'")
        elif operator == "%" and isinstance(left, str | bytes):
            check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget(context)
        if budget is not None:
            budget.spend()
        if isinstance(obj, LoopContext) and args:  # a recursive loop's next level
            args = (_counted(budget, args[0]), *args[1:])
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes):
            args = guard_str_method(owner, getattr(obj, "__name__", ""), args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, CONTAINERS):
            size_of(result)  # refuses one built over the limit, e.g. dict(a=x, b=x) nested
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        template = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            check_format_spec(template)
            return wrapper(*args, **kwargs)

        return checked

    def lmforge_iter(self, context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
        """What a ``{% for %}`` loop iterates: ``iterable``, each step spent from the budget."""
        return _counted(_budget(context), iterable)

    def lmforge_literal(self, context: Context, value: Any) -> Any:
        """A list, tuple or dict literal, size-checked: ``[x, x]`` in a loop doubles."""
        if isinstance(value, CONTAINERS):
            size_of(value)
        return value

    def lmforge_concat(self, context: Context, *parts: Any) -> str:
        """The ``~`` operator, size-checked before joining."""
        texts = [str(part) for part in parts]
        check_size(sum(map(len, texts)), "'~'")
        return "".join(texts)


class _Instrument(NodeTransformer):
    """Routes loops, ``~`` and list/tuple/dict literals through the environment's
    checking methods (the method names are jinja's visitor protocol)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802
        loop = cast(nodes.For, self.generic_visit(node))
        loop.iter = _env_call("lmforge_iter", loop.iter)
        return loop

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        concat = cast(nodes.Concat, self.generic_visit(node))
        return _env_call("lmforge_concat", *concat.nodes)

    def visit_List(self, node: nodes.List) -> nodes.Node:  # noqa: N802
        return _env_call("lmforge_literal", self.generic_visit(node))

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:  # noqa: N802
        return _env_call("lmforge_literal", self.generic_visit(node))

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:  # noqa: N802
        visited = self.generic_visit(node)
        return _env_call("lmforge_literal", visited) if node.ctx == "load" else visited


def _env_call(method: str, *args: nodes.Node) -> nodes.Call:
    """``environment.<method>(context, *args)`` as a template expression."""
    arguments = cast("list[nodes.Expr]", [nodes.ContextReference(), *args])
    return nodes.Call(nodes.EnvironmentAttribute(method), arguments, [], None, None)


def compile_template(env: BoundedEnvironment, source: str) -> jinja2.Template:
    """Compile ``source`` with loops and ``~`` counted; refuses templates that load others."""
    tree = env.parse(source)
    for node_type, tag in _LOADS.items():
        if next(tree.find_all(node_type), None) is not None:
            raise TemplateRefusedError(
                f"{tag} is not available in prompt templates (they cannot load other "
                "templates); put the text in the template itself"
            )
    return env.from_string(cast(nodes.Template, _Instrument().visit(tree)))


def render(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Render ``template`` under a fresh budget, refusing output over ``MAX_CHARS``."""
    ctx = template.new_context({**context, _BUDGET_KEY: _Budget()})
    pieces: list[str] = []
    size = 0
    for piece in template.root_render_func(ctx):
        size += len(piece)
        if size > MAX_CHARS:
            raise TemplateRefusedError(f"the template renders more than {MAX_CHARS} characters")
        pieces.append(piece)
    return "".join(pieces)
