"""LabeledFewShot and BootstrapFewShot with fake models: exactly the passing traces become
demos, multi-step programs get per-predictor demos, rounds use new rollouts, the teacher
never sees an example's own answer, and a spent budget returns what was found so far."""

from __future__ import annotations

from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import BestOfN, ChainOfThought, Majority, Refine
from lmforge.optimizers import BootstrapFewShot, LabeledFewShot, create, optimizer_class
from lmforge.optimizers.base import lm_calls_per_run
from lmforge.optimizers.bootstrap import interleave_by_label
from lmforge.testing import FunctionLM
from optimizer_fakes import (
    TRAIN,
    VAL,
    Router,
    TwoStep,
    demo_count,
    last_value,
    tickets,
    two_step_reply,
)


def prefix_metric(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
    """Labels are prefixes of team names, so demos show the model's own words."""
    return str(prediction.team).startswith(example.team)


def short_labels(examples: list[lf.Example]) -> list[lf.Example]:
    return [ex.copy(team=ex.team[:4]) for ex in examples]


def test_registry_resolves_names_and_rejects_unknown_ones() -> None:
    assert optimizer_class("bootstrap") is BootstrapFewShot
    assert isinstance(create("labeled", k=2), LabeledFewShot)
    with pytest.raises(
        lf.UsageError, match=r"unknown optimizer 'nope'; choose one of: .*bootstrap"
    ):
        optimizer_class("nope")
    with pytest.raises(lf.UsageError, match="bad option"):
        create("labeled", wrong=1)


def test_labeled_few_shot_samples_k_examples_with_the_seed() -> None:
    program = lf.Predict("ticket -> team")
    lm = Router().lm()
    first = LabeledFewShot(k=3).compile(
        program, TRAIN, metric=lf.metrics.exact_match, lm=lm, seed=1
    )
    again = LabeledFewShot(k=3).compile(
        program, TRAIN, metric=lf.metrics.exact_match, lm=lm, seed=1
    )
    other = LabeledFewShot(k=3).compile(
        program, TRAIN, metric=lf.metrics.exact_match, lm=lm, seed=2
    )
    assert len(first.demos) == 3 and first.demos == again.demos
    assert first.demos != other.demos
    assert all(demo in [ex.to_dict() for ex in TRAIN] for demo in first.demos)
    assert program.demos == ()  # the input program is never modified
    assert not lm.calls  # no valset: no LM calls at all
    meta = first.artifact_meta
    assert meta["optimizer"] == {
        "name": "labeled",
        "config": {"k": 3, "sample": True, "balanced": True},
    }
    assert meta["target_model"] == "test/router" and meta["seed"] == 1
    assert first.lm is lm  # pinned: the artifact records the target model


def test_bootstrap_keeps_exactly_the_passing_traces() -> None:
    router = Router()
    train = short_labels(TRAIN)
    compiled = BootstrapFewShot(max_bootstrapped_demos=20, max_labeled_demos=0).compile(
        lf.Predict("ticket -> team"), train, metric=prefix_metric, lm=router.lm(), progress=False
    )
    passing = [ex for ex in interleave_by_label(train) if "tricky" not in ex.ticket]
    # the teacher's outputs ("billing"), not the labels ("bill")
    expected = [
        {"ticket": ex.ticket, "team": Router()(_request(ex.ticket)).strip()} for ex in passing
    ]
    assert list(compiled.demos) == expected
    assert all(demo["team"] in ("billing", "technical", "sales") for demo in compiled.demos)
    assert len(router.requests) == len(train)  # one teacher call per example, no valset


def _request(ticket: str) -> lf.LMRequest:
    return lf.LMRequest(model="x", prompt=f"Ticket: {ticket}\nTeam:")


def test_bootstrap_tops_up_with_labeled_examples_that_gave_no_trace() -> None:
    compiled = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=5).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        lm=Router().lm(),
        progress=False,
    )
    demos = list(compiled.demos)
    assert len(demos) == 5
    boot, raw = demos[:2], demos[2:]
    boot_tickets = {d["ticket"] for d in boot}
    assert all(d in [ex.to_dict() for ex in TRAIN] for d in raw)
    assert not boot_tickets & {d["ticket"] for d in raw}


def test_the_teacher_never_sees_the_example_it_answers() -> None:
    leaks: list[str] = []

    def reply(request: lf.LMRequest) -> str:
        prompt = request.as_text()
        ticket = last_value(prompt, "Ticket")
        shown = prompt.rsplit("Ticket: ", 1)[0]
        if f"Ticket: {ticket}\n" in shown:
            leaks.append(ticket)
        return Router()(request)

    BootstrapFewShot(max_bootstrapped_demos=8, max_labeled_demos=16).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        lm=FunctionLM(reply, model_type="text"),
        progress=False,
    )
    assert leaks == []


def test_multi_step_programs_get_per_predictor_demos() -> None:
    lm = FunctionLM(two_step_reply, model_type="text")
    compiled = BootstrapFewShot(max_bootstrapped_demos=10, max_labeled_demos=0).compile(
        TwoStep(), TRAIN, metric=lf.metrics.exact_match, lm=lm, progress=False
    )
    assert isinstance(compiled, TwoStep)
    passing = [ex for ex in interleave_by_label(TRAIN) if "tricky" not in ex.ticket]
    summaries = [two_step_reply(_summary_request(ex.ticket)).strip() for ex in passing]
    assert list(compiled.summarize.demos) == [
        {"ticket": ex.ticket, "summary": s} for ex, s in zip(passing, summaries, strict=True)
    ]
    assert list(compiled.classify.demos) == [
        {"summary": s, "team": ex.team} for ex, s in zip(passing, summaries, strict=True)
    ]


def _summary_request(ticket: str) -> lf.LMRequest:
    return lf.LMRequest(model="x", prompt=f"Ticket: {ticket}\nSummary:")


def test_teacher_structure_must_match() -> None:
    with pytest.raises(lf.UsageError, match="do not match"):
        BootstrapFewShot(teacher=lf.Predict("ticket -> team")).compile(
            TwoStep(), TRAIN, metric=lf.metrics.exact_match, lm=Router().lm(), progress=False
        )


def test_later_rounds_use_a_new_rollout_and_temperature() -> None:
    router = Router()
    compiled = BootstrapFewShot(
        max_bootstrapped_demos=20, max_labeled_demos=0, max_rounds=2
    ).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        lm=router.lm(),
        progress=False,
    )
    assert len(compiled.demos) == len(TRAIN)  # the tricky ones passed on round 2
    second = [r for r in router.requests if r.rollout_id == 1]
    assert len(second) == 2
    assert all(r.params.get("temperature") == 1.0 for r in second)
    assert all(r.rollout_id is None for r in router.requests[: len(TRAIN)])
    assert compiled.config == {}  # the rollout settings stay on the teacher


def test_stops_once_enough_traces_passed() -> None:
    router = Router()
    many = tickets(*[f"refund number {i}" for i in range(30)])
    compiled = BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=0).compile(
        lf.Predict("ticket -> team"),
        many,
        metric=lf.metrics.exact_match,
        lm=router.lm(),
        progress=False,
    )
    assert len(compiled.demos) == 3
    assert len(router.requests) == 8  # one chunk, not the whole training set


def test_valset_gives_a_dev_score_and_usage_in_meta() -> None:
    router = Router(needs_demos=True)
    compiled = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=2).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        valset=VAL,
        lm=router.lm(),
        progress=False,
    )
    meta = compiled.artifact_meta
    assert meta["scores"]["dev"] == 1.0
    assert meta["usage"]["lm_calls"] == len(router.requests)
    assert meta["datasets"]["train"]["n"] == len(TRAIN) and meta["datasets"]["dev"]["n"] == len(VAL)
    assert meta["estimated_lm_calls"] >= len(router.requests)
    assert meta["stopped"] is None
    assert demo_count(router.requests[-1].as_text()) == 2  # 2 bootstrapped, labeled cap reached


def test_budget_stop_returns_the_demos_found_so_far(capsys: pytest.CaptureFixture[str]) -> None:
    router = Router()
    compiled = BootstrapFewShot(max_bootstrapped_demos=8, max_labeled_demos=0).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        lm=router.lm(),
        budget=lf.Budget(max_lm_calls=3),
        concurrency=1,
    )
    assert len(router.requests) == 3
    assert "budget" in compiled.artifact_meta["stopped"]
    assert [d["ticket"] for d in compiled.demos] == [
        ex.ticket for ex in interleave_by_label(TRAIN)[:3] if "tricky" not in ex.ticket
    ]
    err = capsys.readouterr().err
    assert "at most ~8 LM calls" in err
    assert "stopped early" in err and "best program found so far" in err


def test_bootstrap_demos_span_the_classes_of_a_sorted_training_set() -> None:
    teams = ("billing", "technical", "sales")
    train = [
        lf.Example(ticket=f"{team} question {i}", team=team).with_inputs("ticket")
        for team in teams
        for i in range(6)
    ]

    def echo_team(request: lf.LMRequest) -> str:
        ticket = request.as_text().rsplit("Ticket: ", 1)[1]
        return " " + ticket.split()[0]

    compiled = BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=0).compile(
        lf.Predict("ticket -> team"),
        train,
        metric=lf.metrics.exact_match,
        lm=FunctionLM(echo_team, model_type="text"),
        progress=False,
    )
    assert sorted(d["team"] for d in compiled.demos) == sorted(teams)


def test_interleaving_keeps_free_text_labels_in_order() -> None:
    train = [lf.Example(q=f"q{i}", a=f"answer {i}").with_inputs("q") for i in range(6)]
    assert interleave_by_label(train) == train


def resampled_reply(request: lf.LMRequest) -> str:
    """The plain call answers WRONG, every resampled attempt right; Refine's feedback step
    gets advice (its prompt shows the rejected outputs)."""
    if "program_outputs" in request.as_text():
        return "[[ ## advice ## ]]\nsay right\n\n[[ ## completed ## ]]"
    answer = "right" if request.rollout_id else "WRONG"
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def right_reward(inputs: dict[str, Any], prediction: lf.Prediction) -> float:
    return 1.0 if prediction.answer == "right" else 0.0


RIGHT = [lf.Example(question=f"q{i}", answer="right").with_inputs("question") for i in range(3)]


@pytest.mark.parametrize("cls", [BestOfN, Refine])
def test_attempts_the_reward_rejected_never_become_demos(cls: type) -> None:
    """Each example's first attempt fails the reward and the second passes: only the
    passing (returned) attempt is a demo; Refine's feedback calls are not demos either."""
    program = cls(lf.Predict("question -> answer"), 3, reward=right_reward, threshold=1.0)
    lm = FunctionLM(resampled_reply)
    compiled = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0).compile(
        program, RIGHT, metric=lf.metrics.exact_match, lm=lm, progress=False
    )
    demos = {name: list(p.demos) for name, p in compiled.named_predictors()}
    assert demos["module"] == [
        {"question": "q0", "answer": "right"},
        {"question": "q1", "answer": "right"},
    ]
    if cls is Refine:
        assert demos["feedback"] == []
    # the rejected attempts were still made (3 examples in one chunk, 2 attempts each)
    answers = [r for r in lm.calls if "program_outputs" not in r.as_text()]
    assert [r.rollout_id for r in answers].count(None) == 3 and len(answers) == 6


def test_samples_that_lost_the_majority_vote_never_become_demos() -> None:
    program = Majority(lf.Predict("question -> answer"), 3)
    compiled = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0).compile(
        program,
        RIGHT,
        metric=lf.metrics.exact_match,
        lm=FunctionLM(resampled_reply),
        progress=False,
    )
    assert [dict(d) for d in compiled.module.demos] == [
        {"question": "q0", "answer": "right"},
        {"question": "q1", "answer": "right"},
    ]


def test_the_estimate_counts_every_resampled_attempt() -> None:
    """One BestOfN(n=3) call may make 3 LM calls, Refine(n=3) 3 + 2 feedback calls; the
    estimate used to count one call per predictor."""
    optimizer = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0, max_rounds=2)
    plain = lf.Predict("question -> answer")
    best = BestOfN(plain, 3, reward=right_reward, threshold=1.0)
    refine = Refine(plain, 3, reward=right_reward, threshold=1.0)
    nested = BestOfN(ChainOfThought("question -> answer"), 2, reward=right_reward, threshold=1)
    assert optimizer.estimate_calls(plain, RIGHT, RIGHT[:1]) == 3 * 2 * 1 + 1
    assert optimizer.estimate_calls(best, RIGHT, RIGHT[:1]) == 3 * 2 * 3 + 3
    assert optimizer.estimate_calls(refine, RIGHT, RIGHT[:1]) == 3 * 2 * 5 + 5
    assert lm_calls_per_run(Refine(nested, 2, reward=right_reward, threshold=1)) == 2 * 2 + 1
    lm = FunctionLM(resampled_reply)
    compiled = BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=0).compile(
        refine, RIGHT, metric=lf.metrics.exact_match, valset=RIGHT, lm=lm, progress=False
    )
    assert len(lm.calls) <= compiled.artifact_meta["estimated_lm_calls"] == 3 * 5 + 3 * 5


def test_a_metric_returning_a_score_outside_0_1_stops_the_compile() -> None:
    def counts(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> int:
        return 3

    with pytest.raises(lf.UsageError, match=r"'counts' returned 3, outside \[0, 1\]"):
        BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0).compile(
            lf.Predict("question -> answer"),
            RIGHT,
            metric=counts,
            lm=FunctionLM(resampled_reply),
            progress=False,
        )


@pytest.mark.parametrize("bad", ["4", 0, 1.5])
def test_compile_concurrency_must_be_a_whole_number(bad: Any) -> None:
    with pytest.raises(lf.UsageError, match=f"concurrency must be a whole number.*got {bad!r}"):
        BootstrapFewShot(max_bootstrapped_demos=1, max_labeled_demos=0).compile(
            lf.Predict("question -> answer"),
            RIGHT,
            metric=lf.metrics.exact_match,
            lm=FunctionLM(resampled_reply),
            concurrency=bad,
            progress=False,
        )


def test_a_metric_that_raises_on_every_trace_stops_bootstrapping_with_a_usage_error() -> None:
    """Without a valset nothing else scores the program, so a broken metric used to give an
    artifact with no bootstrapped demos and no word about why."""

    def wrong_label(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
        return bool(prediction.team == example.label)

    with pytest.raises(lf.UsageError, match=r"'wrong_label' raised on every trace.*AttributeError"):
        BootstrapFewShot(max_bootstrapped_demos=2).compile(
            lf.Predict("ticket -> team"),
            TRAIN,
            metric=wrong_label,
            lm=Router().lm(),
            progress=False,
        )


def test_a_metric_that_raises_on_some_traces_only_skips_those() -> None:
    def picky(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
        if example.ticket == TRAIN[0].ticket:
            raise KeyError("oops")
        return bool(prediction.team == example.team)

    compiled = BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=2).compile(
        lf.Predict("ticket -> team"), TRAIN, metric=picky, lm=Router().lm(), progress=False
    )
    assert len(compiled.predictors()[0].demos) == 2
