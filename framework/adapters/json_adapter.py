"""JSONAdapter: asks for one JSON object, sending the provider's structured-output
``response_format`` built from the output fields' JSON schemas; validated by pydantic."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..errors import ParseError
from ..fieldtypes import schema_of
from ..signature import Signature
from .base import Adapter, Prompt, PromptPrefix, demo_values, field_info
from .coerce import _first_json, _strip_fences, coerce, render_value
from .markers import json_value, marked_value

__all__ = ["JSONAdapter", "output_schema"]


def output_schema(signature: Signature) -> dict[str, Any]:
    """One JSON schema object for all output fields, with ``$defs`` hoisted to the top."""
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for field in signature.output_fields:
        schema = dict(schema_of(field.annotation))
        defs.update(schema.pop("$defs", {}))
        if field.description:
            schema.setdefault("description", field.description)
        properties[field.name] = schema
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if defs:
        result["$defs"] = defs
    return result


class JSONAdapter(Adapter):
    """Structured output: ``mode="json_schema"`` (default) or ``"json_object"``."""

    name = "json"
    template_names = {"system": "json_system.jinja", "user": "json_user.jinja"}

    def __init__(
        self,
        templates: Mapping[str, str] | None = None,
        *,
        mode: Literal["json_schema", "json_object"] = "json_schema",
    ) -> None:
        super().__init__(templates)
        self.mode = mode

    def response_format(self, signature: Signature) -> dict[str, Any]:
        if self.mode == "json_object":
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {
                "name": _schema_name(signature),
                "schema": output_schema(signature),
                "strict": False,
            },
        }

    def format_prefix(
        self, signature: Signature, demos: Sequence[Mapping[str, Any]]
    ) -> PromptPrefix:
        system = self.render(
            "system",
            instructions=signature.instructions,
            inputs=[field_info(f) for f in signature.input_fields],
            outputs=[field_info(f) for f in signature.output_fields],
        )
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        for demo in demos:
            outs = {f.name: demo[f.name] for f in signature.output_fields if f.name in demo}
            if not outs:
                continue
            ins = demo_values(signature, demo, "input")
            messages.append(
                {
                    "role": "user",
                    "content": self.render("user", fields=[(f.name, v) for f, v in ins]),
                }
            )
            messages.append({"role": "assistant", "content": json_value(render_value(outs))})
        return PromptPrefix(messages=tuple(messages))

    def format_inputs(
        self, signature: Signature, prefix: PromptPrefix, inputs: Mapping[str, Any]
    ) -> Prompt:
        fields = [
            (f.name, marked_value(render_value(inputs[f.name]))) for f in signature.input_fields
        ]
        user = self.render_fields("user", signature, fields, dict)
        response_format = self.cached(
            ("response_format", self.mode, signature), lambda: self.response_format(signature)
        )
        return Prompt(
            messages=(*prefix.messages, {"role": "user", "content": user}),
            response_format=response_format,
        )

    def format_reply(self, signature: Signature, outputs: Mapping[str, Any]) -> str:
        """One JSON object of the output fields."""
        names = [f.name for f in signature.output_fields if f.name in outputs]
        return render_value({name: outputs[name] for name in names})

    def parse(self, signature: Signature, text: str) -> dict[str, Any]:
        if not text or not text.strip():
            raise ParseError("the LM returned an empty answer", raw=text or "")
        body = _strip_fences(text.strip())
        try:
            data = json.loads(body)
        except ValueError:
            data = _first_json(body)
        if not isinstance(data, dict):
            raise ParseError("the answer is not a JSON object", raw=text)
        result: dict[str, Any] = {}
        for field in signature.output_fields:
            if field.name not in data:
                raise ParseError(
                    f"the JSON answer has no key '{field.name}'", raw=text, field=field.name
                )
            value = data[field.name]
            text_value = value if isinstance(value, str) else json.dumps(value)
            result[field.name] = coerce(field, text_value, text)
        return result

    def config(self) -> dict[str, Any]:
        data = super().config()
        if self.mode != "json_schema":
            data["mode"] = self.mode
        return data


def _schema_name(signature: Signature) -> str:
    name = "".join(ch for ch in signature.name if ch.isalnum() or ch in "_-")
    return (name or "Output")[:64]
