"""``lf.inspect``: the exact prompts a program sends."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from .adapters.base import Prompt
from .errors import UsageError
from .lm.lm import LM
from .module import Module
from .trace import LMCall

__all__ = ["inspect"]


def _render_call(call: LMCall) -> str:
    request = call.request
    prompt = Prompt(messages=request.messages, text=request.prompt)
    body = prompt.render()
    answer = call.output if call.output is not None else f"<error: {call.error}>"
    return f"{body}\n\n[answer]\n{answer}"


def inspect(
    program: Module,
    *,
    n: int | None = None,
    inputs: Mapping[str, Any] | None = None,
    lm: LM | None = None,
    file: TextIO | None = None,
    show: bool = True,
) -> list[str]:
    """Return (and print) the prompts ``program`` sent, oldest first, across all its
    predictors (so a multi-step program shows every step in order).

    With no calls made yet, each predictor's prompt template is rendered instead, with
    ``inputs`` if given or ``{field}`` placeholders.
    """
    named = program.named_predictors()
    calls = sorted(
        ((name, call) for name, p in named for call in p.history), key=lambda nc: nc[1].seq
    )
    texts: list[str]
    if calls:
        if n is not None:
            calls = calls[-n:]
        texts = [f"=== {name} ({call.model}) ===\n{_render_call(call)}" for name, call in calls]
    else:
        known = {f.name for _, p in named for f in p.signature.input_fields}
        unknown = sorted(set(inputs or {}) - known)
        if unknown:
            raise UsageError(
                f"unknown input(s) {unknown} to render with; the program's inputs are "
                f"{sorted(known)}"
            )
        texts = []
        for name, predictor in named:
            values = dict(inputs or {})
            for field in predictor.signature.input_fields:
                values.setdefault(field.name, "{" + field.name + "}")
            model = lm or predictor.lm
            from . import settings

            model = model or settings.current().lm or LM("placeholder/chat", cache=False)
            prompt = predictor.format(values, lm=model)
            texts.append(
                f"=== {name} (not called yet; rendered for {model.model}) ===\n{prompt.render()}"
            )
    if show:
        out = file or sys.stdout
        for text in texts:
            out.write(text + "\n\n")
    return texts
