"""The ``local/...`` backend: in-process llama.cpp inference on the CPU.

``lf.LM("local/gemma-3-270m")`` runs the embedded Gemma 3 270M GGUF (assembled into the
lmforge cache dir on first use); ``lf.LM("local/path/to/model.gguf")`` runs any GGUF.
llama-cpp-python is imported when the first request arrives.

One loaded model is kept per (file, load settings) per process and shared by every LM
that uses it; a lock serialises calls into it, and async calls run that locked work in a
worker thread so the event loop never blocks. Load settings come from request parameters
(``lf.LM("local/...", n_threads=2)``), then the environment, then defaults that stay
robust on a small shared machine:

- ``n_threads`` (``$LMFORGE_LOCAL_THREADS``): generation threads, default 1. With two on a
  2-core machine, generation collapses whenever anything else runs.
- ``n_threads_batch`` (``$LMFORGE_LOCAL_THREADS_BATCH``): prompt-processing threads,
  default 2, or 1 on machines with 2 cores or fewer (measured: 2 threads there make
  prompts 6-9x slower as soon as another process competes for a core).
- ``n_ctx`` (``$LMFORGE_LOCAL_N_CTX``): context length, default the model profile's
  context window capped at 4096.

Decoding is greedy unless ``temperature`` > 0. An ``OutputConstraint`` on the request (or
a JSON ``response_format``) is compiled into a llama.cpp grammar so the output parses.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import random
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ContextWindowError, LMError, MissingExtraError, ProviderError, UsageError
from .grammar import constraint_grammar, response_format_grammar
from .local_build import model_params_for_this_build
from .local_models import resolve_model_path
from .profiles import profile_for
from .score_call import ContinuationScores
from .types import LMRequest, LMResponse, Message, Usage
from .vision import has_images

__all__ = ["LoadSettings", "LocalBackend", "loaded_models"]

DEFAULT_MAX_TOKENS = 128
MAX_DEFAULT_CONTEXT = 4096
_LOAD_KEYS = ("n_ctx", "n_threads", "n_threads_batch")
_ENV = {
    "n_ctx": "LMFORGE_LOCAL_N_CTX",
    "n_threads": "LMFORGE_LOCAL_THREADS",
    "n_threads_batch": "LMFORGE_LOCAL_THREADS_BATCH",
}
# Request parameters passed to llama.cpp under the same name; others are ignored.
_SAMPLING_KEYS = (
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
)


@dataclasses.dataclass(frozen=True, slots=True)
class LoadSettings:
    """How a model file is loaded; one shared model per (file, settings) per process."""

    n_ctx: int
    n_threads: int = 1
    n_threads_batch: int = 1
    lora: str | None = None  # a GGUF LoRA adapter applied on load (llama.cpp lora_path)


class _Loaded:
    """A loaded llama.cpp model and the lock that serialises its use."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()
        self._eog: Any = None
        self.chat_template: str | None = (getattr(llama, "metadata", None) or {}).get(
            "tokenizer.chat_template"
        )

    def eog(self) -> Any:
        """The model's end-of-generation token ids (computed once)."""
        if self._eog is None:
            from .local_sampling import eog_tokens

            self._eog = eog_tokens(self.llama)
        return self._eog


_MODELS: dict[tuple[str, LoadSettings], _Loaded] = {}
_MODELS_LOCK = threading.Lock()


def _close_models() -> None:
    """Free loaded models before interpreter teardown: llama-cpp-python's ``__del__``
    otherwise runs after its own module globals are gone and prints a traceback."""
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for loaded in models:
        with contextlib.suppress(Exception):
            loaded.llama.close()


def loaded_models() -> list[tuple[str, LoadSettings]]:
    """The (file, settings) pairs loaded in this process."""
    with _MODELS_LOCK:
        return list(_MODELS)


def default_batch_threads() -> int:
    """Prompt-processing threads: 2, but 1 on machines with 2 cores or fewer, where a
    second llama.cpp thread competing with any other process slows prompts down 6-9x."""
    return 2 if (os.cpu_count() or 1) > 2 else 1


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise MissingExtraError("llama-cpp-python", "local", "Running local/... models") from None
    return llama_cpp


def _int_setting(name: str, value: Any, source: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a whole number, got {value!r} (from {source})") from None
    if number < 1:
        raise UsageError(f"{name} must be at least 1, got {number} (from {source})")
    return number


class LocalBackend:
    """Runs GGUF models in-process with llama-cpp-python (``local/...`` models)."""

    def __init__(
        self, model: str, *, context_window: int = 8192, lora: str | None = None, **load: int
    ) -> None:
        unknown = set(load) - set(_LOAD_KEYS)
        if unknown:
            raise UsageError(
                f"unknown local model option(s) {sorted(unknown)}; known: {list(_LOAD_KEYS)}"
            )
        self.model = model
        self.context_window = context_window
        self.lora = lora
        self._load = dict(load)
        self._path: Path | None = None
        self._path_lock = threading.Lock()

    @classmethod
    def for_model(cls, model: str, *, lora: str | None = None, **load: int) -> LocalBackend:
        """The backend for ``local/<name>`` or ``local/<path-to-file.gguf>`` (with an
        optional GGUF LoRA adapter file ``lora``)."""
        if not model.startswith("local/") or model == "local/":
            raise UsageError(
                f"local models are named local/<name> or local/<file.gguf>, got {model!r}"
            )
        return cls(
            model, context_window=profile_for(model, "text").context_window, lora=lora, **load
        )

    # -- settings and loading -------------------------------------------------------------

    def load_settings(self, params: Mapping[str, Any] | None = None) -> LoadSettings:
        """Load settings for a request: its parameters, then this backend's options,
        then the environment, then the defaults."""
        values: dict[str, int] = {}
        for key in _LOAD_KEYS:
            if params and params.get(key) is not None:
                values[key] = _int_setting(key, params[key], "request parameters")
            elif self._load.get(key) is not None:
                values[key] = _int_setting(key, self._load[key], "backend options")
            elif os.environ.get(_ENV[key]):
                values[key] = _int_setting(key, os.environ[_ENV[key]], f"${_ENV[key]}")
        values.setdefault("n_ctx", min(self.context_window, MAX_DEFAULT_CONTEXT))
        values.setdefault("n_threads_batch", default_batch_threads())
        return LoadSettings(**values, lora=self.lora)

    @property
    def path(self) -> Path:
        """The model file (a packaged model is assembled on first access)."""
        if self._path is None:
            with self._path_lock:
                if self._path is None:
                    self._path = resolve_model_path(self.model)
        return self._path

    def warm_up(self, params: Mapping[str, Any] | None = None) -> LoadSettings:
        """Prepare the model file and load the model now rather than on the first call;
        returns the settings it was loaded with."""
        settings = self.load_settings(params)
        self._loaded(settings)
        return settings

    def _loaded(self, settings: LoadSettings) -> _Loaded:
        llama_cpp = _llama_cpp()
        path = self.path
        key = (str(path.resolve()), settings)
        with _MODELS_LOCK:
            loaded = _MODELS.get(key)
            if loaded is None:
                with _captured_stderr() as log, model_params_for_this_build(llama_cpp):
                    try:
                        llama = llama_cpp.Llama(
                            model_path=str(path),
                            n_ctx=settings.n_ctx,
                            n_threads=settings.n_threads,
                            n_threads_batch=settings.n_threads_batch,
                            n_batch=min(512, settings.n_ctx),
                            verbose=False,
                            **({"lora_path": settings.lora} if settings.lora else {}),
                        )
                    except (ValueError, RuntimeError, OSError) as exc:
                        llama, error = None, exc
                if llama is None:
                    detail = log.text().strip().splitlines()[-1:] or [str(error)]
                    raise ProviderError(
                        f"{self.model}: could not load {path} ({detail[0]}); "
                        "is it a valid GGUF file?",
                        model=self.model,
                    )
                if not _MODELS:
                    atexit.register(_close_models)
                loaded = _MODELS[key] = _Loaded(llama)
        return loaded

    # -- requests -------------------------------------------------------------------------

    def complete(self, request: LMRequest) -> LMResponse:
        """Answer ``request`` (blocking; thread-safe)."""
        if has_images(request.messages):  # checked before loading: the answer is no anyway
            raise UsageError(
                f"{self.model} cannot take lf.Image inputs: the local backend runs text-only "
                "models; use a vision model such as openai/gpt-4o-mini"
            )
        params = dict(request.params)
        loaded = self._loaded(self.load_settings(params))
        gbnf = self._grammar_text(request)
        n = _int_setting("n", params.get("n") or 1, "request parameters")
        temperature = float(params.get("temperature") or 0.0)
        max_tokens = int(params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        stop = params.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        sampling = {k: params[k] for k in _SAMPLING_KEYS if params.get(k) is not None}
        seed = params.get("seed")
        if seed is None and temperature > 0:
            seed = (
                request.rollout_id
                if request.rollout_id is not None
                else random.SystemRandom().randrange(2**31)
            )
        with loaded.lock:
            text, special, extra_stop = self._render(loaded, request)
            tokens = self._tokenize(loaded, text, special)
            n_ctx = loaded.llama.n_ctx()
            if len(tokens) >= n_ctx:
                raise ContextWindowError(
                    f"{self.model}: the prompt has {len(tokens)} tokens but the context window "
                    f"is {n_ctx}; shorten the prompt (fewer demos) or raise n_ctx "
                    "(LMFORGE_LOCAL_N_CTX)",
                    model=self.model,
                )
            texts: list[str] = []
            completion_tokens = 0
            finish: str | None = None
            for i in range(n):
                if i and temperature <= 0:
                    texts.append(texts[0])  # greedy decoding: every sample is the same
                    continue
                out = self._generate(
                    loaded,
                    tokens,
                    gbnf=gbnf,
                    temperature=temperature,
                    max_tokens=min(max_tokens, n_ctx - len(tokens)),
                    stop=stop + extra_stop,
                    seed=None if seed is None else int(seed) + i,
                    sampling=sampling,
                )
                choice = out["choices"][0]
                texts.append(choice.get("text") or "")
                completion_tokens += int((out.get("usage") or {}).get("completion_tokens") or 0)
                finish = choice.get("finish_reason") or finish
        if n > 1 and temperature <= 0:
            completion_tokens *= n
        return LMResponse(
            texts=tuple(texts),
            usage=Usage(len(tokens), completion_tokens),
            model=request.model,
            finish_reason=finish,
            cost=0.0,
        )

    async def acomplete(self, request: LMRequest) -> LMResponse:
        """Async :meth:`complete`: the locked work runs in a worker thread."""
        return await asyncio.to_thread(self.complete, request)

    # -- scoring (lmforge.lm.types.ScoringBackend) ----------------------------------------

    def can_score(self, request: LMRequest) -> bool:
        """Every text request can be scored (images and tools cannot)."""
        return not request.tools and not has_images(request.messages)

    def score(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores:
        """The summed token log-probabilities of each continuation after the prompt: the
        prompt is evaluated once and the continuations from its state (blocking)."""
        from .local_scoring import score_tokens

        if not self.can_score(request):
            raise UsageError(f"{self.model} scores text prompts only (no images or tools)")
        loaded = self._loaded(self.load_settings(request.params))
        with loaded.lock:
            text, special, _ = self._render(loaded, request)
            tokens = self._tokenize(loaded, text, special)
            llama = loaded.llama
            pieces = [
                list(llama.tokenize(c.encode("utf-8"), add_bos=False, special=False))
                for c in continuations
            ]
            needed = len(tokens) + max((len(p) for p in pieces), default=0)
            if needed >= llama.n_ctx():
                raise ContextWindowError(
                    f"{self.model}: the prompt and its longest continuation have {needed} tokens "
                    f"but the context window is {llama.n_ctx()}; shorten the prompt (fewer "
                    "demos) or raise n_ctx (LMFORGE_LOCAL_N_CTX)",
                    model=self.model,
                )
            try:
                scores = score_tokens(llama, tokens, pieces)
            except RuntimeError as exc:
                raise ProviderError(
                    f"{self.model}: llama.cpp failed: {exc}", model=self.model
                ) from None
        # The prompt and every continuation's tokens are read, as a prompt is; none generated.
        read = len(tokens) + sum(len(piece) for piece in pieces)
        return ContinuationScores(tuple(scores), Usage(read, 0))

    async def ascore(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores:
        """Async :meth:`score`: the locked work runs in a worker thread."""
        return await asyncio.to_thread(self.score, request, continuations)

    # -- helpers --------------------------------------------------------------------------

    def _grammar_text(self, request: LMRequest) -> str | None:
        if request.tools:
            raise UsageError(
                f"{self.model} does not support native tool calls; use a ReAct-style module"
            )
        if request.constraint is not None:
            return constraint_grammar(request.constraint)
        return response_format_grammar(request.response_format)

    def _render(self, loaded: _Loaded, request: LMRequest) -> tuple[str, bool, list[str]]:
        """The prompt text, whether it holds special tokens, and extra stop strings."""
        if request.prompt is not None:
            return request.prompt, False, []
        messages: list[Any] = list(request.messages or ())
        if loaded.chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llama = loaded.llama
            eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "ignore")
            bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "ignore")
            try:
                rendered = Jinja2ChatFormatter(loaded.chat_template, eos_token=eos, bos_token=bos)(
                    messages=messages
                )
            except Exception as exc:  # template errors are jinja2/ValueError subclasses
                raise UsageError(
                    f"{self.model}: its chat template rejected the messages: {exc}"
                ) from None
            return rendered.prompt, True, [s for s in (rendered.stop or []) if isinstance(s, str)]
        return _flatten(messages), False, ["\nUser:", "\nSystem:"]

    @staticmethod
    def _tokenize(loaded: _Loaded, text: str, special: bool) -> list[int]:
        llama = loaded.llama
        bos_text = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "ignore")
        add_bos = not (special and bos_text and text.startswith(bos_text))
        return list(llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def _generate(
        self,
        loaded: _Loaded,
        tokens: list[int],
        *,
        gbnf: str | None,
        temperature: float,
        max_tokens: int,
        stop: list[str],
        seed: int | None,
        sampling: Mapping[str, Any],
    ) -> dict[str, Any]:
        llama = loaded.llama
        scope: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if gbnf:
            from .local_sampling import GrammarSampler, generate_with

            options = {k: sampling[k] for k in ("top_k", "top_p", "min_p") if k in sampling}
            sampler = GrammarSampler(
                llama, gbnf, eog=loaded.eog(), temperature=temperature, seed=seed, **options
            )
            scope = generate_with(llama, sampler)
        try:
            with scope:
                result = llama.create_completion(
                    prompt=tokens,
                    max_tokens=max(1, max_tokens),
                    temperature=temperature,
                    stop=stop or None,
                    seed=seed,
                    **sampling,
                )
        except ValueError as exc:
            if "context window" in str(exc):
                raise ContextWindowError(f"{self.model}: {exc}", model=self.model) from None
            raise ProviderError(f"{self.model}: {exc}", model=self.model) from None
        except RuntimeError as exc:
            raise ProviderError(
                f"{self.model}: llama.cpp failed: {exc}", model=self.model
            ) from None
        if not isinstance(result, dict):
            raise LMError(f"{self.model}: unexpected streaming result from llama.cpp")
        return result

    def __repr__(self) -> str:
        return f"LocalBackend({self.model!r})"


class _Log:
    def __init__(self) -> None:
        self.data = b""

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[_Log]:
    """Capture what native code writes to stderr (llama.cpp logs while loading)."""
    log = _Log()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield log
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield log
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            log.data = sink.read()


def _flatten(messages: list[Message]) -> str:
    """A chat transcript as plain text for models without a chat template."""
    lines = [
        f"{str(m.get('role', 'user')).capitalize()}: {_content(m.get('content'))}" for m in messages
    ]
    return "\n\n".join([*lines, "Assistant:"])


def _content(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)
