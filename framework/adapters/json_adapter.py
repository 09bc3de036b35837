"""JSONAdapter: asks for one JSON object, sending the provider's structured-output
``response_format`` built from the output fields' JSON schemas; validated by pydantic."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ParseError
from ..fieldtypes import schema_of
from ..signature import Signature
from .base import Adapter, Prompt, PromptPrefix, field_info, missing_output
from .coerce import coerce, render_value
from .markers import json_value, marked_value
from .turns import Images, Layout, field_values, history_turns, layout_of

if TYPE_CHECKING:
    from ..lm.lm import LM
    from ..lm.types import LMRequest, LMResponse

__all__ = ["JSONAdapter", "output_schema"]


def output_schema(signature: Signature) -> dict[str, Any]:
    """One JSON schema object for all output fields, with ``$defs`` hoisted to the top."""
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    required: list[str] = []
    for field in signature.output_fields:
        schema = dict(schema_of(field.annotation))
        defs.update(schema.pop("$defs", {}))
        if field.description:
            schema.setdefault("description", field.description)
        properties[field.name] = schema
        if not field.has_default:  # an Optional one stays required but may be null
            required.append(field.name)
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if defs:
        result["$defs"] = defs
    return result


class JSONAdapter(Adapter):
    """Structured output: ``mode="json_schema"`` (default) or ``"json_object"``.

    The LM's profile can lower the mode (``structured_output``: ``json_object`` or
    ``none``, where the prompt alone asks for JSON); a provider that refuses the
    response_format lowers it for that LM from then on (see :mod:`.structured`).
    """

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
        layout = self.cached(("layout", signature), lambda: layout_of(signature))
        system = self.render(
            "system",
            instructions=signature.instructions,
            inputs=[field_info(f) for f in layout.fields],
            outputs=[field_info(f) for f in signature.output_fields],
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
        images = Images() if layout.images else None
        if layout.plain:
            fields = [
                (f.name, marked_value(render_value(inputs[f.name]))) for f in signature.input_fields
            ]
        else:
            fields = [(f.name, v) for f, v in field_values(layout, inputs, images)]
        user = self.render_fields("user", signature, fields, dict)
        response_format = self.cached(
            ("response_format", self.mode, signature), lambda: self.response_format(signature)
        )
        turns = self._turns(signature, layout, history_turns(layout, inputs))
        content = images.content(user) if images is not None else user
        return Prompt(
            messages=(*prefix.messages, *turns, {"role": "user", "content": content}),
            response_format=response_format,
        )

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
        ``values`` has, the assistant message with its output fields as one JSON object."""
        images = Images() if layout.images else None
        ins = [(f.name, v) for f, v in field_values(layout, values, images)]
        outs = {f.name: values[f.name] for f in signature.output_fields if f.name in values}
        messages: list[dict[str, Any]] = []
        if ins or user_always:
            user = self.render("user", fields=ins)
            content = images.content(user) if images is not None else user
            messages.append({"role": "user", "content": content})
        if outs:
            messages.append({"role": "assistant", "content": json_value(render_value(outs))})
        return messages

    def format_reply(self, signature: Signature, outputs: Mapping[str, Any]) -> str:
        """One JSON object of the output fields."""
        names = [f.name for f in signature.output_fields if f.name in outputs]
        return render_value({name: outputs[name] for name in names})

    def parse(self, signature: Signature, text: str) -> dict[str, Any]:
        if not text or not text.strip():
            raise ParseError("the LM returned an empty answer", raw=text or "")
        from .lenient_json import loads_lenient  # loaded with the first JSON answer

        data = loads_lenient(text)
        if not isinstance(data, dict):
            raise ParseError("the answer is not a JSON object", raw=text)
        result: dict[str, Any] = {}
        for field in signature.output_fields:
            if field.name not in data:
                message = f"the JSON answer has no key '{field.name}'"
                result[field.name] = missing_output(field, message, text)
                continue
            value = data[field.name]
            text_value = value if isinstance(value, str) else json.dumps(value)
            result[field.name] = coerce(field, text_value, text)
        return result

    async def complete_core(self, lm: LM, request: LMRequest, *, blocking: bool) -> LMResponse:
        from . import structured

        return await structured.complete_core(lm, request, blocking=blocking)

    def config(self) -> dict[str, Any]:
        data = super().config()
        if self.mode != "json_schema":
            data["mode"] = self.mode
        return data


def _schema_name(signature: Signature) -> str:
    name = "".join(ch for ch in signature.name if ch.isalnum() or ch in "_-")
    return (name or "Output")[:64]
