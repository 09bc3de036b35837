"""``Chain``: prompt chaining — ordered steps whose outputs feed later steps' inputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import lmforge as lf
from lmforge.data import as_field_names
from lmforge.signature import Field, as_signature

from ._spec import module_from_spec, module_spec

__all__ = ["Chain"]

StepLike: TypeAlias = "lf.Module | str | lf.Signature | type[lf.Signature]"


class Chain(lf.Module):
    """Run steps in order; each step's outputs are available to later steps by name.

    ``Chain("topic -> draft", "draft -> title")`` is a two-step program with input
    ``topic`` and output ``title``. A step is any module with a ``signature`` (``Predict``,
    ``ChainOfThought``, ``ReAct``, another ``Chain``, ...) or a signature, which becomes a
    ``Predict``.

    Where names differ, ``mapping`` renames per step: ``{step_index: {input_name:
    source_field}}``. ``mapping={1: {"text": "draft"}}`` fills step 1's input ``text`` from
    the field ``draft`` (a chain input or an earlier step's output). Steps are numbered
    from 0.

    The chain's inputs are the first step's inputs plus the names in ``inputs`` (external
    values later steps need). Its outputs are the last step's outputs, or the fields named
    in ``outputs`` (any step's outputs). Both take a list or, as signatures do, a
    comma-separated string (``inputs="context, tone"``). A step input that nothing
    provides is a :class:`lf.UsageError` at construction, naming the field and the step.
    """

    def __init__(
        self,
        *steps: StepLike,
        mapping: Mapping[int, Mapping[str, str]] | None = None,
        inputs: str | Sequence[str] = (),
        outputs: str | Sequence[str] | None = None,
        instructions: str = "",
    ) -> None:
        if not steps:
            raise lf.UsageError("Chain needs at least one step, e.g. Chain('text -> summary')")
        self.steps: list[lf.Module] = [_as_step(step, i) for i, step in enumerate(steps)]
        self.mapping: dict[int, dict[str, str]] = _check_mapping(mapping or {}, len(self.steps))
        # A string names fields as a signature does: "context" or "context, tone".
        self.extra_inputs: list[str] = as_field_names(inputs, "Chain(inputs=...)")
        self.chosen_outputs: list[str] | None = (
            as_field_names(outputs, "Chain(outputs=...)") if outputs is not None else None
        )
        self.signature = self._build_signature(instructions)

    # -- construction-time validation -----------------------------------------------------

    def _build_signature(self, instructions: str) -> lf.Signature:
        first_renames = self.mapping.get(0, {})
        known: dict[str, Field] = {}
        for field in _signature_of(self.steps[0]).input_fields:
            name = first_renames.get(field.name, field.name)
            if name not in known:
                known[name] = Field(
                    name, "input", field.annotation, field.description, field.prefix
                )
        input_fields = list(known.values())
        for name in self.extra_inputs:
            if name in known:
                continue
            field = self._declared_input(name)
            known[name] = field
            input_fields.append(field)
        produced: dict[str, Field] = {}
        for index, step in enumerate(self.steps):
            signature = _signature_of(step)
            renames = self.mapping.get(index, {})
            step_inputs = {f.name for f in signature.input_fields}
            for target in renames:
                if target not in step_inputs:
                    raise lf.UsageError(
                        f"mapping for step {index} ({_describe(step)}) renames {target!r}, "
                        f"which is not one of its inputs {sorted(step_inputs)}"
                    )
            for field in signature.input_fields:
                source = renames.get(field.name, field.name)
                if source not in known and source not in produced:
                    raise lf.UsageError(
                        _missing_message(index, step, field.name, source, known, produced)
                    )
            for field in signature.output_fields:
                produced[field.name] = field
        last_outputs = [f.name for f in _signature_of(self.steps[-1]).output_fields]
        wanted = self.chosen_outputs if self.chosen_outputs is not None else last_outputs
        if not wanted:
            raise lf.UsageError("Chain(outputs=[]) chooses no outputs; name at least one field")
        unknown = [name for name in wanted if name not in produced]
        if unknown:
            raise lf.UsageError(
                f"Chain outputs {unknown} are not produced by any step; "
                f"steps produce {sorted(produced)}"
            )
        output_fields = [_as_kind(produced[name], "output") for name in wanted]
        text = instructions or _default_instructions(self.steps)
        return lf.Signature([*input_fields, *output_fields], instructions=text, name="Chain")

    def _declared_input(self, name: str) -> Field:
        """The field (with its type) of the first step that takes ``name`` as an input."""
        for index, step in enumerate(self.steps):
            renames = self.mapping.get(index, {})
            for field in _signature_of(step).input_fields:
                if renames.get(field.name, field.name) == name:
                    return Field(name, "input", field.annotation, field.description, field.prefix)
        return Field(name, "input")

    # -- calling --------------------------------------------------------------------------

    def forward(self, **inputs: Any) -> lf.Prediction:
        values = self._check_inputs(inputs)
        for index, step in enumerate(self.steps):
            prediction = step(**self._step_inputs(index, step, values))
            self._collect(step, prediction, values)
        return self._result(values)

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        values = self._check_inputs(inputs)
        for index, step in enumerate(self.steps):
            prediction = await step.acall(**self._step_inputs(index, step, values))
            self._collect(step, prediction, values)
        return self._result(values)

    def _check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        names = [f.name for f in self.signature.input_fields]
        missing = [n for n in names if n not in inputs]
        extra = [k for k in inputs if k not in names]
        if missing or extra:
            problem = f"missing {missing}" if missing else f"unexpected {extra}"
            raise lf.UsageError(
                f"Chain inputs: {problem}; call it with {', '.join(f'{n}=...' for n in names)}"
            )
        return dict(inputs)

    def _step_inputs(
        self, index: int, step: lf.Module, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        renames = self.mapping.get(index, {})
        return {
            f.name: values[renames.get(f.name, f.name)] for f in _signature_of(step).input_fields
        }

    @staticmethod
    def _collect(step: lf.Module, prediction: lf.Prediction, values: dict[str, Any]) -> None:
        for field in _signature_of(step).output_fields:
            values[field.name] = prediction[field.name]

    def _result(self, values: Mapping[str, Any]) -> lf.Prediction:
        return lf.Prediction({f.name: values[f.name] for f in self.signature.output_fields})

    # -- artifacts ------------------------------------------------------------------------

    def spec_config(self) -> dict[str, Any]:
        return {
            "steps": [module_spec(step) for step in self.steps],
            "mapping": {str(i): dict(m) for i, m in self.mapping.items()},
            "inputs": list(self.extra_inputs),
            "outputs": list(self.chosen_outputs) if self.chosen_outputs is not None else None,
            "instructions": self.signature.instructions,
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> Chain:
        steps = [module_from_spec(spec, what="chain step") for spec in config.get("steps") or []]
        mapping = {int(k): dict(v) for k, v in (config.get("mapping") or {}).items()}
        return cls(
            *steps,
            mapping=mapping,
            inputs=list(config.get("inputs") or []),
            outputs=config.get("outputs"),
            instructions=str(config.get("instructions") or ""),
        )

    def __repr__(self) -> str:
        return f"Chain({', '.join(_describe(s) for s in self.steps)})"


def _as_step(step: StepLike, index: int) -> lf.Module:
    if isinstance(step, lf.Module):
        _signature_of(step, index)
        return step
    try:
        return lf.Predict(as_signature(step))
    except lf.SignatureError as exc:
        raise lf.UsageError(f"Chain step {index}: {exc}") from None


def _signature_of(step: lf.Module, index: int | None = None) -> lf.Signature:
    signature = getattr(step, "signature", None)
    if isinstance(signature, lf.Signature):
        return signature
    where = f"step {index}" if index is not None else "a step"
    raise lf.UsageError(
        f"Chain {where} ({type(step).__name__}) has no signature; give the module a "
        "`signature` attribute (an lf.Signature) so the chain can connect its fields"
    )


def _check_mapping(
    mapping: Mapping[int, Mapping[str, str]], count: int
) -> dict[int, dict[str, str]]:
    checked: dict[int, dict[str, str]] = {}
    for index, renames in mapping.items():
        if not isinstance(index, int) or not 0 <= index < count:
            raise lf.UsageError(
                f"mapping key {index!r} is not a step number; steps are numbered 0..{count - 1}"
            )
        if not isinstance(renames, Mapping):
            raise lf.UsageError(
                f"mapping[{index}] must be a dict {{input_name: source_field}}, got {renames!r}"
            )
        checked[index] = {str(k): str(v) for k, v in renames.items()}
    return checked


def _as_kind(field: Field, kind: str) -> Field:
    return Field(field.name, kind, field.annotation, field.description, field.prefix)  # type: ignore[arg-type]


def _describe(step: lf.Module) -> str:
    signature = getattr(step, "signature", None)
    if not isinstance(signature, lf.Signature):
        return type(step).__name__
    ins = ", ".join(f.name for f in signature.input_fields)
    outs = ", ".join(f.name for f in signature.output_fields)
    return f"{type(step).__name__}({ins} -> {outs})"


def _missing_message(
    index: int,
    step: lf.Module,
    name: str,
    source: str,
    known: Iterable[str],
    produced: Iterable[str],
) -> str:
    via = f" (mapped from {source!r})" if source != name else ""
    return (
        f"Chain step {index} ({_describe(step)}) needs input {name!r}{via}, but nothing "
        f"provides it: chain inputs are {sorted(known)}, earlier steps produce "
        f"{sorted(produced)}. Rename with mapping={{{index}: {{{name!r}: '<field>'}}}} "
        f"or declare it with inputs=[{source!r}]"
    )


def _default_instructions(steps: Sequence[lf.Module]) -> str:
    return f"A chain of {len(steps)} step(s): " + " -> ".join(_describe(s) for s in steps)
