"""The public face of a served program: its signature and the pydantic models built from it.

A program's *signature* is what callers of the server see:

1. a ``Signature`` the module declares itself (a ``signature`` attribute, as ``Predict``
   and composed modules such as chains have), else
2. the signature of its only predictor, else
3. for several predictors, the inputs of the first and the outputs of the last (in
   ``named_predictors()`` order, which follows attribute order), with the first one's
   instructions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import pydantic
from lmforge import Module, Prediction, Signature
from lmforge.adapters.coerce import _json_default, render_value
from lmforge.errors import ParseError, UsageError
from lmforge.fieldtypes import is_enum_like

__all__ = [
    "ProgramModels",
    "build_models",
    "output_text",
    "program_name",
    "program_signature",
    "required_extras",
    "response_payload",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def program_signature(module: Module) -> Signature:
    """The signature a server exposes for ``module`` (see the module docstring for the rule)."""
    declared = getattr(module, "signature", None)
    if isinstance(declared, Signature):
        return declared
    predictors = module.named_predictors()
    if not predictors:
        raise UsageError(
            f"{type(module).__name__} has no predictors and declares no signature; "
            "give it a `signature` attribute (an lf.Signature) to serve it"
        )
    first, last = predictors[0][1].signature, predictors[-1][1].signature
    if len(predictors) == 1:
        return first
    return Signature(
        (*first.input_fields, *last.output_fields),
        instructions=first.instructions,
        name=type(module).__name__,
    )


def required_extras(program: Module) -> list[str]:
    """The lmforge extras the program server needs: ``serve``, plus those named by the
    program's parts (a per-input demo selector such as ``KNNDemos``, a BM25 retriever:
    ``retrieval``) in an ``extras`` tuple."""
    found: set[str] = set()
    for _, module in program.named_modules():
        for value in vars(module).values():
            extras = getattr(value, "extras", None)
            if isinstance(extras, tuple):
                found.update(e for e in extras if isinstance(e, str) and e.isidentifier())
    return ["serve", *sorted(found - {"serve"})]


def program_name(name: str) -> str:
    """Validate a program name used in URLs (``/v1/programs/{name}``) and as a model id."""
    if not _NAME.match(name):
        raise UsageError(
            f"program name {name!r} is not URL-safe; use letters, digits, '_', '-' or '.' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return name


class ProgramModels:
    """Request/response pydantic models for one program (for validation and OpenAPI)."""

    def __init__(
        self, request: type[pydantic.BaseModel], response: type[pydantic.BaseModel]
    ) -> None:
        self.request = request
        self.response = response
        # The typed endpoint's body with answer metadata, or for a withheld answer.
        envelope: dict[str, Any] = {
            "answer": (
                response | None,
                pydantic.Field(None, description="The outputs; null when withheld."),
            ),
            "confidence": (
                float | None,
                pydantic.Field(None, ge=0, le=1, description="How likely the answer is right."),
            ),
            "light": (
                Literal["green", "yellow", "red"] | None,
                pydantic.Field(None, description="The answer's light from calibrated thresholds."),
            ),
            "withheld": (
                bool,
                pydantic.Field(False, description="The server holds back answers of this light."),
            ),
        }
        self.envelope = pydantic.create_model(
            f"{request.__name__[: -len('Request')]}Answer", **envelope
        )
        self.batch_request = pydantic.create_model(
            f"{request.__name__[: -len('Request')]}BatchRequest",
            __config__=pydantic.ConfigDict(extra="forbid"),
            items=(
                list[request],  # type: ignore[valid-type]
                pydantic.Field(..., min_length=1, description="Inputs, one object per call."),
            ),
        )


def _camel(name: str) -> str:
    return (
        "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)
        or "Program"
    )


def build_models(name: str, signature: Signature) -> ProgramModels:
    """Pydantic models whose fields are the signature's input and output fields."""
    base = _camel(name)
    inputs: dict[str, Any] = {
        f.name: (f.annotation, pydantic.Field(..., description=f.description or None))
        for f in signature.input_fields
    }
    outputs: dict[str, Any] = {
        f.name: (f.annotation, pydantic.Field(..., description=f.description or None))
        for f in signature.output_fields
    }
    request = pydantic.create_model(
        f"{base}Request",
        __config__=pydantic.ConfigDict(extra="forbid", title=f"{base}Request"),
        __doc__=signature.instructions,
        **inputs,
    )
    response = pydantic.create_model(
        f"{base}Response", __config__=pydantic.ConfigDict(title=f"{base}Response"), **outputs
    )
    return ProgramModels(request, response)


def response_payload(signature: Signature, prediction: Prediction) -> dict[str, Any]:
    """The declared output fields of ``prediction`` as JSON-safe values."""
    data: dict[str, Any] = {}
    for field in signature.output_fields:
        value = (
            prediction.get(field.name)
            if hasattr(prediction, "get")
            else getattr(prediction, field.name)
        )
        try:
            # Strict JSON: NaN/Infinity would make the response body unparseable by strict
            # clients (and the batch route already answered them as null).
            text = json.dumps(value, default=_json_default, allow_nan=False)
        except ValueError:
            raise ParseError(
                f"output field {field.name!r} is not a finite number ({value!r})",
                raw=repr(value),
                field=field.name,
            ) from None
        data[field.name] = json.loads(text)
    return data


def output_text(signature: Signature, payload: Mapping[str, Any]) -> str:
    """The answer as text: the value itself for one output field, a JSON object otherwise."""
    outputs = signature.output_fields
    if len(outputs) == 1:
        return render_value(payload[outputs[0].name])
    return json.dumps(dict(payload), ensure_ascii=False)


def categorical_outputs(signature: Signature) -> dict[str, list[str]]:
    """Output fields with a closed set of values (Literal/enum) and their labels."""
    found: dict[str, list[str]] = {}
    for field in signature.output_fields:
        choices = is_enum_like(field.annotation)
        if choices is not None:
            found[field.name] = [str(c) for c in choices]
    return found
