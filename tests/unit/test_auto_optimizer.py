"""AutoFewShot (``--optimizer auto``, the compile default): which strategies it tries on
which data, how it chooses, and what it reports; fake scoring models."""

from __future__ import annotations

import json

import lmforge as lf
import pytest
from lmforge.lm.types import LMRequest
from lmforge.optimizers import AutoFewShot, create
from lmforge.testing import ScoringLM
from test_compile_calibration import KEYWORDS, Route, last_ticket, metric, rows

pytest.importorskip("bm25s", reason="knn needs the 'retrieval' extra")


def few_demos_help(request: LMRequest, continuations: tuple[str, ...]) -> list[float]:
    """Answers right only when the prompt shows at most 4 demos (else always "sales")."""
    demos = request.as_text().count("Ticket:") - 1
    ticket = last_ticket(request)
    values = []
    for text in continuations:
        label = next(name for name in KEYWORDS if name in text)
        right = KEYWORDS[label] in ticket and demos <= 4
        values.append(1.0 if label == "sales" else 0.0 if not right else 3.0)
    return values


def test_a_training_set_that_fits_one_prompt_is_all_demos() -> None:
    lm = ScoringLM(few_demos_help)
    compiled = AutoFewShot(k=8).compile(
        lf.Predict(Route), rows(6), metric=metric, lm=lm, progress=False
    )
    strategy = compiled.artifact_meta["strategy"]  # type: ignore[attr-defined]
    assert (
        strategy["chosen"] == "labeled-6" and "6 training rows fit in one prompt" in strategy["why"]
    )
    assert len(compiled.predictors()[0].demos) == 6


def test_with_a_dev_split_every_strategy_is_scored_and_the_best_wins() -> None:
    lm = ScoringLM(few_demos_help)
    compiled = AutoFewShot(k=8, calibration="off").compile(
        lf.Predict(Route), rows(24), metric=metric, valset=rows(6), lm=lm, progress=False
    )
    meta = compiled.artifact_meta  # type: ignore[attr-defined]
    scores = meta["strategy"]["scores"]
    kinds = ["labeled-8", "labeled-16", "knn-4", "bootstrap-8"]  # demo counts searched too
    assert list(scores) == kinds
    # 8 or 16 demos bury the answer (only "sales" rows are right); knn shows 4 neighbours
    # per input. Fixed demos are scored on the 6 dev rows and the training rows they do not
    # show (24 - 8, 24 - 16); knn, which may show any training row, on dev alone.
    assert scores["labeled-8"] < 0.4 and scores["labeled-16"] < 0.4
    assert scores["knn-4"] == 1.0
    why = meta["strategy"]["why"]
    for name, count in (("labeled-8", 22), ("labeled-16", 14), ("knn-4", 6), ("bootstrap-8", 22)):
        assert f"{name} {100 * scores[name]:.1f}% ({count} rows)" in why
    assert meta["strategy"]["chosen"] == "knn-4" and meta["scores"]["dev"] == 1.0
    assert [c["kind"] for c in meta["candidates"]] == kinds
    assert compiled.predictors()[0].demo_selector is not None  # per-input demos, served too


def _asking(asked: list[tuple[int, str, str]]) -> ScoringLM:
    """A ScoringLM answering like ``few_demos_help`` that records (demos shown, ticket
    answered, the prompt's demo text) per call."""

    def scores(request: LMRequest, continuations: tuple[str, ...]) -> list[float]:
        text = request.as_text()
        demos, ticket = text.count("Ticket:") - 1, last_ticket(request).strip()
        asked.append((demos, ticket.splitlines()[0], text.rsplit("Ticket:", 1)[0]))
        return few_demos_help(request, continuations)

    return ScoringLM(scores)


DEV_ROWS = [
    lf.Example(ticket=f"dev {i}: {KEYWORDS[team]}", team=team).with_inputs("ticket")
    for i, team in enumerate(["billing", "sales", "support"] * 2)
]


@pytest.mark.parametrize("unseen", [100, 3, 0])
def test_each_strategy_is_scored_on_dev_and_the_training_rows_it_does_not_show(
    unseen: int,
) -> None:
    asked: list[tuple[int, str, str]] = []
    train = rows(24)
    compiled = AutoFewShot(k=8, calibration="off", unseen=unseen).compile(
        lf.Predict(Route), train, metric=metric, valset=DEV_ROWS, lm=_asking(asked), progress=False
    )
    dev = {row.ticket for row in DEV_ROWS}
    # labeled-16 is the only strategy with 16 demos: what it was scored on
    with_16 = [(ticket, prompt) for demos, ticket, prompt in asked if demos == 16]
    scored = {ticket for ticket, _ in with_16}
    from_train = scored - dev
    assert dev <= scored and len(from_train) == min(unseen, 24 - 16)
    assert from_train <= {row.ticket for row in train}
    # never a row the prompt shows as a demo
    assert all(ticket not in prompt for ticket, prompt in with_16)
    # knn (4 neighbours per input) is scored on dev alone
    assert {ticket for demos, ticket, _ in asked if demos == 4} == dev
    why = compiled.artifact_meta["strategy"]["why"]  # type: ignore[attr-defined]
    assert "labeled-16 " in why and f"({6 + len(from_train)} rows)" in why
    assert ("the training rows each does not show" in why) == (unseen > 0)


def test_ties_go_to_the_cheapest_strategy() -> None:
    lm = ScoringLM({"billing": -1.0, "sales": -2.0, "support": -3.0})  # always billing
    # scored on the same rows (dev alone), every strategy scores the same
    compiled = AutoFewShot(k=4, calibration="off", unseen=0).compile(
        lf.Predict(Route), rows(12), metric=metric, valset=rows(6), lm=lm, progress=False
    )
    strategy = compiled.artifact_meta["strategy"]  # type: ignore[attr-defined]
    assert len(set(strategy["scores"].values())) == 1 and strategy["chosen"] == "labeled-4"


def test_without_a_dev_split_training_rows_are_held_out_to_choose(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lm = ScoringLM(few_demos_help)
    train = rows(40)
    compiled = AutoFewShot(k=8, calibration="off").compile(
        lf.Predict(Route), train, metric=metric, lm=lm, progress=False
    )
    strategy = compiled.artifact_meta["strategy"]  # type: ignore[attr-defined]
    assert strategy["chosen"] == "knn-4" and "best on 10 held-out training rows" in strategy["why"]
    # The winner is compiled again on the whole training set: its pool has every row.
    selector = compiled.predictors()[0].demo_selector
    assert selector is not None and len(selector.pool) == len(train)
    assert "auto: knn-4 (best on 10 held-out training rows" in capsys.readouterr().err


def test_too_few_rows_to_hold_out_fall_back_to_labeled_demos() -> None:
    lm = ScoringLM(few_demos_help)
    compiled = AutoFewShot(k=8).compile(
        lf.Predict(Route), rows(20), metric=metric, lm=lm, progress=False
    )
    strategy = compiled.artifact_meta["strategy"]  # type: ignore[attr-defined]
    assert strategy["chosen"] == "labeled-8" and "too few to hold some out" in strategy["why"]
    assert len(compiled.predictors()[0].demos) == 8


@pytest.mark.parametrize("holdout", [0, 1, 1.5])
def test_a_holdout_outside_zero_and_one_is_refused(holdout: float) -> None:
    with pytest.raises(lf.UsageError, match=r"holdout=...\) must be between 0 and 1"):
        AutoFewShot(holdout=holdout)


def test_auto_is_the_compile_default() -> None:
    import inspect

    from lmforge.cli.compile import compile_command

    default = inspect.signature(compile_command).parameters["optimizer_name"].default
    assert getattr(default, "default", default) == "auto"
    assert isinstance(create("auto"), AutoFewShot)
    assert json.dumps(create("auto").config()) == json.dumps(
        {"k": 8, "max_bootstrapped_demos": 4, "holdout": 0.25, "unseen": 100}
    )


def test_a_strategy_that_cannot_compile_the_program_is_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # kNN needs training rows holding every field of a predictor; nothing labels the
    # chain of thought's reasoning, so only labeled and bootstrap demos are compared.
    from lmforge.modules import ChainOfThought
    from lmforge.testing import DummyLM

    lm = DummyLM([{"reasoning": "r", "team": "sales"}], cycle=True)
    compiled = AutoFewShot(k=4, calibration="off").compile(
        ChainOfThought(Route), rows(12), metric=metric, valset=rows(6), lm=lm, progress=False
    )
    strategy = compiled.artifact_meta["strategy"]  # type: ignore[attr-defined]
    assert set(strategy["scores"]) == {"labeled-4", "labeled-8", "bootstrap-4"}
    assert "auto: knn-2 skipped: KNNFewShot found no training example" in capsys.readouterr().err
