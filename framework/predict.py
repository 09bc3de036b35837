"""``lf.Predict``: the only module that calls an LM.

``adapter.format -> lm.complete -> adapter.parse``. The static prompt prefix (instructions,
field schema, demos) is rendered once and reused until the signature, demos or adapter
change.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

from . import settings as _settings
from .adapters import (
    Adapter,
    ChatAdapter,
    CompletionAdapter,
    JSONAdapter,
    adapter_from_config,
    adapter_named,
)
from .adapters.base import Prompt, PromptPrefix
from .adapters.coerce import _is_model
from .errors import ArtifactError, ParseError, SignatureError, UsageError
from .example import Example, Prediction
from .lm.lm import LM
from .lm.types import LMRequest, LMResponse
from .module import Module
from .signature import Signature, as_signature
from .steps import run_blocking
from .trace import LMCall, PredictorCall, active_trackers

if TYPE_CHECKING:
    # Imported on first use (scoring, calibration, per-input demos): `import lmforge` and
    # programs that never score stay cheap.
    from .calibration import Calibration
    from .demo_selection import DemoSelector
    from .scoring import Decode, LabelSet

__all__ = ["Predict", "current_call", "request_config"]

_HISTORY = 8
_CONFIG_KEYS = frozenset(
    {
        "temperature",
        "max_tokens",
        "top_p",
        "n",
        "stop",
        "seed",
        "rollout_id",
        "presence_penalty",
        "frequency_penalty",
    }
    | {"tools"}
)
_scoped_config: ContextVar[Mapping[str, Any] | None] = ContextVar(
    "lmforge_request_config", default=None
)
_calling: ContextVar[tuple[Adapter, Signature] | None] = ContextVar(
    "lmforge_predict_call", default=None
)


def current_call() -> tuple[Adapter, Signature] | None:
    """The (adapter, signature) of the ``Predict`` call whose LM request is being made, or
    ``None`` outside one: lets a fake LM (``lmforge.testing.DummyLM``) answer in the
    adapter's format."""
    return _calling.get()


@contextlib.contextmanager
def request_config(**config: Any) -> Iterator[None]:
    """Apply request options to every ``Predict`` call made inside the block.

    ``with request_config(rollout_id=2, temperature=1.0): program(...)`` samples a fresh
    answer from every predictor of ``program`` without copying it. Scoped options override
    a predictor's own ``config``; a call's explicit ``config={...}`` input overrides both.
    Scopes nest (inner values win) and follow the context into threads and tasks.
    """
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise UsageError(
            f"request_config got unknown option(s) {sorted(unknown)}; "
            f"options are {sorted(_CONFIG_KEYS)}"
        )
    token = _scoped_config.set({**(_scoped_config.get() or {}), **config})
    try:
        yield
    finally:
        _scoped_config.reset(token)


class Predict(Module):
    """Call an LM with a signature: ``lf.Predict("question -> answer")(question="...")``.

    Args:
        signature: a signature string, ``lf.Signature`` or class-form declaration.
        lm: the LM to use; otherwise the one from ``lf.use(lm=...)``.
        adapter: the adapter to use; otherwise ``lf.use(adapter=...)`` or the LM profile's.
        demos: few-shot examples (dicts or ``lf.Example``) with input and output fields.
        decode: ``"auto"`` (default) answers a closed output (one ``Literal``/``Enum``/
            ``bool`` field) by label scoring when the LM can score, else generates;
            ``"score"`` always scores; ``"generate"`` never does (see ``lmforge.scoring``).
        calibration: label-score calibration (``lmforge.calibration.Calibration``), usually
            set by ``lmforge.calibration.calibrate``; assigning new demos or a new
            signature clears it (it was measured for the old prompt).
        demo_selector: picks more demos per call from the call's inputs, shown after
            ``demos`` (see :mod:`lmforge.demo_selection`; ``KNNFewShot`` sets one).
        **config: request parameters (``temperature``, ``max_tokens``, ``n``, ...).
    """

    def __init__(
        self,
        signature: str | Signature | type[Signature],
        *,
        lm: LM | None = None,
        adapter: Adapter | None = None,
        demos: Iterable[Mapping[str, Any]] | None = None,
        decode: Decode = "auto",
        calibration: Calibration | None = None,
        demo_selector: DemoSelector | None = None,
        **config: Any,
    ) -> None:
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise UsageError(
                f"Predict got unknown option(s) {sorted(unknown)}; "
                f"request options are {sorted(_CONFIG_KEYS)}"
            )
        self._signature = as_signature(signature)
        if lm is not None:
            _settings.check_lm(lm, "lf.Predict(lm=...)")
        if adapter is not None:
            _settings.check_adapter(adapter, "lf.Predict(adapter=...)")
        self.lm = lm
        self._adapter = adapter
        self._demos: tuple[dict[str, Any], ...] = ()
        self.demos = list(demos or [])
        self.demo_selector = demo_selector
        self.config: dict[str, Any] = dict(config)
        if decode != "auto":  # the default needs no check (nor the scoring module)
            from .scoring import check_decode

            decode = check_decode(decode, "lf.Predict(decode=...)")
        self.decode: Decode = decode
        self.calibration = calibration
        self._prefix: tuple[Adapter, PromptPrefix] | None = None
        # the label set of the signature under an adapter (None: an open output)
        self._labels: tuple[Adapter, LabelSet | None] | None = None
        self._history: collections.deque[LMCall] = collections.deque(maxlen=_HISTORY)

    # -- learnable parameters (assigning one invalidates the cached prompt prefix) ------

    @property
    def signature(self) -> Signature:
        return self._signature

    @signature.setter
    def signature(self, value: str | Signature | type[Signature]) -> None:
        self._signature = as_signature(value)
        self._prefix = self._labels = None
        self.calibration = None  # measured for the old prompt

    @property
    def demos(self) -> tuple[dict[str, Any], ...]:
        return self._demos

    @demos.setter
    def demos(self, value: Iterable[Mapping[str, Any]]) -> None:
        self._demos = tuple(_demo_dict(d) for d in value)
        self._prefix = None
        self.calibration = None  # measured for the old prompt

    @property
    def adapter(self) -> Adapter | None:
        return self._adapter

    @adapter.setter
    def adapter(self, value: Adapter | None) -> None:
        self._adapter = value
        self._prefix = self._labels = None

    @property
    def history(self) -> list[LMCall]:
        """The last few LM calls this predictor made (for ``lf.inspect``)."""
        return list(self._history)

    # -- calling ------------------------------------------------------------------------

    def forward(self, **inputs: Any) -> Prediction:
        return run_blocking(self._call(inputs, blocking=True))

    async def aforward(self, **inputs: Any) -> Prediction:
        return await self._call(inputs, blocking=False)

    async def _call(self, inputs: dict[str, Any], *, blocking: bool) -> Prediction:
        """:meth:`forward` and :meth:`aforward` (a :mod:`lmforge.steps` core): format,
        call the LM, parse, record."""
        started = time.perf_counter()
        # An async caller's event loop must not wait on a render or parse that may be slow
        # (template overrides, custom adapters, a per-input demo search): those run in a
        # thread. Built-in templates render in microseconds and stay on the loop.
        offload = not blocking and (
            self.demo_selector is not None
            or not _renders_quickly(self._adapter or _settings.current().adapter)
        )
        if offload:
            import asyncio  # only async calls with a custom adapter or templates get here

            lm, adapter, request, call_inputs = await asyncio.to_thread(self._prepare, inputs)
        else:
            lm, adapter, request, call_inputs = self._prepare(inputs)
        labels = None
        if self.decode != "generate":
            known = self._labels
            if known is None or known[0] is not adapter:
                from .scoring import label_set

                known = self._labels = (adapter, label_set(adapter, self._signature))
            # An open output under decode="auto" generates without asking the LM anything.
            if known[1] is not None or self.decode == "score":
                from lmforge.scoring import plan  # absolute: no per-call name resolution

                labels = plan(self, lm, known[1], request)
        if labels is not None:
            from lmforge.scoring import scored_call

            scored = await scored_call(
                self, labels, lm, request, call_inputs, started, blocking=blocking
            )
            if scored is not None:
                return scored
        try:
            token = _calling.set((adapter, self._signature))
            try:
                if type(adapter).complete_core is Adapter.complete_core:
                    # The default only forwards to the LM: skip its extra coroutine.
                    response = await lm.complete_core(request, blocking=blocking)
                else:
                    response = await adapter.complete_core(lm, request, blocking=blocking)
            finally:
                _calling.reset(token)
            if offload:
                import asyncio

                prediction = await asyncio.to_thread(self._finish, adapter, request, response)
            else:
                prediction = self._finish(adapter, request, response)
        except Exception as exc:
            self._record(call_inputs, None, request, None, exc, started)
            raise
        self._record(call_inputs, prediction, request, response, None, started)
        return prediction

    def resolve_lm(self) -> LM:
        lm = self.lm or _settings.current().lm
        if lm is None:
            raise _settings.no_lm_error()
        return lm

    def resolve_adapter(self, lm: LM) -> Adapter:
        adapter = self._adapter or _settings.current().adapter
        return adapter if adapter is not None else _profile_adapter(lm.profile.default_adapter)

    def format(self, inputs: Mapping[str, Any], *, lm: LM | None = None) -> Prompt:
        """The prompt this predictor would send for ``inputs`` (no LM call)."""
        adapter = self.resolve_adapter(lm or self.resolve_lm())
        checked = self._signature.check_inputs(inputs)
        return adapter.format_inputs(self._signature, self._prefix_for(adapter, checked), checked)

    def _prefix_for(self, adapter: Adapter, inputs: Mapping[str, Any]) -> PromptPrefix:
        selector = self.demo_selector
        if selector is not None:  # per-input demos: a prefix per call, never cached
            demos = (*self._demos, *map(_demo_dict, selector.select(inputs)))
            return adapter.format_prefix(self._signature, demos)
        cached = self._prefix
        if cached is not None and cached[0] is adapter:
            return cached[1]
        prefix = adapter.format_prefix(self._signature, self._demos)
        self._prefix = (adapter, prefix)
        return prefix

    def _prepare(self, inputs: dict[str, Any]) -> tuple[LM, Adapter, LMRequest, dict[str, Any]]:
        signature = self._signature
        scoped = _scoped_config.get()
        config = {**self.config, **scoped} if scoped else self.config
        if "config" in inputs and not any(f.name == "config" for f in signature.input_fields):
            call_config = inputs.pop("config")
            if not isinstance(call_config, Mapping) or not call_config.keys() <= _CONFIG_KEYS:
                raise UsageError(
                    f"config={call_config!r} must be a dict of request options; "
                    f"options are {sorted(_CONFIG_KEYS)}"
                )
            config = {**config, **call_config}
        inputs = signature.check_inputs(inputs)
        fields = signature.input_fields
        if len(inputs) != len(fields):
            _refuse_inputs(signature, inputs)
        for field in fields:  # a loop, not a comprehension: this runs on every call
            if field.name not in inputs:
                _refuse_inputs(signature, inputs)
        lm = self.resolve_lm()
        adapter = self.resolve_adapter(lm)
        prompt = adapter.format_inputs(signature, self._prefix_for(adapter, inputs), inputs)
        params = dict(config)
        if prompt.stop and "stop" not in params:
            params["stop"] = list(prompt.stop)
        request = lm.request(
            messages=prompt.messages,
            prompt=prompt.text,
            response_format=prompt.response_format,
            constraint=prompt.constraint,
            **params,
        )
        return lm, adapter, request, inputs

    def _finish(self, adapter: Adapter, request: LMRequest, response: LMResponse) -> Prediction:
        signature = self._signature
        if request.tools and response.tool_calls:
            # A tool-calling turn may carry no text: outputs the text does not give are absent.
            try:
                values = adapter.parse(signature, response.text)
            except ParseError:
                values = {}
            return Prediction({**values, "tool_calls": [dict(c) for c in response.tool_calls]})
        if len(response.texts) <= 1:
            return Prediction(adapter.parse(signature, response.text))
        completions = [adapter.parse(signature, text) for text in response.texts]
        return Prediction(completions[0], _completions=completions)

    def _record(
        self,
        inputs: dict[str, Any],
        prediction: Prediction | None,
        request: LMRequest,
        response: LMResponse | None,
        error: BaseException | None,
        started: float,
    ) -> None:
        call = LMCall(
            model=request.model,
            request=request,
            response=response,
            latency=time.perf_counter() - started,  # the whole predictor call, parsing included
            error=type(error).__name__ if error else None,
        )
        self._history.append(call)
        trackers = active_trackers()
        if not trackers:
            return
        record = PredictorCall(self, inputs, prediction, call, len(self._demos), error)
        for tracker in trackers:
            tracker.add_prediction(record)

    # -- state --------------------------------------------------------------------------

    def dump_state(self) -> dict[str, Any]:
        state = {
            "signature": self._signature.to_json(),
            "demos": [_jsonable(d) for d in self._demos],
            "adapter": self._adapter.config() if self._adapter is not None else None,
            "lm": self.lm.config() if self.lm is not None else None,
            "config": _jsonable(self.config),
        }
        # Written only when set, so artifacts of programs that never used them are unchanged.
        if self.decode != "auto":
            state["decode"] = self.decode
        if self.calibration is not None:
            state["calibration"] = self.calibration.to_json()
        if self.demo_selector is not None:  # absent otherwise: older artifacts hash the same
            from .demo_selection import selector_state

            state["demo_selector"] = selector_state(self.demo_selector)
        return state

    def load_state(self, state: Mapping[str, Any], *, allow_endpoints: bool = False) -> Predict:
        """Load :meth:`dump_state` output (or a program-level :meth:`state`) into this
        predictor, all or nothing."""
        if isinstance(state.get("signature"), Mapping):  # one predictor's own state
            self.apply_state(self.parsed_state(state, allow_endpoints=allow_endpoints))
            return self
        super().load_state(state, allow_endpoints=allow_endpoints)
        return self

    def parsed_state(
        self, data: Mapping[str, Any], *, allow_endpoints: bool = False
    ) -> dict[str, Any]:
        """Validate a :meth:`dump_state` dict into ready objects (raises ``ArtifactError``)."""
        try:
            signature = Signature.from_json(data["signature"])
            demos = [dict(d) for d in data.get("demos") or []]
            adapter = adapter_from_config(data["adapter"]) if data.get("adapter") else None
            lm = (
                LM.from_config(data["lm"], allow_endpoints=allow_endpoints)
                if data.get("lm")
                else None
            )
            config = dict(data.get("config") or {})
            decode = data.get("decode", "auto")
            if decode != "auto":
                from .scoring import check_decode

                decode = check_decode(decode)
            calibration = None
            if data.get("calibration"):
                from .calibration import Calibration

                calibration = Calibration.from_json(data["calibration"])
            selected = data.get("demo_selector")
            selector = None
            if selected is not None:
                from .demo_selection import selector_from_state

                selector = selector_from_state(selected)
        except (KeyError, TypeError, ValueError, SignatureError, UsageError) as exc:
            raise ArtifactError(f"invalid predictor state: {type(exc).__name__}: {exc}") from None
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise ArtifactError(f"invalid predictor state: unknown config keys {sorted(unknown)}")
        return {
            "signature": signature,
            "demos": demos,
            "adapter": adapter,
            "lm": lm,
            "config": config,
            "decode": decode,
            "calibration": calibration,
            "demo_selector": selector,
        }

    def apply_state(self, parsed: Mapping[str, Any]) -> None:
        self.signature = parsed["signature"]
        self.demos = parsed["demos"]
        self.adapter = parsed["adapter"]
        if parsed["lm"] is not None:
            self.lm = parsed["lm"]
        self.config = parsed["config"]
        self.decode = parsed.get("decode", "auto")
        self.calibration = parsed.get("calibration")
        self.demo_selector = parsed.get("demo_selector")

    def spec_config(self) -> dict[str, Any]:
        return {"signature": self._signature.to_json()}

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> Predict:
        return cls(Signature.from_json(config["signature"]))

    def __deepcopy__(self, memo: dict[int, Any]) -> Predict:
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "_history":
                new.__dict__[key] = collections.deque(maxlen=_HISTORY)
            elif key in ("lm", "_signature", "_prefix", "_labels", "demo_selector"):
                new.__dict__[key] = value  # shared or immutable
            else:
                from copy import deepcopy

                new.__dict__[key] = deepcopy(value, memo)
        return new

    def __repr__(self) -> str:
        return f"Predict({self._signature!r})"


_PROFILE_ADAPTERS: dict[str, Adapter] = {}


_BUILTIN_ADAPTERS = (ChatAdapter, JSONAdapter, CompletionAdapter)


def _renders_quickly(adapter: Adapter | None) -> bool:
    """Whether ``adapter`` formats and parses with the built-in templates only (None: the
    model profile's built-in adapter)."""
    if adapter is None:
        return True
    return type(adapter) in _BUILTIN_ADAPTERS and not adapter.template_overrides


def _profile_adapter(name: str) -> Adapter:
    # Adapters are immutable once built; sharing one per name keeps prefix caches warm.
    adapter = _PROFILE_ADAPTERS.get(name)
    if adapter is None:
        adapter = _PROFILE_ADAPTERS.setdefault(name, adapter_named(name))
    return adapter


def _refuse_inputs(signature: Signature, inputs: Mapping[str, Any]) -> NoReturn:
    """Raise the ``UsageError`` for ``inputs`` (defaults filled in) that miss some of
    ``signature``'s inputs or hold others."""
    names = {f.name for f in signature.input_fields}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise UsageError(
            f"missing input(s) {sorted(missing)} for {signature!r}; "
            f"call it with {', '.join(f'{n}=...' for n in sorted(names))}"
        )
    extra = [k for k in inputs if k not in names]
    raise UsageError(
        f"unexpected input(s) {sorted(extra)} for {signature!r}; its inputs are {sorted(names)}"
    )


def _demo_dict(demo: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(demo, Example):
        return demo.to_dict()
    if isinstance(demo, Mapping):
        return dict(demo)
    raise UsageError(f"demos must be dicts or lf.Example, got {type(demo).__name__}")


def _jsonable(value: Any) -> Any:
    if _is_model(value):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
