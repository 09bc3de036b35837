"""``lf.History``: the prior turns of a multi-turn program, as an input field type.

Each turn is a dict of the signature's field values (inputs and outputs), as DSPy's
``History``. Adapters render a history field as earlier user/assistant turns (or earlier
``Label: value`` blocks for completion prompts) between the demos and the current input,
never as a field of its own. A pydantic model, so it has a JSON schema, validates values
read back from artifacts and survives signature JSON round trips.

This module imports pydantic; ``lmforge`` loads it on first access of ``lf.History``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pydantic

from .inputtypes import KIND_KEY

__all__ = ["History"]


class History(pydantic.BaseModel):
    """Prior turns: ``lf.History(messages=[{"question": "...", "answer": "..."}, ...])``."""

    model_config = pydantic.ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={KIND_KEY: "history"}
    )
    #: What adapters look for to render this field as turns (see :mod:`.inputtypes`).
    lmforge_input_kind: ClassVar[str] = "history"

    messages: list[dict[str, Any]] = pydantic.Field(
        default_factory=list, description="prior turns, each a dict of field values"
    )

    def __init__(self, messages: Any = None, /, **data: Any) -> None:
        # ``lf.History([...])`` as well as ``lf.History(messages=[...])``.
        if messages is not None:
            data["messages"] = messages
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            from .errors import UsageError

            raise UsageError(
                f"lf.History needs messages=[{{field: value, ...}}, ...] (one dict per turn): "
                f"{exc.errors()[0]['msg']}"
            ) from None

    def __len__(self) -> int:
        return len(self.messages)
