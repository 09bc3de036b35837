"""Field markers, and keeping values from forging them.

A value (an input, or a demo's input or output) is pasted into the prompt between the
adapter's own structure: ``[[ ## name ## ]]`` markers (ChatAdapter, JSONAdapter) or
``Label: value`` lines (CompletionAdapter). A value holding such a marker, or a line break
the adapter does not expect, could pass for structure; these functions neutralise that.
A value without either is returned as is (the same object), so normal prompts and the
cache keys built from them do not change.
"""

from __future__ import annotations

import re

__all__ = ["MARKER", "json_value", "marked_value", "one_line_value"]

# How the ChatAdapter reads a field marker back; neutralising uses the very same pattern,
# so nothing a value turns into can be read as a marker.
MARKER = re.compile(r"\[\[\s*##\s*(\w+)\s*##\s*\]\]")

# The line breaks of str.splitlines (but "\r\n", which one_line_value handles first).
_LINE_BREAKS = ("\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _defang(match: re.Match[str]) -> str:
    # "[ [" cannot start a marker, and the "[" before it (if any) is followed by a space.
    return "[ [" + match.group(0)[2:]


def marked_value(text: str) -> str:
    """``text`` for a prompt with ``[[ ## name ## ]]`` markers: markers inside it are
    broken up (``[ [ ## name ## ]]``), and ``\r``, ``\r\n``, U+2028 and U+2029 become
    ``\n`` (a plain line break, which values may hold)."""
    # Substring tests and str.replace (memchr-fast) before any regex: this is the hot path.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii() and ("\u2028" in text or "\u2029" in text):
        text = text.replace("\u2028", "\n").replace("\u2029", "\n")
    if "[[" in text:
        text = MARKER.sub(_defang, text)
    return text


def json_value(text: str) -> str:
    """JSON ``text`` for a prompt with markers: markers broken up as in
    :func:`marked_value`; U+2028/U+2029 written as JSON escapes (the same JSON value)."""
    if "[[" not in text and (text.isascii() or ("\u2028" not in text and "\u2029" not in text)):
        return text
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return MARKER.sub(_defang, text)


def one_line_value(text: str) -> str:
    """``text`` for a ``Label: value`` line: every line break (``\n``, ``\r``, U+2028,
    any that ``str.splitlines`` knows) becomes a space, so the value cannot start a line."""
    if (
        "\n" in text
        or "\r" in text
        or "\v" in text
        or "\f" in text
        or "\x1c" in text
        or "\x1d" in text
        or "\x1e" in text
        or (not text.isascii() and ("\x85" in text or "\u2028" in text or "\u2029" in text))
    ):
        text = text.replace("\r\n", " ")
        for brk in _LINE_BREAKS:
            text = text.replace(brk, " ")
    return text
