"""Voting: ``majority`` over predictions, ``Majority`` (sample one module n times) and
``Ensemble`` (run several programs and reduce their predictions)."""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lmforge as lf
from lmforge.predict import request_config
from lmforge.trace import Tracker, track

from ._checks import check_count, check_number
from ._spec import callable_ref, module_from_spec, module_spec, resolve_callable
from .sampling import reject

__all__ = ["Ensemble", "Majority", "majority", "normalize_answer"]

Reducer = Callable[[list[lf.Prediction]], lf.Prediction]


def normalize_answer(value: Any) -> str | None:
    """The key answers are compared by: case-folded text with spacing and trailing
    punctuation ignored; other values as canonical JSON. ``None`` abstains from the vote."""
    if value is None:
        return None
    if isinstance(value, str):
        text = " ".join(value.casefold().split()).strip(string.punctuation + " ")
        return text or None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def majority(
    predictions: Sequence[Mapping[str, Any]] | lf.Prediction,
    *,
    field: str | None = None,
    normalize: Callable[[Any], str | None] = normalize_answer,
) -> lf.Prediction:
    """The candidate whose ``field`` value is most common (ties: the earliest).

    ``predictions`` is a list of predictions, or one prediction with several
    ``completions`` (sampled with ``n=``). ``field`` defaults to the last field of the
    first candidate. All candidates stay available on the result's ``completions``.
    """
    if isinstance(predictions, lf.Prediction):
        candidates = [dict(c) for c in predictions.completions]
    else:
        candidates = [dict(p) for p in predictions]
    if not candidates:
        raise lf.UsageError("majority needs at least one prediction")
    name = field or list(candidates[0])[-1]
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for index, candidate in enumerate(candidates):
        if name not in candidate:
            raise lf.UsageError(f"prediction {index} has no field {name!r}; pass field='<name>'")
        key = normalize(candidate[name])
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, index)
    if not counts:
        winner = 0
    else:
        best = max(counts, key=lambda k: (counts[k], -first[k]))
        winner = first[best]
    return lf.Prediction(candidates[winner], _completions=candidates)


class Majority(lf.Module):
    """Run ``module`` ``n`` times (distinct rollout ids, sampling ``temperature``) and
    return the prediction whose ``field`` value is most common.

    ``field`` defaults to the module signature's last output field. Attempts after the
    first run under :func:`lmforge.predict.request_config`; async calls run the attempts
    concurrently.
    """

    def __init__(
        self, module: lf.Module, n: int = 5, *, field: str | None = None, temperature: float = 1.0
    ) -> None:
        if not isinstance(module, lf.Module):
            raise lf.UsageError(f"Majority wraps an lf.Module, got {type(module).__name__}")
        self.n = check_count(n, "Majority", "n", least=1)
        if field is not None and not isinstance(field, str):
            raise lf.UsageError(f"Majority(field=...) must be an output field name, got {field!r}")
        self.module = module
        self.field = field
        self.temperature = check_number(temperature, "Majority(temperature=...)")

    @property
    def signature(self) -> lf.Signature | None:
        return getattr(self.module, "signature", None)

    def _field(self) -> str | None:
        if self.field is not None:
            return self.field
        signature = self.signature
        return signature.output_fields[-1].name if signature is not None else None

    def _options(self, attempt: int) -> dict[str, Any]:
        return {} if attempt == 0 else {"rollout_id": attempt, "temperature": self.temperature}

    def forward(self, **inputs: Any) -> lf.Prediction:
        samples = []
        for attempt in range(self.n):
            with track() as tracker, request_config(**self._options(attempt)):
                samples.append((self.module(**inputs), tracker))
        return self._vote(samples)

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        async def one(attempt: int) -> tuple[lf.Prediction, Tracker]:
            with track() as tracker, request_config(**self._options(attempt)):
                return await self.module.acall(**inputs), tracker

        import asyncio  # imported on first async use: plain calls never need it

        return self._vote(list(await asyncio.gather(*(one(i) for i in range(self.n)))))

    def _vote(self, samples: list[tuple[lf.Prediction, Tracker]]) -> lf.Prediction:
        """The majority prediction; the trace records of every other sample are marked
        rejected (see :func:`lmforge.modules.sampling.rejected_attempts`): only the returned
        sample is a demonstration worth copying."""
        result = majority([prediction for prediction, _ in samples], field=self._field())
        winner = next((i for i, (p, _) in enumerate(samples) if dict(p) == dict(result)), 0)
        reject(r for i, (_, t) in enumerate(samples) if i != winner for r in t.predictions)
        return result

    def spec_config(self) -> dict[str, Any]:
        return {
            "module": module_spec(self.module),
            "n": self.n,
            "field": self.field,
            "temperature": self.temperature,
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> Majority:
        return cls(
            module_from_spec(config["module"]),
            int(config.get("n", 5)),
            field=config.get("field"),
            temperature=float(config.get("temperature", 1.0)),
        )


class Ensemble(lf.Module):
    """Run every program on the same inputs and combine the predictions with ``reduce``
    (default :func:`majority`). Async calls run the programs concurrently.

    ``reduce`` takes the list of predictions and returns one; it is saved by import path.
    """

    def __init__(self, programs: Sequence[lf.Module], *, reduce: Reducer = majority) -> None:
        if isinstance(programs, lf.Module | str | bytes | Mapping) or not isinstance(
            programs, Iterable
        ):
            raise lf.UsageError(
                f"Ensemble(programs) must be a list of lf.Module, got {type(programs).__name__}; "
                "pass Ensemble([program_a, program_b])"
            )
        self.programs: list[lf.Module] = list(programs)
        if not self.programs:
            raise lf.UsageError("Ensemble needs at least one program")
        for program in self.programs:
            if not isinstance(program, lf.Module):
                raise lf.UsageError(
                    f"Ensemble programs must be lf.Module, got {type(program).__name__}"
                )
        if not callable(reduce):
            raise lf.UsageError("reduce must be a function reduce(predictions) -> lf.Prediction")
        self.reduce = reduce

    @property
    def signature(self) -> lf.Signature | None:
        return getattr(self.programs[0], "signature", None)

    def forward(self, **inputs: Any) -> lf.Prediction:
        return self.reduce([program(**inputs) for program in self.programs])

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        import asyncio

        predictions = await asyncio.gather(*(p.acall(**inputs) for p in self.programs))
        return self.reduce(list(predictions))

    def spec_config(self) -> dict[str, Any]:
        return {
            "programs": [module_spec(p) for p in self.programs],
            "reduce": callable_ref(self.reduce),
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> Ensemble:
        hint = "pass it yourself: lf.load(path, program=Ensemble(programs, reduce=...))"
        return cls(
            [module_from_spec(spec, what="program") for spec in config.get("programs") or []],
            reduce=resolve_callable(str(config["reduce"]), what="reduce function", hint=hint),
        )
