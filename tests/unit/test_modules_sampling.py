"""BestOfN and Refine: distinct rollouts, thresholds, failures, feedback, save/load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import BestOfN, ChainOfThought, Refine
from lmforge.predict import request_config
from lmforge.testing import FunctionLM, ScriptedLM


def reply(**fields: Any) -> str:
    body = "".join(
        f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
        for k, v in fields.items()
    )
    return body + "[[ ## completed ## ]]"


def length_reward(inputs: dict[str, Any], prediction: lf.Prediction) -> float:
    return float(len(prediction.answer))


def by_rollout(request: lf.LMRequest) -> str:
    """A different answer per rollout: '', 'a', 'aa', ... (rollout 0 = plain call)."""
    return reply(answer="a" * (request.rollout_id or 0) or "-")


def test_best_of_n_stops_at_the_threshold_with_distinct_rollouts() -> None:
    lm = FunctionLM(by_rollout)
    program = BestOfN(lf.Predict("question -> answer"), n=5, reward=length_reward, threshold=2)
    with lf.use(lm=lm):
        prediction = program(question="q")
    assert prediction.answer == "aa"
    assert [r.rollout_id for r in lm.calls] == [None, 1, 2]
    assert [r.params.get("temperature") for r in lm.calls] == [None, 1.0, 1.0]


def test_best_of_n_never_reaching_the_threshold_returns_the_best() -> None:
    lm = FunctionLM(lambda r: reply(answer=["bb", "a", "ccc", "d"][r.rollout_id or 0]))
    program = BestOfN(lf.Predict("question -> answer"), n=4, reward=length_reward, threshold=10)
    with lf.use(lm=lm):
        prediction = program(question="q")
    assert prediction.answer == "ccc"
    assert len(lm.calls) == 4
    assert len({r.rollout_id for r in lm.calls}) == 4


def test_distinct_rollouts_defeat_the_response_cache(tmp_path: Path) -> None:
    lm = FunctionLM(by_rollout, cache=tmp_path / "cache")
    program = BestOfN(lf.Predict("question -> answer"), n=3, reward=length_reward, threshold=99)
    with lf.use(lm=lm):
        assert program(question="q").answer == "aa"
        assert program(question="q").answer == "aa"
    assert len(lm.calls) == 3  # the second run was answered from the cache, attempt by attempt


def test_failed_attempts_are_skipped_until_fail_count() -> None:
    def flaky(request: lf.LMRequest) -> Any:
        if (request.rollout_id or 0) < 2:
            return lf.ProviderError("boom", model="test")
        return reply(answer="ok")

    program = BestOfN(lf.Predict("question -> answer"), n=3, reward=length_reward, threshold=1)
    with lf.use(lm=FunctionLM(flaky)):
        assert program(question="q").answer == "ok"
    strict = BestOfN(
        lf.Predict("question -> answer"), n=3, reward=length_reward, threshold=1, fail_count=1
    )
    with lf.use(lm=FunctionLM(flaky)), pytest.raises(lf.ProviderError):
        strict(question="q")


def test_usage_errors_are_not_retried() -> None:
    lm = FunctionLM(lambda r: reply(answer="x"))
    program = BestOfN(lf.Predict("question -> answer"), n=3, reward=length_reward, threshold=9)
    with lf.use(lm=lm), pytest.raises(lf.UsageError, match="missing input"):
        program(query="wrong name")
    assert lm.calls == []


def test_all_attempts_failing_raises_the_last_error() -> None:
    lm = FunctionLM(lambda r: lf.ProviderError(f"boom {r.rollout_id}", model="test"))
    program = BestOfN(lf.Predict("question -> answer"), n=2, reward=length_reward, threshold=1)
    with lf.use(lm=lm), pytest.raises(lf.ProviderError, match="boom 1"):
        program(question="q")


def test_request_config_reaches_every_inner_predictor_and_trace_points_at_them() -> None:
    lm = FunctionLM(lambda r: reply(reasoning="r", answer="x" * (r.rollout_id or 0) or "-"))
    inner = ChainOfThought("question -> answer")
    program = BestOfN(inner, n=3, reward=length_reward, threshold=2)
    with lf.use(lm=lm), lf.track() as tracker:
        program(question="q")
    assert {r.predictor for r in tracker.predictions} == {inner.predict}
    assert [n for n, _ in program.named_predictors()] == ["module.predict"]


def test_explicit_call_config_overrides_the_scope() -> None:
    lm = FunctionLM(lambda r: reply(answer="x"))
    predict = lf.Predict("question -> answer", temperature=0.0)
    with lf.use(lm=lm), request_config(temperature=0.7, rollout_id=3):
        predict(question="q")
        predict(question="q", config={"temperature": 0.2})
    assert [(r.params["temperature"], r.rollout_id) for r in lm.calls] == [(0.7, 3), (0.2, 3)]
    with pytest.raises(lf.UsageError, match="unknown option"), request_config(tempreature=1):
        pass


async def test_best_of_n_async_and_batch() -> None:
    program = BestOfN(lf.Predict("question -> answer"), n=4, reward=length_reward, threshold=3)
    with lf.use(lm=FunctionLM(by_rollout)):
        assert (await program.acall(question="q")).answer == "aaa"
        results = program.batch([{"question": "a"}, {"question": "b"}], concurrency=2)
    assert [r.answer for r in results] == ["aaa", "aaa"]


def test_refine_feeds_advice_from_the_failed_attempt_into_the_next() -> None:
    requests: list[lf.LMRequest] = []

    def fake(request: lf.LMRequest) -> str:
        requests.append(request)
        system = request.messages[0]["content"]
        if "`advice`" in system:
            return reply(advice="Answer with more letters.")
        if "more letters" in system:
            return reply(answer="abcdef")
        return reply(answer="a")

    program = Refine(lf.Predict("question -> answer"), n=3, reward=length_reward, threshold=5)
    with lf.use(lm=FunctionLM(fake)), lf.track() as tracker:
        prediction = program(question="q")
    assert prediction.answer == "abcdef"
    assert len(requests) == 3  # attempt, feedback, attempt with advice
    feedback_prompt = requests[1].messages[-1]["content"]
    assert '"answer": "a"' in feedback_prompt and "[[ ## reward ## ]]\n1.0" in feedback_prompt
    assert (
        "Advice from reviewing an earlier attempt: Answer with more letters."
        in requests[2].messages[0]["content"]
    )
    assert requests[2].rollout_id == 1
    assert "Advice" not in program.module.signature.instructions  # the module itself is unchanged
    assert program.feedback in {r.predictor for r in tracker.predictions}
    assert [n for n, _ in program.named_predictors()] == ["module", "feedback"]


async def test_refine_async_never_reaching_the_threshold() -> None:
    def fake(request: lf.LMRequest) -> str:
        if "`advice`" in request.messages[0]["content"]:
            return reply(advice="try harder")
        return reply(answer="x" * ((request.rollout_id or 0) + 1))

    program = Refine(lf.Predict("question -> answer"), n=3, reward=length_reward, threshold=10)
    lm = FunctionLM(fake)
    with lf.use(lm=lm):
        prediction = await program.acall(question="q")
    assert prediction.answer == "xxx"
    assert len(lm.calls) == 5  # three attempts, two feedback steps (none after the last)


def test_constructor_errors() -> None:
    with pytest.raises(lf.UsageError, match="n >= 1"):
        BestOfN(lf.Predict("q -> a"), n=0, reward=length_reward, threshold=1)
    with pytest.raises(lf.UsageError, match=r"wraps an lf\.Module"):
        BestOfN("q -> a", n=2, reward=length_reward, threshold=1)  # type: ignore[arg-type]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    program = Refine(ChainOfThought("question -> answer"), n=3, reward=length_reward, threshold=4)
    path = tmp_path / "refine.json"
    program.save(path)
    loaded = lf.load(path)
    assert isinstance(loaded, Refine)
    assert (loaded.n, loaded.threshold, loaded.reward) == (3, 4.0, length_reward)
    assert isinstance(loaded.module, ChainOfThought)
    lm = ScriptedLM([reply(reasoning="r", answer="long answer")])
    with lf.use(lm=lm):
        assert loaded(question="q").answer == "long answer"


def test_local_reward_functions_cannot_be_reloaded(tmp_path: Path) -> None:
    program = BestOfN(lf.Predict("q -> a"), n=2, reward=lambda i, p: 1.0, threshold=1)
    path = tmp_path / "best.json"
    program.save(path)
    with pytest.raises(lf.ArtifactError, match="lambda"):
        lf.load(path)
