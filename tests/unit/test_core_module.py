"""Modules: sync and async calls, ``lf.use`` scoping across threads and tasks, ``batch``
and ``abatch``, predictor discovery, copies and state."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import lmforge as lf
import pytest
from lmforge import settings
from lmforge.lm.types import LMRequest
from lmforge.testing import FunctionLM, ScriptedLM


def echo_lm(tag: str = "", delay: float = 0.0) -> FunctionLM:
    """Answers with the question's text (and a tag), after an optional random delay."""

    def answer(request: LMRequest) -> str:
        if delay:
            time.sleep(random.uniform(0, delay))
        content = str((request.messages or ({},))[-1].get("content", ""))
        question = content.split("[[ ## question ## ]]\n", 1)[1].split("\n", 1)[0]
        if question.startswith("fail"):
            raise lf.ProviderError(f"cannot answer {question}")
        return f"[[ ## answer ## ]]\n{tag}{question}"

    return FunctionLM(answer)


class Pipeline(lf.Module):
    def __init__(self) -> None:
        self.first = lf.Predict("question -> answer")
        self.steps = [lf.Predict("question -> answer"), lf.Predict("question -> answer")]
        self.by_name = {"x": lf.Predict("question -> answer")}
        self._private = lf.Predict("question -> answer")

    def forward(self, question: str) -> lf.Prediction:
        answer = self.first(question=question).answer
        for step in self.steps:
            answer = step(question=answer).answer
        return self.by_name["x"](question=answer)


# -- sync and async ---------------------------------------------------------------------


async def test_async_and_sync_paths_give_the_same_results() -> None:
    sig = "question -> answer: int, label: Literal['a', 'b']"
    lm = ScriptedLM(
        {
            "q1": "[[ ## answer ## ]]\n1\n[[ ## label ## ]]\na",
            "q2": "[[ ## answer ## ]]\n2\n[[ ## label ## ]]\nB",
        }
    )
    predictor = lf.Predict(sig, lm=lm)
    sync = [predictor(question=q) for q in ("q1", "q2")]
    asynchronous = [await predictor.acall(question=q) for q in ("q1", "q2")]
    assert sync == asynchronous
    assert [dict(p) for p in sync] == [{"answer": 1, "label": "a"}, {"answer": 2, "label": "b"}]
    assert lm.calls[0] == lm.calls[2] and lm.calls[1] == lm.calls[3]  # identical requests


async def test_batch_and_abatch_agree() -> None:
    predictor = lf.Predict("question -> answer", lm=echo_lm())
    items = [{"question": f"q{i}"} for i in range(12)] + [{"question": "fail-1"}]
    sync = predictor.batch(items, concurrency=4)
    asynchronous = await predictor.abatch(items, concurrency=4)
    assert (
        [r.answer for r in sync[:-1]]
        == [r.answer for r in asynchronous[:-1]]
        == [f"q{i}" for i in range(12)]
    )
    assert isinstance(sync[-1], lf.BatchError) and isinstance(asynchronous[-1], lf.BatchError)
    assert str(sync[-1]) == str(asynchronous[-1])


async def test_custom_module_without_aforward_runs_async() -> None:
    program = Pipeline()
    with lf.use(lm=echo_lm()):
        result = await program.acall(question="deep")
        assert result == program(question="deep")
    assert result.answer == "deep"


async def test_async_function_lm() -> None:
    async def answer(request: LMRequest) -> str:
        await asyncio.sleep(0)
        return "[[ ## answer ## ]]\nawaited"

    predictor = lf.Predict("question -> answer", lm=FunctionLM(answer))
    assert (await predictor.acall(question="x")).answer == "awaited"
    with pytest.raises(lf.UsageError, match="acall"):
        predictor(question="x")


# -- lf.use scoping ---------------------------------------------------------------------


def test_use_is_scoped_and_restored() -> None:
    lm_a, lm_b = echo_lm("A:"), echo_lm("B:")
    predictor = lf.Predict("question -> answer")
    with lf.use(lm=lm_a):
        assert predictor(question="1").answer == "A:1"
        with lf.use(lm=lm_b):
            assert predictor(question="2").answer == "B:2"
        assert predictor(question="3").answer == "A:3"
    with pytest.raises(lf.UsageError, match="no LM configured"):
        predictor(question="4")


def test_predictor_lm_beats_scope_lm() -> None:
    own, scoped = echo_lm("own:"), echo_lm("scoped:")
    with lf.use(lm=scoped):
        assert lf.Predict("question -> answer", lm=own)(question="x").answer == "own:x"


def test_use_isolated_across_threads() -> None:
    predictor = lf.Predict("question -> answer")
    barrier = threading.Barrier(2)
    seen: dict[str, list[str]] = {}

    def worker(tag: str) -> None:
        with lf.use(lm=echo_lm(f"{tag}:")):
            barrier.wait()  # both threads are inside their own scope now
            seen[tag] = [predictor(question=str(i)).answer for i in range(5)]
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"A": [f"A:{i}" for i in range(5)], "B": [f"B:{i}" for i in range(5)]}
    assert settings.current().lm is None


def test_threads_do_not_inherit_scope_of_other_threads() -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            lf.Predict("question -> answer")(question="x")
        except BaseException as exc:
            errors.append(exc)

    with lf.use(lm=echo_lm()):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], lf.UsageError)


async def test_use_isolated_across_asyncio_tasks() -> None:
    predictor = lf.Predict("question -> answer")

    async def task(tag: str) -> list[str]:
        with lf.use(lm=echo_lm(f"{tag}:")):
            out = []
            for i in range(5):
                await asyncio.sleep(0)  # interleave with the other task
                out.append((await predictor.acall(question=str(i))).answer)
            return out

    a, b = await asyncio.gather(task("A"), task("B"))
    assert a == [f"A:{i}" for i in range(5)] and b == [f"B:{i}" for i in range(5)]


def test_batch_workers_inherit_settings_and_trackers() -> None:
    predictor = lf.Predict("question -> answer")
    items = [{"question": str(i)} for i in range(16)]
    with lf.use(lm=echo_lm("scoped:", delay=0.002)), lf.track() as t:
        results = predictor.batch(items, concurrency=4)
    assert [r.answer for r in results] == [f"scoped:{i}" for i in range(16)]
    assert len(t.calls) == 16 and len(t.predictions) == 16


def test_use_rejects_unknown_keys_and_bad_values() -> None:
    unknown = r"unknown setting.*lmm.*known settings are: adapter, cache, lm"
    with pytest.raises(lf.UsageError, match=unknown), lf.use(lmm=echo_lm()):
        pass
    with pytest.raises(lf.UsageError, match="max_concurrency"), lf.use(max_concurrency=0):
        pass
    with (
        pytest.raises(lf.UsageError, match="cache must be True or False, got 'false'"),
        lf.use(cache="false"),
    ):
        pass
    predictor = lf.Predict("question -> answer", lm=echo_lm())
    for bad in ("4", 0, 2.5, True):
        with pytest.raises(lf.UsageError, match=f"concurrency must be an int.*got {bad!r}"):
            predictor.batch([{"question": "q"}], concurrency=bad)  # type: ignore[arg-type]


def test_use_adapter_and_max_concurrency() -> None:
    lm = FunctionLM(
        lambda r: '{"answer": "json"}' if r.response_format else "[[ ## answer ## ]]\nchat"
    )
    predictor = lf.Predict("question -> answer", lm=lm)
    with lf.use(adapter=lf.JSONAdapter()) as scoped:
        assert predictor(question="x").answer == "json"
        assert scoped.adapter == lf.JSONAdapter()
    assert predictor(question="x").answer == "chat"
    with lf.use(max_concurrency=3):
        assert settings.current().max_concurrency == 3


# -- batch ------------------------------------------------------------------------------


def test_batch_keeps_order_and_collects_errors() -> None:
    predictor = lf.Predict("question -> answer", lm=echo_lm(delay=0.003))
    items: list[Any] = [{"question": f"q{i}"} for i in range(20)]
    items[3] = {"question": "fail-3"}
    items[11] = lf.Example(question="fail-11", answer="gold").with_inputs("question")
    items[12] = lf.Example(question="q12", answer="gold").with_inputs("question")
    seen: list[int] = []
    results = predictor.batch(items, concurrency=6, on_result=lambda i, r: seen.append(i))
    assert len(results) == 20 and sorted(seen) == list(range(20))
    for i, result in enumerate(results):
        if i in (3, 11):
            assert isinstance(result, lf.BatchError)
            assert result.index == i
            assert isinstance(result.error, lf.ProviderError)
            assert result.inputs == {"question": f"fail-{i}"}
            assert f"item {i} failed" in str(result)
        else:
            assert isinstance(result, lf.Prediction) and result.answer == f"q{i}"


def test_batch_bounded_concurrency() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def answer(request: LMRequest) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.005)
        with lock:
            active -= 1
        return "[[ ## answer ## ]]\nok"

    lf.Predict("question -> answer", lm=FunctionLM(answer)).batch(
        [{"question": str(i)} for i in range(24)], concurrency=3
    )
    assert 1 < peak <= 3


async def test_abatch_bounded_concurrency_and_order() -> None:
    active = 0
    peak = 0

    async def answer(request: LMRequest) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001 * random.randint(0, 3))
        active -= 1
        content = str((request.messages or ({},))[-1]["content"])
        return "[[ ## answer ## ]]\n" + content.split("\n")[1]

    predictor = lf.Predict("question -> answer", lm=FunctionLM(answer))
    results = await predictor.abatch([{"question": f"n{i}"} for i in range(20)], concurrency=4)
    assert [r.answer for r in results] == [f"n{i}" for i in range(20)]
    assert 1 < peak <= 4


def test_batch_raise_errors() -> None:
    predictor = lf.Predict("question -> answer", lm=echo_lm())
    items = [{"question": "ok"}, {"question": "fail-now"}, {"question": "ok2"}]
    with pytest.raises(lf.ProviderError, match="fail-now"):
        predictor.batch(items, concurrency=2, raise_errors=True)
    with pytest.raises(lf.ProviderError, match="fail-now"):
        predictor.batch(items, concurrency=1, raise_errors=True)


async def test_abatch_raise_errors() -> None:
    predictor = lf.Predict("question -> answer", lm=echo_lm())
    with pytest.raises(lf.ProviderError):
        await predictor.abatch([{"question": "fail"}], raise_errors=True)


def test_batch_input_mistakes() -> None:
    predictor = lf.Predict("question -> answer", lm=echo_lm())
    with pytest.raises(lf.UsageError, match=r"dicts or lf\.Example"):
        predictor.batch(["just a string"])  # type: ignore[list-item]
    with pytest.raises(lf.UsageError, match="at least 1"):
        predictor.batch([{"question": "x"}], concurrency=0)
    results = predictor.batch([{"q": "wrong key"}])
    assert isinstance(results[0], lf.BatchError) and isinstance(results[0].error, lf.UsageError)
    assert predictor.batch([]) == []


# -- structure, copies and state --------------------------------------------------------


def test_named_predictors_walks_attributes_lists_and_dicts() -> None:
    program = Pipeline()
    names = [name for name, _ in program.named_predictors()]
    assert names == ["first", "steps[0]", "steps[1]", "by_name['x']"]
    assert lf.Predict("a -> b").named_predictors()[0][0] == "self"


def test_set_lm_deepcopy_and_reset_copy() -> None:
    program = Pipeline()
    lm = echo_lm()
    program.set_lm(lm)
    program.first.demos = [{"question": "d", "answer": "e"}]
    clone = program.deepcopy()
    assert clone.first is not program.first and clone.first.lm is lm  # LMs are shared
    clone.first.demos = []
    assert program.first.demos == ({"question": "d", "answer": "e"},)
    reset = program.reset_copy()
    assert all(p.demos == () for p in reset.predictors())
    assert reset(question="hi").answer == "hi"


def test_state_and_load_state_round_trip() -> None:
    program = Pipeline()
    program.first.demos = [{"question": "d", "answer": "e"}]
    program.steps[1].signature = program.steps[1].signature.with_instructions("Be terse.")
    fresh = Pipeline()
    fresh.load_state(program.state())
    assert fresh.first.demos == ({"question": "d", "answer": "e"},)
    assert fresh.steps[1].signature.instructions == "Be terse."
    with pytest.raises(lf.UsageError, match="does not have"):
        fresh.load_state({"nope": program.first.dump_state()})
    bad = program.state()
    bad["steps[0]"] = {"signature": {"fields": "not a list"}}
    fresh.first.demos = []
    with pytest.raises(lf.ArtifactError):
        fresh.load_state(bad)
    assert fresh.first.demos == ()  # all or nothing: the valid "first" state was not applied


def test_call_mistakes_give_usage_errors() -> None:
    predictor = lf.Predict("question, context -> answer", lm=echo_lm())
    with pytest.raises(lf.UsageError, match=r"by name.*question=\.\.\., context=\.\.\."):
        predictor("what?")
    with pytest.raises(lf.UsageError, match=r"missing input\(s\) \['context'\]"):
        predictor(question="what?")
    with pytest.raises(lf.UsageError, match=r"unexpected input\(s\) \['extra'\]"):
        predictor(question="q", context="c", extra=1)
    with pytest.raises(lf.UsageError, match="unknown option"):
        lf.Predict("q -> a", temprature=0)
    with pytest.raises(lf.UsageError, match="must implement forward"):
        lf.Module()(question="x")


def test_per_call_config_reaches_the_request() -> None:
    lm = echo_lm()
    predictor = lf.Predict("question -> answer", lm=lm, temperature=0.0)
    predictor(question="a", config={"temperature": 0.7, "seed": 3})
    predictor(question="b")
    assert lm.calls[0].params["temperature"] == 0.7 and lm.calls[0].params["seed"] == 3
    assert lm.calls[1].params["temperature"] == 0.0
