"""``ChainOfThought``: a ``Predict`` whose outputs start with a reasoning field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lmforge as lf

__all__ = ["DEFAULT_RATIONALE", "ChainOfThought"]

DEFAULT_RATIONALE = "Think step by step, briefly, to work out the answer."


class ChainOfThought(lf.Module):
    """Ask for a ``reasoning`` output before the declared outputs.

    ``lf.modules.ChainOfThought("question -> answer")(question=...)`` returns a prediction
    with ``reasoning`` and ``answer``. The reasoning is an ordinary output field of the
    inner predictor, so it is recorded in the trace and kept in bootstrapped demos.

    Args:
        signature: the task's signature (string, ``lf.Signature`` or class form).
        rationale_desc: the description of the reasoning field shown in the prompt.
        rationale_field: the name of the reasoning field.
        **predict_options: passed to the inner :class:`lf.Predict` (``lm``, ``adapter``,
            ``demos``, request options such as ``temperature``).
    """

    def __init__(
        self,
        signature: str | lf.Signature | type[lf.Signature],
        *,
        rationale_desc: str = DEFAULT_RATIONALE,
        rationale_field: str = "reasoning",
        **predict_options: Any,
    ) -> None:
        from lmforge.signature import as_signature

        base = as_signature(signature)
        if rationale_field in base.field_names():
            raise lf.UsageError(
                f"the signature already has a field {rationale_field!r}; pass "
                "rationale_field='<another name>' to ChainOfThought"
            )
        self.rationale_desc = rationale_desc
        self.rationale_field = rationale_field
        extended = base.prepend(rationale_field, lf.OutputField(desc=rationale_desc), str)
        self.predict = lf.Predict(extended, **predict_options)

    @property
    def signature(self) -> lf.Signature:
        """The inner predictor's signature (reasoning first among the outputs)."""
        return self.predict.signature

    def forward(self, **inputs: Any) -> lf.Prediction:
        return self.predict(**inputs)

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        return await self.predict.acall(**inputs)

    # -- artifacts ----------------------------------------------------------------------

    def spec_config(self) -> dict[str, Any]:
        base = self.predict.signature.delete(self.rationale_field)
        return {
            "signature": base.to_json(),
            "rationale_desc": self.rationale_desc,
            "rationale_field": self.rationale_field,
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> ChainOfThought:
        return cls(
            lf.Signature.from_json(config["signature"]),
            rationale_desc=str(config.get("rationale_desc", DEFAULT_RATIONALE)),
            rationale_field=str(config.get("rationale_field", "reasoning")),
        )
