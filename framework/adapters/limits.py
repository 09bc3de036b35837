"""Size checks for the template sandbox (:mod:`.sandbox`): each runs *before* the
operation it guards, so a template cannot build a huge value even once."""

from __future__ import annotations

import functools
import inspect
import itertools
import re
import string
from collections.abc import Callable, Mapping
from typing import Any

from jinja2.sandbox import SecurityError

__all__ = [
    "CONTAINERS",
    "MAX_CHARS",
    "TemplateRefusedError",
    "check_format_spec",
    "check_power",
    "check_printf",
    "check_repeat",
    "check_size",
    "guard_str_method",
    "guarded_filters",
    "is_sized",
    "size_of",
]

MAX_CHARS = 10_000_000  # largest value a template may build (characters + items), and output
MAX_INT_BITS = 14_000  # largest integer a template may build (str() allows ~4300 digits)
MAX_WIDTH = 10_000  # largest width/precision in a format spec


class TemplateRefusedError(SecurityError):
    """A template does something user templates may not (too much work, loading files)."""


def check_size(size: int, what: str) -> None:
    """Refuse ``what`` when the value it would build has ``size`` over ``MAX_CHARS``."""
    if size > MAX_CHARS:
        raise TemplateRefusedError(
            f"{what} would build {size} characters or items (at most {MAX_CHARS}); "
            "use smaller numbers"
        )


def check_width(value: Any, what: str) -> None:
    """Refuse a format width, precision or indent over ``MAX_WIDTH``."""
    if isinstance(value, int) and value > MAX_WIDTH:
        raise TemplateRefusedError(f"{what} {value} is too large (at most {MAX_WIDTH})")


CONTAINERS = (list, tuple, dict, set, frozenset)


def is_sized(value: Any) -> bool:
    """Whether ``*`` and ``+`` on ``value`` repeat or join sequences."""
    return isinstance(value, str | bytes | list | tuple)


def size_of(value: Any) -> int:
    """Characters and items of ``value`` as ``str()`` or ``==`` sees them: a part that
    appears twice counts twice (``[x, x]`` is twice ``x``). Refuses over ``MAX_CHARS``."""
    if isinstance(value, str | bytes):
        return len(value)
    if not isinstance(value, CONTAINERS):
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
        elif isinstance(part, CONTAINERS):
            total += _container_size(part, seen)
        else:
            total += 1
        if total > MAX_CHARS:
            raise TemplateRefusedError(
                f"the template builds a value of over {MAX_CHARS} characters and items"
            )
    seen[id(value)] = (value, total)
    return total


def check_repeat(left: Any, right: Any) -> None:
    """Check ``left * right``."""
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateRefusedError(f"'*' would build an integer over {MAX_INT_BITS} bits")
    elif is_sized(left) and isinstance(right, int):
        check_size(size_of(left) * right, "'*'")
    elif isinstance(left, int) and is_sized(right):
        check_size(left * size_of(right), "'*'")


def check_power(base: Any, exponent: Any) -> None:
    """Check ``base ** exponent``."""
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and base.bit_length() * exponent > MAX_INT_BITS
    ):
        raise TemplateRefusedError(f"'**' would build an integer over {MAX_INT_BITS} bits")


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_printf(template: str | bytes) -> None:
    """Widths and precisions of a ``%`` format: bounded, and never taken from arguments."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    for match in _PRINTF.finditer(text):
        for group in match.groups():
            if group == "*":
                raise TemplateRefusedError("'%' formats with a '*' width are not allowed")
            if group:
                check_width(int(group), "a '%' format width")


def check_format_spec(template: str) -> None:
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
            check_width(int(number), "a format width")


# -- str methods and filters that can build big values from small arguments -------------


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    text, old, new = str(text), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _joined_size(separator: Any, items: list[Any]) -> int:
    sizes = sum(len(i) for i in items if is_sized(i))
    return sizes + len(str(separator)) * max(len(items) - 1, 0)


def guard_str_method(
    owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, ...]:
    """Check a str/bytes method call; returns the arguments to call it with."""
    if name in ("center", "ljust", "rjust", "zfill") and args:
        check_size(args[0] if isinstance(args[0], int) else 0, f"{name}()")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        tab = tab if isinstance(tab, int) else 0
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        check_size(len(owner) + tabs * tab, "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        check_size(_replaced_size(owner, args[0], args[1], count), "replace()")
    elif name == "join" and args:
        items = list(args[0])
        check_size(_joined_size(owner, items), "join()")
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if is_sized(v)), default=1)
        check_size(len(owner) * longest, "translate()")
    return args


def _filter_checks() -> dict[str, Callable[[dict[str, Any]], None]]:
    def center(a: dict[str, Any]) -> None:
        check_size(a["width"] if isinstance(a["width"], int) else 0, "center")

    def indent(a: dict[str, Any]) -> None:
        width = a["width"]
        step = width if isinstance(width, int) else len(str(width))
        check_size((str(a["s"]).count("\n") + 1) * step + len(str(a["s"])), "indent")

    def wordwrap(a: dict[str, Any]) -> None:
        text, width = str(a["s"]), a["width"]
        breaks = len(text) // width + 1 if isinstance(width, int) and width > 0 else len(text)
        check_size(len(text) + breaks * len(str(a["wrapstring"] or "\n")), "wordwrap")

    def replace(a: dict[str, Any]) -> None:
        check_size(_replaced_size(a["s"], a["old"], a["new"], a["count"]), "replace")

    def join(a: dict[str, Any]) -> None:
        a["value"] = items = list(a["value"])
        if a["attribute"] is None:
            check_size(_joined_size(a["d"], items), "join")
        else:
            check_size(len(str(a["d"])) * len(items), "join")

    def printf(a: dict[str, Any]) -> None:
        check_printf(str(a["value"]))

    def tojson(a: dict[str, Any]) -> None:
        check_width(a["indent"], "a tojson indent")

    def batch(a: dict[str, Any]) -> None:
        count = a["linecount"] if isinstance(a["linecount"], int) else 0
        check_size(count * size_of(a["fill_with"]), "batch")

    def slices(a: dict[str, Any]) -> None:
        count = a["slices"] if isinstance(a["slices"], int) else 0
        check_size(count * size_of(a["fill_with"]), "slice")

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


def guarded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Any]:
    """Replacements for those of ``filters`` that can build big values from small arguments."""
    return {name: _guarded_filter(filters[name], check) for name, check in _filter_checks().items()}
