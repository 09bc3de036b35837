"""``lf.LM``: a model name plus a backend, wrapped with cache, retries and accounting."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .. import budget as _budget
from .. import settings as _settings
from .. import trace as _trace
from ..errors import BudgetExceededError, LMError, UsageError
from ..steps import run_blocking
from ..trace import LMCall, active_trackers
from .cache import ResponseCache
from .profiles import ModelProfile, profile_for
from .retry import RetryPolicy
from .types import Backend, LMRequest, LMResponse, Message
from .vision import has_images, refuse_images

__all__ = ["DEFAULT_LOCAL_MODEL", "LM"]

DEFAULT_LOCAL_MODEL = "local/gemma-3-270m"
_SECRET_NAME = re.compile(
    r"(^|[_-])(api_?key|key|secret|password|passwd|(proxy[_-])?authorization|credentials?|(set[_-])?cookies?"
    r"|(access_|auth_|bearer_|session_)?token)$",
    re.I,
)
_ENDPOINT_KEYS = ("api_base", "base_url")
_CLIENTS = frozenset({"auto", "http", "litellm"})
# Providers the built-in HTTP client speaks to when an api_base is given (client="auto").
_HTTP_PREFIXES = ("hosted_vllm/", "openai/")


def is_secret_key(name: str) -> bool:
    """Whether a setting's name says it holds a credential (``api_key``, ``token``, ...)."""
    return bool(_SECRET_NAME.search(name))


def _refuse_credentials(settings: Mapping[str, Any], path: str = "") -> None:
    """Defaults end up in requests, cache keys, traces and artifacts: no credential may be
    among them, at any depth (``extra_headers={"Authorization": ...}`` included)."""
    for name, value in settings.items():
        where = f"{path}[{name!r}]" if path else str(name)
        if is_secret_key(str(name)):
            raise UsageError(
                f"{where} looks like a credential; pass it as lf.LM(..., api_key=...) (or set "
                "the provider's environment variable) so that it is never stored"
            )
        if isinstance(value, Mapping):
            _refuse_credentials(value, where)


@functools.cache
def _announce(model: str, source: str) -> None:
    sys.stderr.write(f"lmforge: no model configured; using {model} ({source})\n")


def resolve_model_name(model: str | None) -> str:
    """``model`` if given, else ``$LMFORGE_MODEL``, else the embedded local model."""
    if model:
        return model
    env = os.environ.get("LMFORGE_MODEL")
    if env:
        _announce(env, "from $LMFORGE_MODEL")
        return env
    _announce(DEFAULT_LOCAL_MODEL, "the embedded local model; set $LMFORGE_MODEL to change")
    return DEFAULT_LOCAL_MODEL


class LM:
    """A language model: ``lf.LM("openai/gpt-4o-mini", temperature=0)``.

    ``model`` is any litellm provider string (``openai/...``, ``anthropic/...``,
    ``hosted_vllm/...`` with ``api_base``), or ``local/...`` for the embedded CPU model.
    With no model, ``$LMFORGE_MODEL`` or the embedded local model is used.

    Keyword defaults (``temperature``, ``max_tokens``, ...) go into every request.
    ``cache`` is ``True`` (the default directory), ``False``, a directory path or a
    :class:`ResponseCache`. Credentials (``api_key``) are kept out of requests, cache keys,
    traces and artifacts.

    ``client`` picks how OpenAI-compatible servers are called: ``"auto"`` uses lmforge's
    lean HTTP client for ``hosted_vllm/...`` and ``openai/...`` models given an
    ``api_base`` and litellm otherwise; ``"http"`` always uses the HTTP client (OpenAI,
    vLLM, llama.cpp server and compatible hosts); ``"litellm"`` always uses litellm.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        model_type: Literal["chat", "text"] | None = None,
        backend: Backend | None = None,
        cache: bool | str | os.PathLike[str] | ResponseCache = True,
        retry: RetryPolicy | int | None = None,
        profile: ModelProfile | None = None,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = 120.0,
        client: Literal["auto", "http", "litellm"] = "auto",
        lora: str | os.PathLike[str] | None = None,
        **defaults: Any,
    ) -> None:
        if client not in _CLIENTS:
            raise UsageError(f"client must be 'auto', 'http' or 'litellm', not {client!r}")
        self.client = client
        self.model = resolve_model_name(model)
        if lora is not None and not self.model.startswith("local/"):
            raise UsageError(
                f"lora= runs GGUF LoRA adapters on local/... models, not {self.model}; "
                "call a managed fine-tune by its ft: model id"
            )
        # A GGUF LoRA applied on top of a local model (see lmforge.lm.lora).
        self.lora: Path | None = Path(lora).expanduser().resolve() if lora is not None else None
        self.profile = profile or profile_for(self.model, model_type or "chat")
        self.model_type: Literal["chat", "text"] = model_type or (
            "chat" if self.profile.chat_template else "text"
        )
        _refuse_credentials(defaults)
        self.defaults: dict[str, Any] = dict(defaults)
        self.api_base = api_base
        self.timeout = timeout
        self._api_key = api_key
        self._backend = backend
        if isinstance(retry, int):
            retry = RetryPolicy(max_attempts=max(1, retry))
        self.retry = retry or RetryPolicy()
        if isinstance(cache, ResponseCache):
            self.cache: ResponseCache | None = cache
        elif cache is True:
            self.cache = ResponseCache()
        elif cache is False:
            self.cache = None
        else:
            self.cache = ResponseCache(Path(cache))

    # -- backend ------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def _make_backend(self) -> Backend:
        if self.model.startswith("local/"):
            from .local import LocalBackend

            if self.lora is not None:
                return LocalBackend.for_model(self.model, lora=str(self.lora))
            return LocalBackend.for_model(self.model)
        if self.client == "http" or (
            self.client == "auto" and self.api_base and self.model.startswith(_HTTP_PREFIXES)
        ):
            from .openai_backend import OpenAIBackend

            return OpenAIBackend(
                api_key=self._api_key, api_base=self.api_base, timeout=self.timeout
            )
        from .litellm_backend import LiteLLMBackend

        return LiteLLMBackend(api_key=self._api_key, api_base=self.api_base, timeout=self.timeout)

    # -- requests -----------------------------------------------------------------------

    def request(
        self,
        *,
        messages: list[Message] | tuple[Message, ...] | None = None,
        prompt: str | None = None,
        **params: Any,
    ) -> LMRequest:
        """Build a request for this model in its mode (chat or text), merging defaults."""
        if messages is not None:
            for message in messages:
                # Image parts come as a list of content parts; plain text needs no check.
                if not isinstance(message.get("content"), str):
                    if has_images(messages):
                        refuse_images(self.model, self.model_type, self.profile, messages)
                    break
        if self.model_type == "text" and messages is not None:
            prompt = "\n\n".join(str(m.get("content", "")) for m in messages)
            messages = None
        elif self.model_type == "chat" and prompt is not None:
            messages = ({"role": "user", "content": prompt},)
            prompt = None
        extras = {
            k: params.pop(k)
            for k in ("response_format", "constraint", "tools", "rollout_id")
            if k in params
        }
        # Requests end up in cache keys and traces: a per-call credential is refused like a
        # default one (``lm("hi", api_key=...)``, ``extra_headers={"Authorization": ...}``).
        _refuse_credentials(params)
        merged = {**self.defaults, **{k: v for k, v in params.items() if v is not None}}
        if self.lora is not None:  # the adapter's content is part of what decides the answer
            from .lora import file_digest

            merged["lora_sha256"] = file_digest(self.lora)
        return LMRequest(
            model=self.model,
            messages=tuple(messages) if messages is not None else None,
            prompt=prompt,
            params=merged,
            **extras,
        )

    def complete(self, request: LMRequest) -> LMResponse:
        """Answer ``request``: from the cache when allowed, else the backend with retries."""
        return run_blocking(self.complete_core(request, blocking=True))

    async def acomplete(self, request: LMRequest) -> LMResponse:
        """Async :meth:`complete`; backends are called natively, not via threads."""
        return await self.complete_core(request, blocking=False)

    def complete_core(
        self, request: LMRequest, *, blocking: bool
    ) -> Coroutine[Any, Any, LMResponse]:
        """:meth:`complete` and :meth:`acomplete` (a :mod:`lmforge.steps` core): other
        cores await it with their own ``blocking``.

        Transient errors are retried as :attr:`retry` says. Each backend request, retries
        included, is counted against the active budgets before it is sent; one the budget
        refuses is not sent.
        """
        core = self._complete(request, blocking=blocking)
        hook = _trace.current
        return core if hook is None else _trace.spanned(hook, self, request, core)

    async def _complete(self, request: LMRequest, *, blocking: bool) -> LMResponse:
        started = time.perf_counter()
        cache = self._usable_cache()
        response = cache.get(request, self.api_base) if cache is not None else None
        if response is not None:
            self._record(request, response, started, None, 0)
            return response
        backend, retry = self.backend, self.retry
        sent = 0
        spent = 0.0  # seconds in failed requests and waits, bounded by the policy
        while True:
            try:
                _budget.reserve(retry=sent > 0)
            except BudgetExceededError as exc:
                if sent:  # refused before any request was sent: not a call
                    self._record(request, None, started, exc, sent - 1)
                raise
            sent += 1
            began = retry.clock()
            try:
                if blocking:
                    response = backend.complete(request)
                else:
                    response = await backend.acomplete(request)
                break
            except LMError as exc:
                spent += retry.clock() - began
                wait = retry.next_wait(sent, exc, spent)
                if wait is None:
                    self._record(request, None, started, exc, sent - 1)
                    raise
            if blocking:
                retry.sleep(wait)
            else:
                await retry.async_sleep(wait)
            spent += wait
        response = self._settle(request, response, cache)
        self._record(request, response, started, None, sent - 1)
        return response

    def can_score(self, request: LMRequest) -> bool:
        """Whether :meth:`score` works for ``request`` (its backend can score it)."""
        from .score_call import scoring_backend

        return scoring_backend(self, request) is not None

    def score(self, request: LMRequest, continuations: Sequence[str]) -> list[float]:
        """The log-probability (sum over its tokens) of each continuation after the
        request's prompt; through the cache, budgets, retries and tracking like
        :meth:`complete`. Raises ``UsageError`` when the backend cannot score
        (:meth:`can_score`)."""
        from .score_call import score_core

        return run_blocking(score_core(self, request, continuations, blocking=True))

    async def ascore(self, request: LMRequest, continuations: Sequence[str]) -> list[float]:
        """Async :meth:`score`."""
        from .score_call import score_core

        return await score_core(self, request, continuations, blocking=False)

    def _usable_cache(self) -> ResponseCache | None:
        """The cache, unless this LM or the current ``lf.use(cache=False)`` turned it off."""
        return self.cache if self.cache is not None and _settings.current().cache else None

    def _settle(
        self, request: LMRequest, response: LMResponse, cache: ResponseCache | None
    ) -> LMResponse:
        """Price a fresh backend answer, charge the budget and store it in the cache."""
        response = self._priced(response)
        _budget.charge(response.cost)
        if cache is not None:
            cache.put(request, response, self.api_base)
        return response

    def __call__(
        self, prompt: str | None = None, *, messages: list[Message] | None = None, **params: Any
    ) -> list[str]:
        """Quick raw call: ``lm("Say hi")`` returns the list of completions."""
        if prompt is None and messages is None:
            raise UsageError("pass a prompt string or messages=[...]")
        request = self.request(messages=messages, prompt=prompt, **params)
        return list(self.complete(request).texts)

    # -- accounting ---------------------------------------------------------------------

    def _priced(self, response: LMResponse) -> LMResponse:
        if response.cost is not None:
            return response
        # Loaded on the first unpriced answer; absolute, as a relative import inside a
        # function costs a Python call on every call.
        from lmforge.lm.pricing import cost_of

        cost = cost_of(self.model, response.usage)
        if cost is None:
            return response
        return dataclasses.replace(response, cost=cost)

    def _record(
        self,
        request: LMRequest,
        response: LMResponse | None,
        started: float,
        error: BaseException | None,
        retries: int,
    ) -> None:
        trackers = active_trackers()
        if not trackers:
            return
        call = LMCall(
            model=self.model,
            request=request,
            response=response,
            latency=time.perf_counter() - started,
            error=type(error).__name__ if error is not None else None,
            retries=retries,
        )
        for tracker in trackers:
            tracker.add_call(call)

    # -- configuration ------------------------------------------------------------------

    def config(self, *, include_endpoint: bool = True) -> dict[str, Any]:
        """A JSON-safe description for artifacts; never contains credentials."""
        data: dict[str, Any] = {"model": self.model, "model_type": self.model_type}
        defaults = {k: v for k, v in self.defaults.items() if not is_secret_key(k)}
        if defaults:
            data["defaults"] = defaults
        if include_endpoint and self.api_base:
            from ._http import without_userinfo  # artifacts and bundles never hold a password

            data["api_base"] = without_userinfo(self.api_base)
        if self.client != "auto":
            data["client"] = self.client
        if self.lora is not None:
            data["lora"] = str(self.lora)
        return data

    @classmethod
    def from_config(cls, data: Mapping[str, Any], *, allow_endpoints: bool = False) -> LM:
        """Rebuild from :meth:`config`; endpoints are dropped unless ``allow_endpoints``."""
        defaults = dict(data.get("defaults") or {})
        for key in list(defaults):
            if is_secret_key(key) or key in _ENDPOINT_KEYS:
                defaults.pop(key)
        api_base = data.get("api_base") if allow_endpoints else None
        client: Any = data.get("client") or "auto"  # validated by the constructor
        return cls(
            str(data["model"]),
            model_type=data.get("model_type"),
            api_base=api_base,
            client=client,
            lora=data.get("lora"),
            **defaults,
        )

    def copy(self, **changes: Any) -> LM:
        """A new LM with some defaults changed (same backend, cache and credentials)."""
        _refuse_credentials(changes)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.defaults = {**self.defaults, **changes}
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> LM:
        return self  # LMs hold shared resources (clients, loaded weights, caches)

    def __repr__(self) -> str:
        return f"LM({self.model!r})"
