"""CompletionAdapter: plain ``Label: value`` completion prompts for base models.

Base models have no chat template; they continue text. The prompt is instructions, then
one block per demo, then the inputs and the first output label; the model completes the
values. Decoding can be constrained (``OutputConstraint``) so the answer always parses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..constraints import unwrap_annotated
from ..errors import ParseError
from ..fieldtypes import choice_labels, is_enum_like, schema_of
from ..lm.types import ConstraintSegment, OutputConstraint
from ..signature import Field, Signature
from .base import Adapter, Prompt, PromptPrefix, field_info, missing_output
from .coerce import coerce, render_value
from .markers import one_line_value
from .turns import Layout, history_turns, layout_of, refuse_images

__all__ = ["CompletionAdapter"]

_PLAIN_TYPES = (int, float, bool)


class CompletionAdapter(Adapter):
    """Few-shot ``Label: value`` blocks for text-completion (base) models."""

    name = "completion"
    template_names = {"prefix": "completion_prefix.jinja", "example": "completion_example.jinja"}

    def format_prefix(
        self, signature: Signature, demos: Sequence[Mapping[str, Any]]
    ) -> PromptPrefix:
        layout = self.cached(("layout", signature), lambda: layout_of(signature))
        refuse_images(layout, "completion")
        head = self.render(
            "prefix",
            instructions=signature.instructions,
            inputs=[field_info(f) for f in layout.fields],
            outputs=[field_info(f) for f in signature.output_fields],
        )
        blocks = [head]
        for demo in demos:
            if not all(f.name in demo for f in signature.output_fields):
                continue
            blocks.extend(self._blocks(signature, layout, history_turns(layout, demo)))
            blocks.append(self._block(signature, layout, demo))
        return PromptPrefix(text="\n\n".join(blocks) + "\n\n", layout=layout)

    def format_inputs(
        self, signature: Signature, prefix: PromptPrefix, inputs: Mapping[str, Any]
    ) -> Prompt:
        layout = prefix.layout or self.cached(("layout", signature), lambda: layout_of(signature))
        pairs = [(f.label, one_line_value(render_value(inputs[f.name]))) for f in layout.fields]
        block = self.render_fields("example", signature, pairs, dict)
        if not layout.plain:  # prior turns: earlier blocks, after the demos
            refuse_images(layout, "completion")
            turns = self._blocks(signature, layout, history_turns(layout, inputs))
            block = "".join(f"{turn}\n\n" for turn in turns) + block
        first = signature.output_fields[0]
        text = f"{prefix.text}{block}\n{first.label}:"
        stops = ["\n\n", *(f"\n{f.label}:" for f in layout.fields)]
        constraint = self.cached(("constraint", signature), lambda: self.constraint(signature))
        return Prompt(text=text, constraint=constraint, stop=tuple(stops))

    def _blocks(
        self, signature: Signature, layout: Layout, turns: Sequence[Mapping[str, Any]]
    ) -> list[str]:
        return [self._block(signature, layout, turn) for turn in turns]

    def _block(self, signature: Signature, layout: Layout, values: Mapping[str, Any]) -> str:
        """One ``Label: value`` block of the fields ``values`` has (a demo or a turn)."""
        fields = (*layout.fields, *signature.output_fields)
        pairs = [
            (f.label, one_line_value(render_value(values[f.name])))
            for f in fields
            if f.name in values
        ]
        return self.render("example", fields=pairs)

    def constraint(self, signature: Signature) -> OutputConstraint:
        """The shape of a valid completion: `` value1\\nLabel2: value2 ...``."""
        segments: list[ConstraintSegment] = []
        for i, field in enumerate(signature.output_fields):
            segments.append(ConstraintSegment(text=" " if i == 0 else f"\n{field.label}: "))
            segments.append(_value_segment(field))
        return OutputConstraint(tuple(segments))

    def format_reply(self, signature: Signature, outputs: Mapping[str, Any]) -> str:
        """What follows the prompt's first output label: `` value1\nLabel2: value2 ...``."""
        lines = [
            f"{f.label}: {one_line_value(render_value(outputs[f.name]))}"
            for f in signature.output_fields
            if f.name in outputs
        ]
        first = f"{signature.output_fields[0].label}:"
        text = "\n".join(lines)
        return text[len(first) :] if text.startswith(first) else text

    def parse(self, signature: Signature, text: str) -> dict[str, Any]:
        if not text or not text.strip():
            raise ParseError("the LM returned an empty answer", raw=text or "")
        outputs = signature.output_fields
        full = f"{outputs[0].label}:{text}"
        labels = {f.label.lower(): f for f in outputs}
        pattern = re.compile(
            r"^(" + "|".join(re.escape(f.label) for f in outputs) + r"):", re.I | re.M
        )
        sections: dict[str, str] = {}
        matches = list(pattern.finditer(full))
        for i, match in enumerate(matches):
            field = labels[match.group(1).lower()]
            end = matches[i + 1].start() if i + 1 < len(matches) else len(full)
            if field.name not in sections:
                sections[field.name] = full[match.end() : end]
        result: dict[str, Any] = {}
        for field in outputs:
            if field.name not in sections:
                message = f"the answer has no '{field.label}:' line"
                result[field.name] = missing_output(field, message, text)
                continue
            value = sections[field.name]
            base = unwrap_annotated(field.annotation)
            if base is str or is_enum_like(base) or base in _PLAIN_TYPES:
                value = value.strip().split("\n", 1)[0]
            result[field.name] = coerce(field, value, text)
        return result


def _value_segment(field: Field) -> ConstraintSegment:
    choices = choice_labels(field.annotation)
    if choices is not None:
        return ConstraintSegment(choices=choices, field=field.name)
    if unwrap_annotated(field.annotation) is str:  # constraints are checked when parsing
        return ConstraintSegment(field=field.name)  # free text on one line
    return ConstraintSegment(schema=schema_of(field.annotation), field=field.name)
