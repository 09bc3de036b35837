"""Value types for data: :class:`Example` (a labeled record) and :class:`Prediction`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import UsageError

__all__ = ["Example", "Prediction"]


class _Record(Mapping[str, Any]):
    """An immutable mapping whose keys are also readable as attributes."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        merged = dict(data or {})
        merged.update(fields)
        object.__setattr__(self, "_data", merged)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # private and protocol names (copy, pickle) are never fields
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r}; fields: {sorted(self._data)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use .copy(**changes)")

    def __getstate__(self) -> dict[str, Any]:
        slots = (name for cls in type(self).__mro__ for name in getattr(cls, "__slots__", ()))
        return {name: getattr(self, name) for name in slots}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():  # copy and pickle restore through here
            object.__setattr__(self, name, value)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Record):
            return type(self) is type(other) and self._data == other._data
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self._data.items(), key=lambda kv: kv[0]))))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self._data.items())
        return f"{type(self).__name__}({body})"

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


class Example(_Record):
    """A labeled record. ``with_inputs`` says which keys are inputs; the rest are labels.

    >>> ex = lf.Example(ticket="refund please", team="billing").with_inputs("ticket")
    >>> ex.inputs()
    Example(ticket='refund please')
    """

    __slots__ = ("_input_keys",)

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        /,
        *,
        _input_keys: Iterable[str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(data, **fields)
        object.__setattr__(self, "_input_keys", tuple(_input_keys) if _input_keys else None)

    @property
    def input_keys(self) -> tuple[str, ...] | None:
        return self._input_keys

    def with_inputs(self, *keys: str) -> Example:
        """Return a copy with ``keys`` marked as the inputs."""
        missing = [k for k in keys if k not in self._data]
        if missing:
            raise UsageError(
                f"with_inputs({', '.join(map(repr, keys))}): the example has no "
                f"{', '.join(map(repr, missing))}; its keys are {sorted(self._data)}"
            )
        return Example(self._data, _input_keys=keys)

    def inputs(self) -> Example:
        """The input fields only (requires ``with_inputs``)."""
        if self._input_keys is None:
            raise UsageError("call .with_inputs('field', ...) first to say which keys are inputs")
        return Example({k: self._data[k] for k in self._input_keys}, _input_keys=self._input_keys)

    def labels(self) -> Example:
        """Every field that is not an input."""
        keys = self._input_keys or ()
        return Example({k: v for k, v in self._data.items() if k not in keys})

    def copy(self, **changes: Any) -> Example:
        return Example({**self._data, **changes}, _input_keys=self._input_keys)

    def without(self, *keys: str) -> Example:
        kept = {k: v for k, v in self._data.items() if k not in keys}
        inputs = tuple(k for k in (self._input_keys or ()) if k not in keys) or None
        return Example(kept, _input_keys=inputs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Example):
            return self._data == other._data and self._input_keys == other._input_keys
        return NotImplemented

    __hash__ = _Record.__hash__


class Prediction(_Record):
    """The outputs of a module call, readable as attributes (``pred.team``).

    ``completions`` holds every parsed candidate when more than one was sampled.
    ``confidence`` (a float in [0, 1], or ``None`` when unknown) and ``light``
    (``"green"``, ``"yellow"``, ``"red"`` or ``None``) describe how far the answer can be
    trusted; they are not output fields, may be set (``pred.confidence = 0.8``) and are
    kept by :meth:`copy`. Label scoring (see :mod:`lmforge.scoring`) sets ``confidence``
    and ``label_probs`` when it chose a closed output's answer. A program whose artifact
    holds calibrated thresholds sets ``light`` from ``confidence`` on each call (see
    :mod:`lmforge.lights`).
    """

    __slots__ = ("_completions", "_confidence", "_label_probs", "_light")

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        /,
        *,
        _completions: list[dict[str, Any]] | None = None,
        _confidence: float | None = None,
        _label_probs: Mapping[str, float] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(data, **fields)
        object.__setattr__(self, "_completions", _completions)
        # Normalised probabilities may stray from [0, 1] by a rounding error: clamp them.
        scored = None if _confidence is None else min(1.0, max(0.0, float(_confidence)))
        object.__setattr__(self, "_confidence", scored)
        object.__setattr__(self, "_label_probs", dict(_label_probs) if _label_probs else None)
        object.__setattr__(self, "_light", None)

    def __setattr__(self, name: str, value: Any) -> None:
        # Only the two trust annotations are settable: the output fields stay immutable.
        if name in ("confidence", "light"):
            object.__setattr__(self, name, value)  # through the property's setter
        else:
            super().__setattr__(name, value)

    @property
    def confidence(self) -> float | None:
        """How likely the answer is right, in [0, 1]; ``None`` when unknown. A program
        with an output field named ``confidence`` still reads it as ``pred["confidence"]``."""
        if self._confidence is None and "confidence" in self._data:
            return self._data["confidence"]  # type: ignore[no-any-return]
        return self._confidence

    @confidence.setter
    def confidence(self, value: float | None) -> None:
        object.__setattr__(self, "_confidence", _check_confidence(value))

    @property
    def light(self) -> str | None:
        """``"green"`` / ``"yellow"`` / ``"red"`` from calibrated thresholds, or ``None``."""
        if self._light is None and "light" in self._data:
            return self._data["light"]  # type: ignore[no-any-return]
        return self._light

    @light.setter
    def light(self, value: str | None) -> None:
        object.__setattr__(self, "_light", _check_light(value))

    @property
    def label_probs(self) -> dict[str, float] | None:
        """Every label's probability (label as shown to the model -> probability) when the
        answer was chosen by label scoring; ``None`` otherwise."""
        if "label_probs" in self._data:
            return self._data["label_probs"]  # type: ignore[no-any-return]
        return dict(self._label_probs) if self._label_probs is not None else None

    @classmethod
    def from_completions(
        cls, completions: Iterable[Mapping[str, Any]] | Mapping[str, Iterable[Any]]
    ) -> Prediction:
        """A prediction whose fields are the first completion's, keeping all of them.

        ``completions`` is a list of field dicts, or a dict of equally long lists
        (``{"answer": ["a", "b"]}``), as DSPy's ``Prediction.from_completions`` takes.
        """
        if isinstance(completions, Mapping):
            columns = {key: list(values) for key, values in completions.items()}
            sizes = {len(values) for values in columns.values()}
            if len(sizes) > 1:
                raise UsageError(
                    f"from_completions: every field needs the same number of values, got "
                    f"{ {key: len(values) for key, values in columns.items()} }"
                )
            count = sizes.pop() if sizes else 0
            rows = [{key: values[i] for key, values in columns.items()} for i in range(count)]
        else:
            rows = [dict(row) for row in completions]
        if not rows:
            raise UsageError("from_completions needs at least one completion")
        return cls(rows[0], _completions=rows)

    @property
    def completions(self) -> list[dict[str, Any]]:
        return self._completions if self._completions is not None else [dict(self._data)]

    # Scored predictions (a ``score`` field, as rewards and judges return) order and add up
    # by their score, so ``max(preds)`` and ``sum(preds) / len(preds)`` work as in DSPy.

    def __float__(self) -> float:
        if "score" not in self._data:
            raise UsageError(
                f"only a prediction with a 'score' field has a number value; fields: "
                f"{sorted(self._data)}"
            )
        return float(self._data["score"])

    def __add__(self, other: object) -> float:
        value = _number(other)
        return NotImplemented if value is None else float(self) + value

    def __radd__(self, other: object) -> float:
        value = _number(other)
        return NotImplemented if value is None else value + float(self)

    def __truediv__(self, other: object) -> float:
        value = _number(other)
        return NotImplemented if value is None else float(self) / value

    def __rtruediv__(self, other: object) -> float:
        value = _number(other)
        return NotImplemented if value is None else value / float(self)

    def __lt__(self, other: object) -> bool:
        value = _number(other)
        return NotImplemented if value is None else float(self) < value

    def __le__(self, other: object) -> bool:
        value = _number(other)
        return NotImplemented if value is None else float(self) <= value

    def __gt__(self, other: object) -> bool:
        value = _number(other)
        return NotImplemented if value is None else float(self) > value

    def __ge__(self, other: object) -> bool:
        value = _number(other)
        return NotImplemented if value is None else float(self) >= value

    __hash__ = _Record.__hash__

    def copy(self, **changes: Any) -> Prediction:
        new = Prediction({**self._data, **changes}, _completions=self._completions)
        object.__setattr__(new, "_confidence", self._confidence)
        object.__setattr__(new, "_label_probs", self._label_probs)
        object.__setattr__(new, "_light", self._light)
        return new


_LIGHTS = ("green", "yellow", "red")


def _check_confidence(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise UsageError(f"prediction.confidence must be a number in [0, 1] or None, got {value!r}")
    return float(value)


def _check_light(value: Any) -> str | None:
    if value is not None and value not in _LIGHTS:
        raise UsageError(f"prediction.light must be one of {_LIGHTS} or None, got {value!r}")
    return value  # type: ignore[no-any-return]


def _number(value: object) -> float | None:
    """``value`` as a float for prediction arithmetic, or None when it has no number value."""
    if isinstance(value, Prediction):
        return float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
