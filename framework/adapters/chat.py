"""ChatAdapter: field markers (``[[ ## name ## ]]``) in chat messages, for chat models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ParseError
from ..signature import Signature
from .base import Adapter, Prompt, PromptPrefix, field_info, missing_output
from .coerce import coerce, render_value
from .markers import MARKER, marked_value
from .turns import Images, Layout, field_values, history_turns, layout_of, output_pairs

__all__ = ["ChatAdapter"]


class ChatAdapter(Adapter):
    """System message with instructions and field schema, demos as user/assistant turns,
    then the inputs; outputs are read back from ``[[ ## field ## ]]`` sections."""

    name = "chat"
    template_names = {
        "system": "chat_system.jinja",
        "user": "chat_user.jinja",
        "assistant": "chat_assistant.jinja",
    }

    def format_prefix(
        self, signature: Signature, demos: Sequence[Mapping[str, Any]]
    ) -> PromptPrefix:
        layout = self.cached(("layout", signature), lambda: layout_of(signature))
        outputs = [field_info(f) for f in signature.output_fields]
        system = self.render(
            "system",
            instructions=signature.instructions,
            inputs=[field_info(f) for f in layout.fields],
            outputs=outputs,
        )
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        for demo in demos:
            if not any(f.name in demo for f in signature.output_fields):
                continue
            messages.extend(self._turns(signature, layout, history_turns(layout, demo)))
            messages.extend(self._turn(signature, layout, demo, user_always=True))
        return PromptPrefix(messages=tuple(messages), layout=layout)

    def format_inputs(
        self, signature: Signature, prefix: PromptPrefix, inputs: Mapping[str, Any]
    ) -> Prompt:
        layout = prefix.layout or self.cached(("layout", signature), lambda: layout_of(signature))
        if not layout.plain:
            return self._format_turns(signature, layout, prefix, inputs)
        user = self.render_fields(
            "user",
            signature,
            [(f.name, marked_value(render_value(inputs[f.name]))) for f in signature.input_fields],
            lambda: {"outputs": [field_info(f) for f in signature.output_fields], "reminder": True},
        )
        return Prompt(messages=(*prefix.messages, {"role": "user", "content": user}))

    def _format_turns(
        self, signature: Signature, layout: Layout, prefix: PromptPrefix, inputs: Mapping[str, Any]
    ) -> Prompt:
        """The prompt of a signature with a history or image field: prior turns after the
        demos, then the inputs, images as content parts."""
        images = Images() if layout.images else None
        fields = [(f.name, v) for f, v in field_values(layout, inputs, images)]
        user = self.render_fields(
            "user",
            signature,
            fields,
            lambda: {"outputs": [field_info(f) for f in signature.output_fields], "reminder": True},
        )
        content = images.content(user) if images is not None else user
        turns = self._turns(signature, layout, history_turns(layout, inputs))
        return Prompt(messages=(*prefix.messages, *turns, {"role": "user", "content": content}))

    def _turns(
        self, signature: Signature, layout: Layout, turns: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        return [m for turn in turns for m in self._turn(signature, layout, turn)]

    def _turn(
        self,
        signature: Signature,
        layout: Layout,
        values: Mapping[str, Any],
        *,
        user_always: bool = False,
    ) -> list[dict[str, Any]]:
        """One exchange (a demo or a prior turn): the user message with the input fields
        ``values`` has, the assistant message with its output fields."""
        images = Images() if layout.images else None
        ins = [(f.name, v) for f, v in field_values(layout, values, images)]
        outs = [(f.name, v) for f, v in output_pairs(signature, values)]
        messages: list[dict[str, Any]] = []
        if ins or user_always:
            outputs = [field_info(f) for f in signature.output_fields]
            user = self.render("user", fields=ins, outputs=outputs, reminder=False)
            content = images.content(user) if images is not None else user
            messages.append({"role": "user", "content": content})
        if outs:
            messages.append({"role": "assistant", "content": self.render("assistant", fields=outs)})
        return messages

    def format_reply(self, signature: Signature, outputs: Mapping[str, Any]) -> str:
        """``[[ ## field ## ]]`` sections, as a demo's answer is rendered."""
        fields = [(f.name, v) for f, v in output_pairs(signature, outputs)]
        return self.render("assistant", fields=fields)

    def parse(self, signature: Signature, text: str) -> dict[str, Any]:
        if not text or not text.strip():
            raise ParseError("the LM returned an empty answer", raw=text or "")
        sections: dict[str, str] = {}
        matches = list(MARKER.finditer(text))
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            name = match.group(1)
            if name not in sections:
                sections[name] = text[match.end() : end].strip()
        outputs = signature.output_fields
        if not matches and len(outputs) == 1:
            sections[outputs[0].name] = text.strip()  # a bare answer to a one-field signature
        result: dict[str, Any] = {}
        for field in outputs:
            if field.name not in sections:
                message = f"the answer has no '[[ ## {field.name} ## ]]' section"
                result[field.name] = missing_output(field, message, text)
                continue
            result[field.name] = coerce(field, sections[field.name], text)
        return result
