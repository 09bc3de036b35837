"""BestOfN and Refine: distinct rollouts, thresholds, failures, feedback, save/load."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import BestOfN, ChainOfThought, Refine
from lmforge.modules.sampling import rejected_attempts
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
    loaded = lf.load(path, trusted_modules=[__name__])
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


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"n": "3"}, r"BestOfN\(n=\.\.\.\) must be a whole number"),
        ({"n": 2.5}, r"BestOfN\(n=\.\.\.\) must be a whole number"),
        ({"threshold": None}, r"BestOfN\(threshold=\.\.\.\) must be a number"),
        ({"threshold": "high"}, r"BestOfN\(threshold=\.\.\.\) must be a number"),
        ({"temperature": "hot"}, r"BestOfN\(temperature=\.\.\.\) must be a number"),
        ({"fail_count": "1"}, r"BestOfN\(fail_count=\.\.\.\) must be a whole number"),
        ({"reward": None}, r"BestOfN\(reward=\.\.\.\) must be a function"),
    ],
)
def test_wrong_argument_types_are_usage_errors(kwargs: dict[str, Any], expected: str) -> None:
    arguments: dict[str, Any] = {"n": 3, "reward": length_reward, "threshold": 1, **kwargs}
    with pytest.raises(lf.UsageError, match=expected):
        BestOfN(lf.Predict("q -> a"), **arguments)


def broken_reward(inputs: dict[str, Any], prediction: lf.Prediction) -> float:
    raise KeyError("score")


def wordy_reward(inputs: dict[str, Any], prediction: lf.Prediction) -> Any:
    return "high"


@pytest.mark.parametrize("cls", [BestOfN, Refine])
def test_a_reward_that_raises_is_a_usage_error_naming_it(cls: type) -> None:
    program = cls(lf.Predict("question -> answer"), 3, reward=broken_reward, threshold=1)
    with lf.use(lm=FunctionLM(by_rollout)), pytest.raises(lf.UsageError) as info:
        program(question="q")
    message = str(info.value)
    assert f"{cls.__name__} reward function 'broken_reward' raised KeyError" in message
    assert isinstance(info.value.__cause__, KeyError)  # the original error stays chained
    wordy = cls(lf.Predict("question -> answer"), 3, reward=wordy_reward, threshold=1)
    with (
        lf.use(lm=FunctionLM(by_rollout)),
        pytest.raises(lf.UsageError, match=r"'wordy_reward' must be a number, got 'high'"),
    ):
        wordy(question="q")


def test_a_failed_lm_call_inside_the_reward_is_not_relabelled() -> None:
    def judging_reward(inputs: dict[str, Any], prediction: lf.Prediction) -> float:
        raise lf.RateLimitError("slow down", model="judge")

    program = BestOfN(lf.Predict("question -> answer"), 2, reward=judging_reward, threshold=1)
    with lf.use(lm=FunctionLM(by_rollout)), pytest.raises(lf.RateLimitError):
        program(question="q")


def right_on_a_rollout(request: lf.LMRequest) -> str:
    """Attempt 0 answers 'WRONG', later attempts 'right'; Refine's feedback gives advice."""
    if "program_outputs" in request.as_text():
        return reply(advice="say right")
    return reply(answer="right" if request.rollout_id else "WRONG")


def right_reward(inputs: dict[str, Any], prediction: lf.Prediction) -> float:
    return 1.0 if prediction.answer == "right" else 0.0


@pytest.mark.parametrize("cls", [BestOfN, Refine])
@pytest.mark.parametrize("run_async", [False, True])
def test_only_the_returned_attempt_stays_in_the_trace(cls: type, run_async: bool) -> None:
    program = cls(lf.Predict("question -> answer"), 3, reward=right_reward, threshold=1)
    with (
        lf.use(lm=FunctionLM(right_on_a_rollout)),
        lf.track() as tracker,
        rejected_attempts() as rejected,
    ):
        if run_async:
            prediction = asyncio.run(program.acall(question="q"))
        else:
            prediction = program(question="q")
    assert prediction.answer == "right"
    kept = [r for r in tracker.predictions if r.seq not in rejected]
    assert [r.outputs["answer"] for r in kept if r.outputs is not None] == ["right"]
    # the kept record names the module's own predictor, also when Refine ran an advised copy
    assert [r.predictor for r in kept] == [program.module]
    dropped = [r for r in tracker.predictions if r.seq in rejected]
    expected = ["WRONG"] + (["say right"] if cls is Refine else [])
    assert [next(iter(r.outputs.values())) for r in dropped if r.outputs] == expected
