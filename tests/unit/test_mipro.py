"""MIPRO with fake LMs: search space, trial counts, resume, reproducibility, prompt_lm."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.artifact import to_artifact
from lmforge.errors import MissingExtraError, UsageError
from lmforge.testing import FunctionLM

optuna = pytest.importorskip("optuna")

from lmforge.optimizers.mipro import MIPRO, auto_plan  # noqa: E402

TEAMS = {
    "refund": "billing",
    "invoice": "billing",
    "crash": "technical",
    "login": "technical",
    "price": "sales",
    "demo": "sales",
}
GOOD = "variant 2"
SUMMARY = "Support tickets, each labelled with a team."


def _field(text: str, name: str) -> str:
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*)", text)
    return match.group(1).strip() if match else ""


def task_reply(request: lf.LMRequest) -> str:
    """The task model: right only when its instructions contain GOOD, else always 'sales'."""
    system = str(request.messages[0]["content"])
    last = str(request.messages[-1]["content"])
    if "proposed_instruction" in system or "`records`" in system:
        raise AssertionError("the task model received a proposal prompt")
    if "`urgent`" in system:
        return "[[ ## urgent ## ]]\nfalse\n\n[[ ## completed ## ]]"
    ticket = _field(last, "ticket")
    team = (
        next((t for k, t in TEAMS.items() if k in ticket), "sales") if GOOD in system else "sales"
    )
    return f"[[ ## team ## ]]\n{team}\n\n[[ ## completed ## ]]"


def prompt_reply(request: lf.LMRequest) -> str:
    """The prompt model: numbered proposals (by rollout) and a fixed data summary."""
    system = str(request.messages[0]["content"])
    if "proposed_instruction" in system:
        return (
            "[[ ## proposed_instruction ## ]]\n"
            f"Route the ticket carefully, variant {request.rollout_id}.\n\n[[ ## completed ## ]]"
        )
    if "`records`" in system:
        return f"[[ ## summary ## ]]\n{SUMMARY}\n\n[[ ## completed ## ]]"
    raise AssertionError("the prompt model received a task prompt")


def dataset(n: int, offset: int = 0) -> list[lf.Example]:
    words = list(TEAMS)
    return [
        lf.Example(
            ticket=f"{words[(i + offset) % len(words)]} problem {i + offset}",
            team=TEAMS[words[(i + offset) % len(words)]],
        ).with_inputs("ticket")
        for i in range(n)
    ]


def metric(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
    return bool(example.team == prediction.team)


def router() -> lf.Predict:
    return lf.Predict("ticket -> team: Literal['billing', 'technical', 'sales']")


class TwoStep(lf.Module):
    def __init__(self) -> None:
        self.route = router()
        self.check = lf.Predict("ticket, team -> urgent: bool")

    def forward(self, ticket: str) -> lf.Prediction:
        team = self.route(ticket=ticket).team
        return lf.Prediction(team=team, urgent=self.check(ticket=ticket, team=team).urgent)


TRAIN, VAL = dataset(8), dataset(12, offset=3)


def compile_mipro(
    program: lf.Module | None = None,
    *,
    run_dir: Path | None = None,
    seed: int = 0,
    budget: lf.Budget | None = None,
    task: FunctionLM | None = None,
    prompt: FunctionLM | None = None,
    **options: Any,
) -> tuple[lf.Module, FunctionLM, FunctionLM]:
    task = task or FunctionLM(task_reply)
    prompt = prompt or FunctionLM(prompt_reply, model="test/prompt")
    settings = {
        "num_trials": 6,
        "minibatch_size": 4,
        "num_instruction_candidates": 3,
        "num_demo_sets": 3,
        **options,
    }
    optimizer = MIPRO(prompt_lm=prompt, **settings)
    compiled = optimizer.compile(
        program or router(),
        TRAIN,
        metric=metric,
        valset=VAL,
        lm=task,
        seed=seed,
        budget=budget,
        run_dir=run_dir,
        progress=False,
    )
    return compiled, task, prompt


def study_of(run_dir: Path) -> Any:
    url = f"sqlite:///{run_dir / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def artifact_bytes(program: lf.Module) -> str:
    return json.dumps(to_artifact(program, program.artifact_meta), sort_keys=True)


def test_search_space_is_instruction_candidates_times_demo_sets(tmp_path: Path) -> None:
    compiled, _, _ = compile_mipro(
        TwoStep(), run_dir=tmp_path, num_instruction_candidates=3, num_demo_sets=4
    )
    study = study_of(tmp_path)
    for trial in study.trials:
        assert set(trial.distributions) == {
            "route.instruction",
            "route.demos",
            "check.instruction",
            "check.demos",
        }
        for name in ("route", "check"):
            assert list(trial.distributions[f"{name}.instruction"].choices) == [0, 1, 2]
            assert list(trial.distributions[f"{name}.demos"].choices) == [0, 1, 2, 3]
    # the first trial scores the original program: original instructions, zero-shot
    assert study.trials[0].params == {
        "route.instruction": 0,
        "route.demos": 0,
        "check.instruction": 0,
        "check.demos": 0,
    }
    chosen = dict(compiled.named_predictors())["route"].signature.instructions
    assert chosen == "Route the ticket carefully, variant 2."


def test_num_trials_is_honoured(tmp_path: Path) -> None:
    compiled, task, _ = compile_mipro(run_dir=tmp_path, num_trials=7)
    states = [t.state for t in study_of(tmp_path).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 7
    minibatch = [t for t in compiled.artifact_meta["trials"] if t["kind"] == "minibatch"]
    assert [t["trial"] for t in minibatch] == list(range(1, 8))
    assert all(0.0 <= t["score"] <= 1.0 for t in minibatch)
    assert compiled.artifact_meta["scores"]["dev"] == 1.0
    assert len(task.calls) <= compiled.artifact_meta["estimated_lm_calls"]


@pytest.mark.parametrize(("level", "expected"), [("light", 10), ("medium", 18), ("heavy", 27)])
def test_auto_levels_set_the_trial_count(level: str, expected: int) -> None:
    plan = auto_plan(level, 1)
    assert plan["num_trials"] == expected
    assert plan["num_instruction_candidates"] == plan["num_demo_sets"]
    compiled, _, prompt = compile_mipro(
        auto=level,
        num_trials=None,
        num_instruction_candidates=None,
        num_demo_sets=None,
        minibatch_size=12,
    )
    trials = [t for t in compiled.artifact_meta["trials"] if t["kind"] == "full"]
    assert len(trials) == expected
    # one summary call plus one proposal per extra instruction candidate
    assert len(prompt.calls) == 1 + plan["num_instruction_candidates"] - 1
    assert auto_plan(level, 2)["num_trials"] > expected


def test_auto_and_num_trials_are_exclusive() -> None:
    with pytest.raises(UsageError, match="either auto"):
        MIPRO(auto="light", num_trials=3)
    with pytest.raises(UsageError, match="not a level"):
        MIPRO(auto="extreme")
    assert MIPRO().config()["auto"] == "light"


def test_prompt_lm_writes_proposals_and_the_task_lm_never_does() -> None:
    compiled, task, prompt = compile_mipro(TwoStep(), num_instruction_candidates=4)
    proposals = [r for r in prompt.calls if "proposed_instruction" in str(r.messages[0]["content"])]
    assert len(proposals) == 2 * 3  # two predictors x three new candidates
    assert len(prompt.calls) == len(proposals) + 1  # plus the data summary
    assert task.calls and all("proposed_instruction" not in r.as_text() for r in task.calls)
    # proposals are grounded in the data summary and the program's structure
    text = proposals[0].as_text()
    assert "Support tickets, each labelled with a team." in text
    assert "Step route" in text and "Step check" in text
    assert compiled.artifact_meta["optimizer"]["config"]["prompt_model"] == "test/prompt"


def test_resume_after_a_budget_stop_runs_only_the_remaining_trials(tmp_path: Path) -> None:
    full, full_task, _ = compile_mipro(run_dir=tmp_path / "whole", num_trials=8)
    first, task1, _ = compile_mipro(
        run_dir=tmp_path / "cut", num_trials=8, budget=lf.Budget(max_lm_calls=30)
    )
    assert first.artifact_meta["stopped"] and "budget" in first.artifact_meta["stopped"]
    done = [
        t for t in study_of(tmp_path / "cut").trials if t.state == optuna.trial.TrialState.COMPLETE
    ]
    assert 0 < len(done) < 8
    values = {t.number: (t.params, t.value) for t in done}
    second, task2, prompt2 = compile_mipro(run_dir=tmp_path / "cut", num_trials=8)
    assert second.artifact_meta["stopped"] is None
    study = study_of(tmp_path / "cut")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8
    for number, (params, value) in values.items():  # finished trials were kept, not redone
        assert (study.trials[number].params, study.trials[number].value) == (params, value)
    assert len(prompt2.calls) == 0  # proposals came from the checkpoint
    redone = len(task1.calls) + len(task2.calls) - len(full_task.calls)
    assert 0 <= redone <= len(VAL)  # at most the one evaluation the budget cut short
    assert len(task2.calls) < len(full_task.calls)
    assert artifact_bytes(second) == artifact_bytes(full)


def test_resume_after_an_interrupt_continues_the_study(tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(request: lf.LMRequest) -> str:
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return task_reply(request)

    with pytest.raises(KeyboardInterrupt):
        compile_mipro(run_dir=tmp_path, num_trials=8, task=FunctionLM(flaky))
    study = study_of(tmp_path)
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert 0 < done < 8
    compiled, task, _ = compile_mipro(run_dir=tmp_path, num_trials=8)
    complete = [t for t in study_of(tmp_path).trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8
    fresh, fresh_task, _ = compile_mipro(run_dir=tmp_path / "fresh", num_trials=8)
    assert len(task.calls) < len(fresh_task.calls)
    assert artifact_bytes(compiled) == artifact_bytes(fresh)


def test_a_finished_run_reruns_without_lm_calls(tmp_path: Path) -> None:
    first, _, _ = compile_mipro(run_dir=tmp_path)
    again, task, prompt = compile_mipro(run_dir=tmp_path)
    assert len(task.calls) == 0 and len(prompt.calls) == 0
    assert artifact_bytes(again) == artifact_bytes(first)


def test_same_seed_gives_identical_artifacts_and_another_seed_other_minibatches() -> None:
    one, _, _ = compile_mipro(TwoStep())
    two, _, _ = compile_mipro(TwoStep())
    assert artifact_bytes(one) == artifact_bytes(two)
    other, _, _ = compile_mipro(TwoStep(), seed=1)
    assert other.artifact_meta["trials"] != one.artifact_meta["trials"]


def test_custom_storage_url_holds_the_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    compile_mipro(num_trials=4, storage=url)
    (summary,) = optuna.get_all_study_summaries(url)
    assert summary.study_name.startswith("lmforge-mipro-") and summary.n_trials == 4


def test_budget_stop_returns_the_best_program_so_far() -> None:
    compiled, task, _ = compile_mipro(budget=lf.Budget(max_lm_calls=25), num_trials=8)
    meta = compiled.artifact_meta
    assert "budget" in meta["stopped"]
    assert len(task.calls) <= 25
    assert isinstance(compiled, lf.Predict)
    scored = [c for c in meta["candidates"] if c["score"] is not None]
    if scored:
        assert meta["scores"]["dev"] == max(c["score"] for c in scored)


def test_the_estimate_is_printed_before_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    task = FunctionLM(task_reply)
    optimizer = MIPRO(
        num_trials=3,
        minibatch_size=4,
        num_instruction_candidates=2,
        num_demo_sets=2,
        prompt_lm=FunctionLM(prompt_reply),
    )
    compiled = optimizer.compile(router(), TRAIN, metric=metric, valset=VAL, lm=task, progress=True)
    estimate = optimizer.estimate_calls(router(), TRAIN, VAL)
    assert f"at most ~{estimate} LM calls" in capsys.readouterr().err
    assert len(task.calls) <= estimate == compiled.artifact_meta["estimated_lm_calls"]


def test_missing_optuna_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    for name in ("lmforge.optimizers.mipro_study", "lmforge.optimizers.mipro_search"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(MissingExtraError, match=r"lmforge\[optimize\]"):
        compile_mipro(num_trials=2)


def test_a_bad_storage_url_is_a_one_line_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot open optuna storage 'nosuchdb://x/y'") as info:
        compile_mipro(num_trials=2, storage="nosuchdb://x/y")
    assert "\n" not in str(info.value)


def test_budget_stop_with_full_valset_trials_keeps_the_best_trial() -> None:
    compiled, task, _ = compile_mipro(
        budget=lf.Budget(max_lm_calls=60), num_trials=8, minibatch_size=12
    )
    meta = compiled.artifact_meta
    assert "budget" in meta["stopped"] and len(task.calls) <= 60
    trials = meta["trials"]
    assert 0 < len(trials) < 8 and {t["kind"] for t in trials} == {"full"}
    assert meta["candidates"] and meta["scores"]["dev"] == max(t["score"] for t in trials)
