"""A jinja2 sandbox for user template overrides that also bounds the work a template does.

jinja2's sandbox stops a template from reaching Python internals but not from exhausting
memory or time (``{{ 'a' * 2000000000 }}``, ``{{ 9 ** (9 ** 9) }}``, nested loops). Here
every value a template builds by repetition is size-checked *before* it is built, loops,
calls and operators spend from a per-render budget, and the rendered text is capped.
Templates cannot load other templates (no loader is configured, by design).

This module imports jinja2 at import time; :mod:`.base` imports it only on first use.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import jinja2
from jinja2 import nodes, pass_context
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

__all__ = ["BoundedEnvironment", "TemplateRefusedError", "compile_template", "render"]

MAX_CHARS = 10_000_000  # largest value a template may build (characters + items), and output
MAX_WRITTEN = 4 * MAX_CHARS  # all text of one render's {{ }} expressions, macros' included
MAX_INT_BITS = 14_000  # largest integer a template may build (str() allows ~4300 digits)
MAX_WIDTH = 10_000  # largest width/precision in a format spec
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


class TemplateRefusedError(SecurityError):
    """A template does something user templates may not (too much work, loading files)."""


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


# -- size checks: each runs before the operation it guards ------------------------------


def _check_size(size: int, what: str) -> None:
    if size > MAX_CHARS:
        raise TemplateRefusedError(
            f"{what} would build {size} characters or items (at most {MAX_CHARS}); "
            "use smaller numbers"
        )


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and value > MAX_WIDTH:
        raise TemplateRefusedError(f"{what} {value} is too large (at most {MAX_WIDTH})")


_CONTAINERS = (list, tuple, dict, set, frozenset)


def _is_sized(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _size(value: Any) -> int:
    """Characters and items of ``value`` as ``str()`` or ``==`` sees them: a part that
    appears twice counts twice (``[x, x]`` is twice ``x``). Refuses over ``MAX_CHARS``."""
    if isinstance(value, str | bytes):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return 1
    return _container_size(value, {})


def _container_size(value: Any, seen: dict[int, tuple[Any, int]]) -> int:
    # Shared parts are measured once (``seen``), so measuring costs its distinct parts.
    hit = seen.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    total = 1
    for part in itertools.chain.from_iterable(value.items()) if isinstance(value, dict) else value:
        if isinstance(part, str | bytes):
            total += len(part)
        elif isinstance(part, _CONTAINERS):
            total += _container_size(part, seen)
        else:
            total += 1
        if total > MAX_CHARS:
            raise TemplateRefusedError(
                f"the template builds a value of over {MAX_CHARS} characters and items"
            )
    seen[id(value)] = (value, total)
    return total


def _check_repeat(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateRefusedError(f"'*' would build an integer over {MAX_INT_BITS} bits")
    elif _is_sized(left) and isinstance(right, int):
        _check_size(_size(left) * right, "'*'")
    elif isinstance(left, int) and _is_sized(right):
        _check_size(left * _size(right), "'*'")


def _check_power(base: Any, exponent: Any) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and base.bit_length() * exponent > MAX_INT_BITS
    ):
        raise TemplateRefusedError(f"'**' would build an integer over {MAX_INT_BITS} bits")


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template: str | bytes) -> None:
    """Widths and precisions of a ``%`` format: bounded, and never taken from arguments."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    for match in _PRINTF.finditer(text):
        for group in match.groups():
            if group == "*":
                raise TemplateRefusedError("'%' formats with a '*' width are not allowed")
            if group:
                _check_width(int(group), "a '%' format width")


def _check_format_spec(template: str) -> None:
    """Widths of a ``str.format`` string: bounded, and never nested ``{}`` fields."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return  # format() itself reports the malformed string
    for _, _, spec, _ in parts:
        if not spec:
            continue
        if "{" in spec:
            raise TemplateRefusedError("format specs with nested '{}' fields are not allowed")
        for number in re.findall(r"\d+", spec):
            _check_width(int(number), "a format width")


# -- str methods and filters that can build big values from small arguments -------------


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    text, old, new = str(text), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _joined_size(separator: Any, items: list[Any]) -> int:
    sizes = sum(len(i) for i in items if _is_sized(i))
    return sizes + len(str(separator)) * max(len(items) - 1, 0)


def _guard_str_method(
    owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, ...]:
    """Check a str/bytes method call; returns the arguments to call it with."""
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _check_size(args[0] if isinstance(args[0], int) else 0, f"{name}()")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        tab = tab if isinstance(tab, int) else 0
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        _check_size(len(owner) + tabs * tab, "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _check_size(_replaced_size(owner, args[0], args[1], count), "replace()")
    elif name == "join" and args:
        items = list(args[0])
        _check_size(_joined_size(owner, items), "join()")
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if _is_sized(v)), default=1)
        _check_size(len(owner) * longest, "translate()")
    return args


def _filter_checks() -> dict[str, Callable[[dict[str, Any]], None]]:
    def center(a: dict[str, Any]) -> None:
        _check_size(a["width"] if isinstance(a["width"], int) else 0, "center")

    def indent(a: dict[str, Any]) -> None:
        width = a["width"]
        step = width if isinstance(width, int) else len(str(width))
        _check_size((str(a["s"]).count("\n") + 1) * step + len(str(a["s"])), "indent")

    def wordwrap(a: dict[str, Any]) -> None:
        text, width = str(a["s"]), a["width"]
        breaks = len(text) // width + 1 if isinstance(width, int) and width > 0 else len(text)
        _check_size(len(text) + breaks * len(str(a["wrapstring"] or "\n")), "wordwrap")

    def replace(a: dict[str, Any]) -> None:
        _check_size(_replaced_size(a["s"], a["old"], a["new"], a["count"]), "replace")

    def join(a: dict[str, Any]) -> None:
        a["value"] = items = list(a["value"])
        if a["attribute"] is None:
            _check_size(_joined_size(a["d"], items), "join")
        else:
            _check_size(len(str(a["d"])) * len(items), "join")

    def printf(a: dict[str, Any]) -> None:
        _check_printf(str(a["value"]))

    def tojson(a: dict[str, Any]) -> None:
        _check_width(a["indent"], "a tojson indent")

    def batch(a: dict[str, Any]) -> None:
        count = a["linecount"] if isinstance(a["linecount"], int) else 0
        _check_size(count * _size(a["fill_with"]), "batch")

    def slices(a: dict[str, Any]) -> None:
        count = a["slices"] if isinstance(a["slices"], int) else 0
        _check_size(count * _size(a["fill_with"]), "slice")

    def total(a: dict[str, Any]) -> None:
        # Adding lists is quadratic; numbers are what templates sum.
        if not isinstance(a["start"], int | float):
            raise TemplateRefusedError("the sum filter adds numbers only")

    return {
        "center": center,
        "indent": indent,
        "wordwrap": wordwrap,
        "replace": replace,
        "join": join,
        "format": printf,
        "tojson": tojson,
        "batch": batch,
        "slice": slices,
        "sum": total,
    }


def _guarded_filter(func: Callable[..., Any], check: Callable[[dict[str, Any]], None]) -> Any:
    signature = inspect.signature(func)

    @functools.wraps(func)  # keeps jinja's pass_context/pass_environment marker
    def guarded(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        check(bound.arguments)
        return func(*bound.args, **bound.kwargs)

    return guarded


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
        for name, check in _filter_checks().items():
            self.filters[name] = _guarded_filter(self.filters[name], check)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget(context)
        if budget is not None:
            budget.spend()
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            if _is_sized(left) and _is_sized(right):
                _check_size(_size(left) + _size(right), "'+'")
        elif operator == "%" and isinstance(left, str | bytes):
            _check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget(context)
        if budget is not None:
            budget.spend()
        if isinstance(obj, LoopContext) and args:  # a recursive loop's next level
            args = (_counted(budget, args[0]), *args[1:])
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes):
            args = _guard_str_method(owner, getattr(obj, "__name__", ""), args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, _CONTAINERS):
            _size(result)  # refuses one built over the limit, e.g. dict(a=x, b=x) nested
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        template = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format_spec(template)
            return wrapper(*args, **kwargs)

        return checked

    def lmforge_iter(self, context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
        """What a ``{% for %}`` loop iterates: ``iterable``, each step spent from the budget."""
        return _counted(_budget(context), iterable)

    def lmforge_literal(self, context: Context, value: Any) -> Any:
        """A list, tuple or dict literal, size-checked: ``[x, x]`` in a loop doubles."""
        if isinstance(value, _CONTAINERS):
            _size(value)
        return value

    def lmforge_concat(self, context: Context, *parts: Any) -> str:
        """The ``~`` operator, size-checked before joining."""
        texts = [str(part) for part in parts]
        _check_size(sum(map(len, texts)), "'~'")
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
