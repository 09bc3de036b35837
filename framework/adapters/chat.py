"""ChatAdapter: field markers (``[[ ## name ## ]]``) in chat messages, for chat models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ParseError
from ..signature import Signature
from .base import Adapter, Prompt, PromptPrefix, demo_values, field_info
from .coerce import coerce, render_value
from .markers import MARKER, marked_value

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
        outputs = [field_info(f) for f in signature.output_fields]
        system = self.render(
            "system",
            instructions=signature.instructions,
            inputs=[field_info(f) for f in signature.input_fields],
            outputs=outputs,
        )
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        for demo in demos:
            ins = demo_values(signature, demo, "input")
            outs = demo_values(signature, demo, "output")
            if not outs:
                continue
            user = self.render(
                "user", fields=[(f.name, v) for f, v in ins], outputs=outputs, reminder=False
            )
            assistant = self.render("assistant", fields=[(f.name, v) for f, v in outs])
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": assistant})
        return PromptPrefix(messages=tuple(messages))

    def format_inputs(
        self, signature: Signature, prefix: PromptPrefix, inputs: Mapping[str, Any]
    ) -> Prompt:
        user = self.render_fields(
            "user",
            signature,
            [(f.name, marked_value(render_value(inputs[f.name]))) for f in signature.input_fields],
            lambda: {"outputs": [field_info(f) for f in signature.output_fields], "reminder": True},
        )
        return Prompt(messages=(*prefix.messages, {"role": "user", "content": user}))

    def format_reply(self, signature: Signature, outputs: Mapping[str, Any]) -> str:
        """``[[ ## field ## ]]`` sections, as a demo's answer is rendered."""
        fields = [
            (f.name, marked_value(render_value(outputs[f.name])))
            for f in signature.output_fields
            if f.name in outputs
        ]
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
                raise ParseError(
                    f"the answer has no '[[ ## {field.name} ## ]]' section",
                    raw=text,
                    field=field.name,
                )
            result[field.name] = coerce(field, sections[field.name], text)
        return result
