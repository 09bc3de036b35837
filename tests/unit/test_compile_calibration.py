"""Label-score calibration inside compile (lmforge.optimizers.calibrating), on a fake
scoring model whose prompts favour one label whatever the input."""

from __future__ import annotations

from typing import Any, Literal

import lmforge as lf
import pytest
from lmforge.errors import UsageError
from lmforge.lm.types import LMRequest
from lmforge.optimizers import LabeledFewShot, RandomSearch
from lmforge.testing import ScoringLM

KEYWORDS = {"billing": "invoice", "sales": "price", "support": "crash"}
CONTENT_FREE = ("N/A", "[MASK]")


class Route(lf.Signature):
    """Route the ticket."""

    ticket: str = lf.InputField()
    team: Literal["billing", "sales", "support"] = lf.OutputField()


def last_ticket(request: LMRequest) -> str:
    # The prompt ends with the input being answered; demos come before it.
    return request.as_text().rsplit("Ticket:", 1)[-1]


def biased_scores(bias: dict[str, float], content_free_bias: dict[str, float] | None = None) -> Any:
    """Each label scores 2 when its keyword is in the ticket, plus the prompt's ``bias``
    (and ``content_free_bias`` on content-free inputs only)."""

    def scores(request: LMRequest, continuations: tuple[str, ...]) -> list[float]:
        ticket = last_ticket(request)
        free = ticket.split("\n")[0].strip() in ("", *CONTENT_FREE)
        values = []
        for text in continuations:
            label = next(name for name in KEYWORDS if name in text)
            value = bias.get(label, 0.0) + (2.0 if KEYWORDS[label] in ticket else 0.0)
            if free and content_free_bias:
                value += content_free_bias.get(label, 0.0)
            values.append(value)
        return values

    return scores


def rows(n: int) -> list[lf.Example]:
    teams = list(KEYWORDS)
    return [
        lf.Example(ticket=f"ticket {i}: {KEYWORDS[teams[i % 3]]}", team=teams[i % 3]).with_inputs(
            "ticket"
        )
        for i in range(n)
    ]


def metric(example: lf.Example, prediction: lf.Prediction, trace: object = None) -> bool:
    return bool(prediction.team == example.team)


TRAIN, DEV = rows(9), rows(6)


def accuracy(program: lf.Module, data: list[lf.Example]) -> float:
    return sum(metric(e, program(**e.inputs())) for e in data) / len(data)


def test_the_compiled_program_is_calibrated_when_that_scores_better_on_dev() -> None:
    lm = ScoringLM(biased_scores({"sales": 3.0}))
    program = lf.Predict(Route)
    compiled = LabeledFewShot(k=3).compile(
        program, TRAIN, metric=metric, valset=DEV, lm=lm, progress=False
    )
    meta = compiled.artifact_meta  # type: ignore[attr-defined]
    info = meta["calibration"]
    assert info["mode"] == "auto" and info["kept"] is True and info["split"] == "dev"
    assert info["uncalibrated"] == pytest.approx(1 / 3)  # the prompt's bias: always "sales"
    assert info["calibrated"] == 1.0 and meta["scores"]["dev"] == 1.0
    (predictor,) = compiled.predictors()
    assert predictor.calibration is not None
    assert accuracy(compiled, rows(12)) == 1.0
    # The calibration travels with the artifact.
    restored = lf.Predict(Route, lm=lm)
    restored.load_state(compiled.state())
    assert restored.calibration == predictor.calibration


def test_calibration_off_leaves_the_program_as_searched() -> None:
    lm = ScoringLM(biased_scores({"sales": 3.0}))
    compiled = LabeledFewShot(k=3, calibration="off").compile(
        lf.Predict(Route), TRAIN, metric=metric, valset=DEV, lm=lm, progress=False
    )
    meta = compiled.artifact_meta  # type: ignore[attr-defined]
    assert meta["calibration"] is None and meta["scores"]["dev"] == pytest.approx(1 / 3)
    assert compiled.predictors()[0].calibration is None


def test_a_calibration_that_hurts_is_dropped_and_said_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Content-free inputs look like "support" to this model; real inputs do not: dividing
    # that out would bury every support ticket.
    lm = ScoringLM(biased_scores({}, content_free_bias={"support": 6.0}))
    compiled = LabeledFewShot(k=3).compile(
        lf.Predict(Route), TRAIN, metric=metric, lm=lm, progress=False
    )
    info = compiled.artifact_meta["calibration"]  # type: ignore[attr-defined]
    assert info["kept"] is False and info["split"] == "train"  # no dev split: train decides
    assert info["calibrated"] < info["uncalibrated"] == 1.0
    assert compiled.predictors()[0].calibration is None
    assert "label calibration (contextual): dropped" in capsys.readouterr().err


def test_search_candidates_are_scored_calibrated() -> None:
    lm = ScoringLM(biased_scores({"sales": 3.0}))
    program = lf.Predict(Route)
    on = RandomSearch(num_candidates=2, max_bootstrapped_demos=1, max_labeled_demos=2).compile(
        program, TRAIN, metric=metric, valset=DEV, lm=lm, progress=False
    )
    off = RandomSearch(
        num_candidates=2, max_bootstrapped_demos=1, max_labeled_demos=2, calibration="off"
    ).compile(program, TRAIN, metric=metric, valset=DEV, lm=lm, progress=False)
    scored_on = [c["score"] for c in on.artifact_meta["candidates"]]  # type: ignore[attr-defined]
    scored_off = [c["score"] for c in off.artifact_meta["candidates"]]  # type: ignore[attr-defined]
    assert scored_on and all(score == 1.0 for score in scored_on)
    assert all(score == pytest.approx(1 / 3) for score in scored_off)


def test_open_outputs_are_not_calibrated_and_cost_nothing_extra(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lm = ScoringLM({}, replies=["Answer: four"], cycle=True)
    data = [lf.Example(question=f"q{i}", answer="four").with_inputs("question") for i in range(4)]
    compiled = LabeledFewShot(k=2).compile(
        lf.Predict("question -> answer"),
        data,
        metric=lf.metrics.exact_match,
        valset=data,
        lm=lm,
        progress=False,
    )
    assert compiled.artifact_meta["calibration"] is None  # type: ignore[attr-defined]
    assert lm.scored == []
    assert "label-calibration" not in capsys.readouterr().err


def test_the_estimate_line_names_the_calibration_calls(capsys: pytest.CaptureFixture[str]) -> None:
    lm = ScoringLM(biased_scores({}))
    LabeledFewShot(k=3).compile(lf.Predict(Route), TRAIN, metric=metric, lm=lm, progress=False)
    err = capsys.readouterr().err
    # labeled makes no calls; calibrating: 3 content-free, then 9 train rows with and without
    assert "at most ~21 LM calls (9 train; cache hits and resumed steps are free, + 3 " in err
    assert "label-calibration calls per candidate scored" in err
    assert 0 < len(lm.scored) <= 21  # the estimate holds (no cache: every call counted)


@pytest.mark.parametrize("value", ["always", "", None])
def test_an_unknown_calibration_mode_is_refused(value: Any) -> None:
    with pytest.raises(UsageError, match=r"calibration=...\) must be one of auto, contextual"):
        LabeledFewShot(calibration=value)


def test_fitted_calibration_needs_a_dev_split() -> None:
    lm = ScoringLM(biased_scores({"sales": 3.0}))
    with pytest.raises(UsageError, match="calibration='fitted' needs a dev split"):
        LabeledFewShot(k=3, calibration="fitted").compile(
            lf.Predict(Route), TRAIN, metric=metric, lm=lm, progress=False
        )


def test_fitted_calibration_is_fitted_and_kept_without_comparison() -> None:
    lm = ScoringLM(biased_scores({"sales": 3.0}))
    compiled = LabeledFewShot(k=3, calibration="fitted").compile(
        lf.Predict(Route), TRAIN, metric=metric, valset=DEV, lm=lm, progress=False
    )
    info = compiled.artifact_meta["calibration"]  # type: ignore[attr-defined]
    assert info == {"mode": "fitted", "method": "fitted", "kept": True}
    calibration = compiled.predictors()[0].calibration
    assert calibration is not None and calibration.method == "fitted"
    assert compiled.artifact_meta["scores"]["dev"] == 1.0  # type: ignore[attr-defined]
