"""The LM layer: cache, retries, error translation at the litellm boundary, usage and cost
accounting in ``lf.track``, and ``lf.inspect``."""

from __future__ import annotations

import io
import json
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lmforge as lf
import pytest
from lmforge.lm import litellm_backend
from lmforge.lm.types import LMRequest, LMResponse, Usage
from lmforge.testing import FunctionLM, ScriptedLM

ANSWER = "[[ ## answer ## ]]\nfine"
SECRET = "sk-test-SECRET-0123456789abcdef"


def reply(request: LMRequest) -> str:
    return '{"answer": "fine"}' if request.response_format else ANSWER


def cached_lm(**kwargs: Any) -> FunctionLM:
    return FunctionLM(reply, cache=True, **kwargs)


# -- cache ------------------------------------------------------------------------------


def test_second_identical_call_is_a_cache_hit() -> None:
    lm = cached_lm()
    predictor = lf.Predict("question -> answer", lm=lm)
    with lf.track() as t:
        first = predictor(question="how are you?")
        second = predictor(question="how are you?")
    assert first == second
    assert len(lm.calls) == 1
    assert [c.cache_hit for c in t.calls] == [False, True]
    assert (t.totals()["lm_calls"], t.totals()["cache_hits"]) == (1, 1)


def test_parameter_change_misses_the_cache() -> None:
    lm = cached_lm()
    predictor = lf.Predict("question -> answer", lm=lm)
    with lf.track() as t:
        predictor(question="q")
        predictor(question="q", config={"temperature": 0.9})
        predictor(question="q", config={"temperature": 0.9})
        predictor(question="other")
        predictor(question="q", config={"rollout_id": 1})
        lf.Predict("question -> answer", lm=lm, max_tokens=5)(question="q")
        lf.Predict("question -> answer", lm=lm, adapter=lf.JSONAdapter())(question="q")
    assert [c.cache_hit for c in t.calls] == [False, False, True, False, False, False, False]
    assert len(lm.calls) == 6


def test_different_model_misses_the_cache() -> None:
    a = cached_lm(model="test/a")
    b = cached_lm(model="test/b")
    lf.Predict("question -> answer", lm=a)(question="q")
    lf.Predict("question -> answer", lm=b)(question="q")
    assert (len(a.calls), len(b.calls)) == (1, 1)


def test_cache_off_per_lm_and_per_scope() -> None:
    off = FunctionLM(lambda r: ANSWER, cache=False)
    for _ in range(2):
        lf.Predict("question -> answer", lm=off)(question="q")
    assert len(off.calls) == 2

    on = cached_lm()
    predictor = lf.Predict("question -> answer", lm=on)
    predictor(question="q")
    with lf.use(cache=False), lf.track() as t:
        predictor(question="q")
    assert len(on.calls) == 2 and not t.calls[0].cache_hit
    predictor(question="q")  # the scope ended: the cache answers again
    assert len(on.calls) == 2


def test_cache_lives_in_lmforge_cache_dir_created_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "my-cache"
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(cache_dir))
    lm = cached_lm(api_key=SECRET)
    assert not cache_dir.exists()  # nothing is created before the first call
    lf.Predict("question -> answer", lm=lm)(question="what is the key?")
    assert lm.cache is not None and lm.cache.directory.is_relative_to(cache_dir)
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in json.dumps(lm.calls[0].to_json())
    assert len(lm.cache) == 1


def test_explicit_cache_directory(tmp_path: Path) -> None:
    lm = FunctionLM(lambda r: ANSWER, cache=tmp_path / "explicit")
    lf.Predict("question -> answer", lm=lm)(question="q")
    lf.Predict("question -> answer", lm=lm)(question="q")
    assert len(lm.calls) == 1
    assert (tmp_path / "explicit").is_dir()


def test_credentials_are_refused_as_request_defaults() -> None:
    with pytest.raises(lf.UsageError, match="api_key="):
        lf.LM("openai/gpt-4o-mini", token="abc")
    with pytest.raises(lf.UsageError, match=r"extra_headers\['Authorization'\] looks like a cred"):
        lf.LM("openai/gpt-4o-mini", extra_headers={"Authorization": f"Bearer {SECRET}"})
    with pytest.raises(lf.UsageError, match="api_key="):
        FunctionLM(lambda request: "x", extra_body={"auth": {"api_key": SECRET}})
    with pytest.raises(lf.UsageError, match="api_key="):
        lf.LM("openai/gpt-4o-mini").copy(extra_headers={"x-api-key": SECRET})
    for header in ("Cookie", "Proxy-Authorization", "Set-Cookie"):
        with pytest.raises(lf.UsageError, match=rf"extra_headers\['{header}'\] looks like a cred"):
            lf.LM("openai/gpt-4o-mini", extra_headers={header: f"session={SECRET}"})
    # Ordinary settings that merely contain such words stay allowed.
    lf.LM("openai/gpt-4o-mini", max_tokens=5, cookie_jar_size=1)
    lm = lf.LM("openai/gpt-4o-mini", api_key=SECRET, cache=False)
    assert SECRET not in json.dumps(lm.config())
    assert SECRET not in repr(lm)
    request = lm.request(messages=[{"role": "user", "content": "hi"}])
    assert SECRET not in json.dumps(request.to_json())


def test_cache_is_shared_safely_by_threads() -> None:
    lm = cached_lm()
    predictor = lf.Predict("question -> answer", lm=lm)
    items = [{"question": f"q{i % 5}"} for i in range(40)]
    results = predictor.batch(items, concurrency=8)
    assert all(isinstance(r, lf.Prediction) for r in results)
    assert 5 <= len(lm.calls) <= 40
    with lf.track() as t:
        predictor.batch(items, concurrency=8)
    assert t.cache_hits == 40 and len(lm.calls) <= 40


def test_cache_is_shared_safely_by_processes(tmp_path: Path, python: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        import lmforge as lf
        from lmforge.testing import FunctionLM
        lm = FunctionLM(lambda r: "[[ ## answer ## ]]\\nok", cache=sys.argv[1])
        p = lf.Predict("question -> answer", lm=lm)
        for i in range(30):
            p(question=f"q{i}")
        print(len(lm.calls))
        """
    )
    cache = str(tmp_path / "shared")
    procs = [
        subprocess.Popen(
            [python, "-c", script, cache], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    third = subprocess.run(
        [python, "-c", script, cache], capture_output=True, text=True, timeout=60
    )
    assert third.returncode == 0, third.stderr
    assert third.stdout.strip() == "0"  # every answer was stored intact by the first two


# -- retries ----------------------------------------------------------------------------


def flaky(errors: list[BaseException], reply: str = ANSWER) -> FunctionLM:
    remaining = list(errors)

    def answer(request: LMRequest) -> str:
        if remaining:
            raise remaining.pop(0)
        return reply

    return FunctionLM(answer)


def test_rate_limit_is_retried_after_retry_after() -> None:
    sleeps: list[float] = []
    lm = flaky([lf.RateLimitError("slow down", retry_after=7.0)], ANSWER)
    lm.retry = lf.RetryPolicy(sleep=sleeps.append)
    with lf.track() as t:
        result = lf.Predict("question -> answer", lm=lm)(question="q")
    assert result.answer == "fine"
    assert sleeps == [7.0]
    assert len(lm.calls) == 2
    assert t.totals()["errors"] == 0 and t.lm_calls == 1


def test_authentication_error_is_not_retried() -> None:
    sleeps: list[float] = []
    lm = flaky([lf.AuthenticationError("bad key", status_code=401)])
    lm.retry = lf.RetryPolicy(sleep=sleeps.append)
    with lf.track() as t, pytest.raises(lf.AuthenticationError):
        lf.Predict("question -> answer", lm=lm)(question="q")
    assert sleeps == [] and len(lm.calls) == 1
    assert t.errors == 1 and t.calls[0].error == "AuthenticationError"


@pytest.mark.parametrize(
    "error",
    [
        lf.ContextWindowError("too long"),
        lf.ProviderError("bad request", status_code=400),
        lf.LMError("generic"),
    ],
)
def test_permanent_errors_are_not_retried(error: lf.LMError) -> None:
    sleeps: list[float] = []
    lm = flaky([error])
    lm.retry = lf.RetryPolicy(sleep=sleeps.append)
    with pytest.raises(type(error)):
        lf.Predict("question -> answer", lm=lm)(question="q")
    assert sleeps == [] and len(lm.calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        lf.ProviderError("503", status_code=503, retryable=True),
        lf.LMTimeoutError("timed out"),
        lf.RateLimitError("429"),
    ],
)
def test_transient_errors_are_retried_with_backoff(error: lf.LMError) -> None:
    sleeps: list[float] = []
    lm = flaky([error, error])
    lm.retry = lf.RetryPolicy(sleep=sleeps.append, base_delay=1.0, jitter=0.25)
    assert lf.Predict("question -> answer", lm=lm)(question="q").answer == "fine"
    assert len(sleeps) == 2
    assert 0.75 <= sleeps[0] <= 1.25 and 1.5 <= sleeps[1] <= 2.5


def test_attempts_are_bounded() -> None:
    sleeps: list[float] = []
    lm = flaky([lf.RateLimitError("429", retry_after=1.0)] * 10)
    lm.retry = lf.RetryPolicy(max_attempts=3, sleep=sleeps.append)
    with lf.track() as t, pytest.raises(lf.RateLimitError):
        lf.Predict("question -> answer", lm=lm)(question="q")
    assert len(lm.calls) == 3 and sleeps == [1.0, 1.0]
    assert t.errors == 1


def test_total_wait_is_bounded_and_retry_after_is_capped() -> None:
    sleeps: list[float] = []
    lm = flaky([lf.RateLimitError("429", retry_after=500.0)] * 10)
    lm.retry = lf.RetryPolicy(max_delay=20.0, max_total_seconds=50.0, sleep=sleeps.append)
    with pytest.raises(lf.RateLimitError):
        lf.Predict("question -> answer", lm=lm)(question="q")
    assert sleeps == [20.0, 20.0]


def test_time_spent_in_failing_calls_counts_against_the_total() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def slow_failure(request: lf.LMRequest) -> str:
        now[0] += 40.0  # each attempt hangs 40 s before the provider answers 503
        raise lf.ProviderError("503", retryable=True)

    lm = FunctionLM(slow_failure)
    lm.retry = lf.RetryPolicy(
        base_delay=1.0,
        jitter=0.0,
        max_total_seconds=100.0,
        sleep=sleeps.append,
        clock=lambda: now[0],
    )
    with pytest.raises(lf.ProviderError):
        lf.Predict("question -> answer", lm=lm)(question="q")
    # 40 s + 1 s wait + 40 s + 2 s wait = 83 s; a third wait would pass 100 s after call 3.
    assert len(lm.calls) == 3 and sleeps == [1.0, 2.0]


def test_retry_count_shorthand() -> None:
    lm = FunctionLM(lambda r: ANSWER, retry=2)
    assert lm.retry.max_attempts == 2


async def test_async_retry_uses_async_sleep() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    lm = flaky([lf.RateLimitError("429", retry_after=3.0)])
    lm.retry = lf.RetryPolicy(
        async_sleep=fake_sleep, sleep=lambda s: pytest.fail("sync sleep in async path")
    )
    result = await lf.Predict("question -> answer", lm=lm).acall(question="q")
    assert result.answer == "fine" and slept == [3.0]


# -- litellm error translation ----------------------------------------------------------


class _FakeHTTPResponse:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def _fake_error(
    name: str, status: int | None = None, headers: dict[str, str] | None = None
) -> Exception:
    cls = type(name, (Exception,), {})
    error = cls(f"{name} from the provider\nwith a second line")
    if status is not None:
        error.status_code = status  # type: ignore[attr-defined]
    if headers is not None:
        error.response = _FakeHTTPResponse(headers)  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("exc", "kind", "retryable", "retry_after"),
    [
        (_fake_error("RateLimitError", 429, {"retry-after": "12"}), lf.RateLimitError, True, 12.0),
        (_fake_error("RateLimitError", 429, {"Retry-After": "2.5"}), lf.RateLimitError, True, 2.5),
        (
            _fake_error("RateLimitError", 429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            lf.RateLimitError,
            True,
            None,
        ),
        (_fake_error("AuthenticationError", 401), lf.AuthenticationError, False, None),
        (_fake_error("PermissionDeniedError", 403), lf.AuthenticationError, False, None),
        (_fake_error("ContextWindowExceededError", 400), lf.ContextWindowError, False, None),
        (_fake_error("APIConnectionError", 500), lf.ProviderError, True, None),
        (_fake_error("InternalServerError", 500), lf.ProviderError, True, None),
        (_fake_error("SomethingElse", 502, {"retry-after": "4"}), lf.ProviderError, True, 4.0),
        (_fake_error("Timeout", 408), lf.LMTimeoutError, True, None),
        (_fake_error("BadRequestError", 400), lf.ProviderError, False, None),
        (_fake_error("NotFoundError", 404), lf.ProviderError, False, None),
    ],
)
def test_translate_error(
    exc: Exception, kind: type[lf.LMError], retryable: bool, retry_after: float | None
) -> None:
    error = litellm_backend.translate_error(exc, "openai/gpt-4o-mini")
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.retry_after == retry_after
    assert error.model == "openai/gpt-4o-mini"
    assert error.status_code == getattr(exc, "status_code", None)
    assert "openai/gpt-4o-mini" in str(error) and type(exc).__name__ in str(error)


def test_translate_error_by_subclass_name() -> None:
    base = type("RateLimitError", (Exception,), {})
    sub = type("ProviderSpecificRateLimit", (base,), {})
    assert isinstance(litellm_backend.translate_error(sub("x"), "m"), lf.RateLimitError)


class _FakeLiteLLM:
    """Stands in for the litellm module at the backend boundary."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.kwargs: list[dict[str, Any]] = []
        self.used: list[str] = []

    def _answer(self, name: str, kwargs: dict[str, Any]) -> Any:
        self.used.append(name)
        self.kwargs.append(kwargs)
        if self.error is not None:
            raise self.error
        message = SimpleNamespace(content=ANSWER, tool_calls=None)
        return SimpleNamespace(
            choices=[SimpleNamespace(message=message, finish_reason="stop")],
            usage=SimpleNamespace(prompt_tokens=11, completion_tokens=3),
            model="gpt-4o-mini-2024",
        )

    def completion(self, **kwargs: Any) -> Any:
        return self._answer("completion", kwargs)

    def text_completion(self, **kwargs: Any) -> Any:
        self.used.append("text_completion")
        self.kwargs.append(kwargs)
        choice = SimpleNamespace(text=" Paris\nCountry: France", finish_reason="stop")
        return SimpleNamespace(choices=[choice], usage=None, model=None)

    async def acompletion(self, **kwargs: Any) -> Any:
        return self._answer("acompletion", kwargs)


@pytest.fixture
def fake_litellm(monkeypatch: pytest.MonkeyPatch) -> _FakeLiteLLM:
    fake = _FakeLiteLLM()
    monkeypatch.setattr(litellm_backend, "_litellm", lambda: fake)
    monkeypatch.delenv("LMFORGE_BLOCK_NETWORK")
    return fake


def test_litellm_backend_sends_request_and_reads_response(fake_litellm: _FakeLiteLLM) -> None:
    lm = lf.LM("openai/gpt-4o-mini", api_key=SECRET, cache=False, temperature=0.1)
    with lf.track() as t:
        prediction = lf.Predict("question -> answer", lm=lm)(question="hi")
    assert prediction.answer == "fine"
    sent = fake_litellm.kwargs[0]
    assert fake_litellm.used == ["completion"]
    assert sent["model"] == "openai/gpt-4o-mini"
    assert sent["num_retries"] == 0 and sent["temperature"] == 0.1
    assert sent["api_key"] == SECRET
    assert sent["messages"][-1]["role"] == "user" and "hi" in sent["messages"][-1]["content"]
    assert "response_format" not in sent
    assert t.calls[0].prompt_tokens == 11 and t.calls[0].completion_tokens == 3
    assert t.calls[0].response is not None and t.calls[0].response.finish_reason == "stop"


async def test_litellm_async_path_is_native(fake_litellm: _FakeLiteLLM) -> None:
    lm = lf.LM("openai/gpt-4o-mini", cache=False)
    prediction = await lf.Predict("question -> answer", lm=lm).acall(question="hi")
    assert prediction.answer == "fine"
    assert fake_litellm.used == ["acompletion"]


def test_litellm_errors_are_translated_and_retried(fake_litellm: _FakeLiteLLM) -> None:
    fake_litellm.error = _fake_error("RateLimitError", 429, {"retry-after": "9"})
    sleeps: list[float] = []
    lm = lf.LM(
        "openai/gpt-4o-mini", cache=False, retry=lf.RetryPolicy(max_attempts=2, sleep=sleeps.append)
    )
    with pytest.raises(lf.RateLimitError) as info:
        lf.Predict("question -> answer", lm=lm)(question="hi")
    assert sleeps == [9.0] and len(fake_litellm.kwargs) == 2
    assert info.value.__cause__ is fake_litellm.error


def test_network_block_stops_real_provider_calls() -> None:
    lm = lf.LM("openai/gpt-4o-mini", cache=False)
    with pytest.raises(lf.UsageError, match="blocked"):
        lf.Predict("question -> answer", lm=lm)(question="hi")


# -- usage and cost ---------------------------------------------------------------------


def _litellm_price(model: str) -> tuple[float, float]:
    from lmforge.lm.pricing import _table

    entry = _table()[model]  # litellm.model_cost, its public price table
    return entry["input_cost_per_token"], entry["output_cost_per_token"]


def test_track_totals_tokens_and_cost() -> None:
    usage = iter([Usage(1000, 200), Usage(500, 50)])
    lm = FunctionLM(
        lambda r: LMResponse(texts=(ANSWER,), usage=next(usage)),
        model="openai/gpt-4o-mini",
        cache=True,
    )
    predictor = lf.Predict("question -> answer", lm=lm)
    with lf.track() as t:
        predictor(question="one")
        predictor(question="two")
        predictor(question="one")  # cache hit: no new tokens or cost
    price_in, price_out = _litellm_price("gpt-4o-mini")
    totals = t.totals()
    assert totals["calls"] == 3 and totals["lm_calls"] == 2 and totals["cache_hits"] == 1
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (1500, 250)
    assert totals["cost_usd"] == pytest.approx(1500 * price_in + 250 * price_out)
    assert t.calls[0].cost == pytest.approx(1000 * price_in + 200 * price_out)
    assert t.calls[0].latency >= 0 and t.calls[0].model == "openai/gpt-4o-mini"
    assert len(t.predictions) == 3 and t.predictions[0].inputs == {"question": "one"}
    assert totals["unpriced_calls"] == 0


def test_calls_without_a_known_price_are_counted_next_to_the_cost() -> None:
    priced = FunctionLM(
        lambda r: LMResponse(texts=(ANSWER,), usage=Usage(100, 10)), model="openai/gpt-4o-mini"
    )
    unpriced = FunctionLM(
        lambda r: LMResponse(texts=(ANSWER,), usage=Usage(100, 10)), model="test/unknown-model"
    )
    with lf.track() as t:
        lf.Predict("question -> answer", lm=priced)(question="a")
        lf.Predict("question -> answer", lm=unpriced)(question="b")
    assert t.cost is not None and t.cost > 0  # a lower bound: one call has no price
    assert t.unpriced_calls == 1 and t.totals()["unpriced_calls"] == 1


def test_unknown_model_cost_is_none_and_local_is_free() -> None:
    lm = FunctionLM(
        lambda r: LMResponse(texts=(ANSWER,), usage=Usage(10, 2)), model="test/unknown-model"
    )
    with lf.track() as t:
        lf.Predict("question -> answer", lm=lm)(question="q")
    assert t.cost is None and t.prompt_tokens == 10
    local = FunctionLM(
        lambda r: LMResponse(texts=(ANSWER,), usage=Usage(10, 2)), model="local/tiny"
    )
    with lf.track() as t:
        lf.Predict("question -> answer", lm=local)(question="q")
    assert t.cost == 0.0


def test_trackers_nest_and_record_messages_and_outputs() -> None:
    lm = ScriptedLM([ANSWER, ANSWER])
    predictor = lf.Predict("question -> answer", lm=lm)
    with lf.track() as outer:
        predictor(question="a")
        with lf.track() as inner:
            predictor(question="b")
    assert len(outer.calls) == 2 and len(inner.calls) == 1
    call = inner.calls[0]
    assert call.messages is not None and "b" in call.messages[-1]["content"]
    assert call.output == ANSWER
    with lf.track() as later:
        pass
    assert later.calls == []


# -- inspect ----------------------------------------------------------------------------


class TwoStep(lf.Module):
    def __init__(self) -> None:
        self.draft = lf.Predict("question -> draft")
        self.polish = lf.Predict("draft -> answer")

    def forward(self, question: str) -> lf.Prediction:
        draft = self.draft(question=question).draft
        return self.polish(draft=draft)


def test_inspect_returns_prompts_in_order() -> None:
    program = TwoStep()
    lm = ScriptedLM(["[[ ## draft ## ]]\nrough idea", "[[ ## answer ## ]]\npolished idea"])
    with lf.use(lm=lm):
        program(question="what is up?")
    out = io.StringIO()
    texts = lf.inspect(program, file=out)
    assert len(texts) == 2
    assert (
        texts[0].startswith("=== draft") and "what is up?" in texts[0] and "rough idea" in texts[0]
    )
    assert texts[1].startswith("=== polish") and "[[ ## draft ## ]]\nrough idea" in texts[1]
    assert texts[1].rstrip().endswith("polished idea")
    assert out.getvalue() == "".join(t + "\n\n" for t in texts)
    assert lf.inspect(program, n=1, show=False) == texts[1:]


def test_inspect_before_any_call_renders_templates() -> None:
    texts = lf.inspect(TwoStep(), show=False, inputs={"question": "real question"})
    assert len(texts) == 2
    assert "not called yet" in texts[0] and "real question" in texts[0]
    assert "{draft}" in texts[1]


def test_predictor_history_is_bounded_and_newest_last() -> None:
    predictor = lf.Predict("question -> answer", lm=ScriptedLM([ANSWER] * 12))
    for i in range(12):
        predictor(question=f"number {i}")
    history = predictor.history
    assert len(history) == 8
    assert history[-1].messages is not None and "number 11" in history[-1].messages[-1]["content"]


def test_json_adapter_response_format_reaches_litellm(fake_litellm: _FakeLiteLLM) -> None:
    fake_litellm.error = None
    lm = lf.LM("openai/gpt-4o-mini", cache=False)
    with pytest.raises(lf.ParseError):  # the fake answers in chat format, not JSON
        lf.Predict("question -> answer", lm=lm, adapter=lf.JSONAdapter())(question="hi")
    assert fake_litellm.kwargs[0]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    "text",
    [
        "litellm.InternalServerError: OpenAIException - Missing credentials. Pass an `api_key`",
        "The api_key client option must be set either by passing api_key to the client",
        "AnthropicException - API key is missing",
    ],
)
def test_missing_api_key_is_an_authentication_error_that_says_what_to_do(text: str) -> None:
    exc = type("InternalServerError", (Exception,), {})(text)
    exc.status_code = 500  # type: ignore[attr-defined]
    error = litellm_backend.translate_error(exc, "openai/gpt-4o-mini")
    assert type(error) is lf.AuthenticationError and not error.retryable
    assert "OPENAI_API_KEY" in str(error) and "api_key=" in str(error)


def test_translated_messages_are_one_line() -> None:
    error = litellm_backend.translate_error(_fake_error("BadRequestError", 400), "m")
    assert "\n" not in str(error) and "with a second line" in str(error)


def test_real_lm_with_api_key_writes_no_key_to_cache_or_artifact(
    fake_litellm: _FakeLiteLLM, tmp_path: Path
) -> None:
    lm = lf.LM("openai/gpt-4o-mini", api_key=SECRET, cache=tmp_path / "cache")
    predictor = lf.Predict("question -> answer", lm=lm)
    with lf.track() as t:
        predictor(question="hi")
        predictor(question="hi")
    assert [c.cache_hit for c in t.calls] == [False, True]
    assert fake_litellm.kwargs[0]["api_key"] == SECRET  # the key reached the provider only
    predictor.save(tmp_path / "program.json")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 1
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in repr(t.calls) and SECRET not in json.dumps(t.calls[0].request.to_json())


def test_litellm_text_completion_mode(fake_litellm: _FakeLiteLLM) -> None:
    lm = lf.LM("openai/gpt-3.5-turbo-instruct", model_type="text", cache=False)
    prediction = lf.Predict("question -> city, country", lm=lm)(question="Capital of France?")
    assert (prediction.city, prediction.country) == ("Paris", "France")
    assert fake_litellm.used == ["text_completion"]
    sent = fake_litellm.kwargs[0]
    assert "messages" not in sent
    assert sent["prompt"].endswith("Question: Capital of France?\nCity:")
    assert sent["stop"] == ["\n\n", "\nQuestion:"]


def test_unusable_cache_directory_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(blocker / "cache"))
    predictor = lf.Predict("question -> answer", lm=cached_lm())
    with pytest.raises(lf.UsageError, match=r"LMFORGE_CACHE_DIR.*cache=False") as info:
        predictor(question="q")
    assert "\n" not in str(info.value)
    with lf.use(cache=False):
        assert predictor(question="q").answer == "fine"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_retry_after_from_litellm_is_ignored(value: str) -> None:
    # time.sleep(nan) raises ValueError; the server's Retry-After int(inf) OverflowError.
    exc = _fake_error("RateLimitError", 429, {"retry-after": value})
    assert litellm_backend.translate_error(exc, "openai/gpt-4o-mini").retry_after is None
