"""Confidence lights: threshold fitting, per-light figures, reliability bins, the
prediction's trust annotations and the thresholds' trip through an artifact."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.lights import (
    Thresholds,
    calibrate,
    colour_summary,
    confidence_pairs,
    fit_thresholds,
    reliability,
    thresholds_of,
    unseen_rows,
)


class Scored(lf.Module):
    """A program whose prediction carries a confidence read from a table (no LM)."""

    def __init__(self, table: dict[str, tuple[str, float | None]] | None = None) -> None:
        self.table = dict(table or {})

    def forward(self, **inputs: Any) -> lf.Prediction:
        answer, confidence = self.table[inputs["q"]]
        prediction = lf.Prediction(answer=answer)
        prediction.confidence = confidence
        return prediction


def calibrated_pairs() -> list[tuple[float, float]]:
    # 10 answers at 0.9 (all right), 10 at 0.6 (6 right), 10 at 0.2 (1 right)
    return (
        [(0.9, 1.0)] * 10
        + [(0.6, 1.0)] * 6
        + [(0.6, 0.0)] * 4
        + [(0.2, 1.0)] * 1
        + [(0.2, 0.0)] * 9
    )


def test_fit_picks_the_lowest_green_reaching_the_target_and_the_highest_red() -> None:
    fitted = fit_thresholds(calibrated_pairs(), target=0.9)
    # from 0.6 up precision is 16/20 = 0.8 < 0.9; from 0.9 up it is 1.0
    assert fitted.green == 0.9
    # under 0.9 all answers score 7/20 < 0.5, but those just under it (at 0.6) score 0.6:
    # not red; under 0.6 both are 1/10
    assert fitted.red == 0.6
    assert fitted.n == 30
    assert [fitted.light(c) for c in (0.95, 0.9, 0.6, 0.59, 0.2, None)] == [
        "green",
        "green",
        "yellow",
        "red",
        "red",
        None,
    ]


def test_a_lower_target_moves_green_down_and_red_never_passes_green() -> None:
    pairs = [(0.9, 1.0)] * 10 + [(0.6, 1.0)] * 7 + [(0.6, 0.0)] * 3 + [(0.2, 0.0)] * 10
    assert fit_thresholds(pairs, target=0.9).green == 0.9
    lower = fit_thresholds(pairs, target=0.85)
    assert lower.green == 0.6  # 17/20 = 0.85 from 0.6 up
    assert lower.red == 0.6  # under 0.6: 0/10
    assert [lower.light(c) for c in (0.9, 0.6, 0.59)] == ["green", "green", "red"]
    # everything wrong: no green, and red stops at the top level (never above an answer)
    wrong = fit_thresholds([(0.9, 0.0)] * 10 + [(0.3, 0.0)] * 10)
    assert (wrong.green, wrong.red) == (None, 0.9)


def test_no_green_when_no_threshold_reaches_the_target() -> None:
    pairs = [(0.9, 1.0)] * 8 + [(0.9, 0.0)] * 2 + [(0.5, 1.0)] * 5 + [(0.5, 0.0)] * 5
    fitted = fit_thresholds(pairs, target=0.95)
    assert fitted.green is None
    assert fitted.light(1.0) in ("yellow", "red")


def test_too_few_points_give_no_thresholds() -> None:
    fitted = fit_thresholds([(1.0, 1.0), (0.1, 0.0)], target=0.9)
    assert (fitted.green, fitted.red) == (None, None)
    assert fitted.light(1.0) == "yellow"
    # one lucky answer at the top never makes green on its own
    lucky = [(1.0, 1.0)] + [(0.5, 1.0)] * 3 + [(0.5, 0.0)] * 7
    assert fit_thresholds(lucky, min_support=5).green is None
    assert fit_thresholds([], target=0.9) == Thresholds(None, None, 0.9, 0.5, 0, "dev")


def test_pairs_without_confidence_are_ignored_and_bad_input_is_a_usage_error() -> None:
    pairs: list[tuple[float | None, float]] = [(None, 0.0)] * 20 + [(0.8, 1.0)] * 5
    assert fit_thresholds(pairs).green == 0.8
    with pytest.raises(lf.UsageError, match="confidence must be a number"):
        fit_thresholds([(1.5, 1.0)])
    with pytest.raises(lf.UsageError, match="score must be a number"):
        fit_thresholds([(0.5, 2.0)])
    with pytest.raises(lf.UsageError, match="floor"):
        fit_thresholds([], target=0.4, floor=0.6)
    with pytest.raises(lf.UsageError, match="pairs"):
        fit_thresholds([0.5])  # type: ignore[list-item]


def test_colour_summary_gives_precision_and_coverage_per_light() -> None:
    thresholds = Thresholds(green=0.9, red=0.5)
    pairs = [(0.95, 1.0), (0.9, 1.0), (0.7, 1.0), (0.7, 0.0), (0.1, 0.0), (None, 1.0)]
    summary = colour_summary(pairs, thresholds)
    assert summary["green"] == {"n": 2, "coverage": 2 / 6, "precision": 1.0}
    assert summary["yellow"] == {"n": 2, "coverage": 2 / 6, "precision": 0.5}
    assert summary["red"] == {"n": 1, "coverage": 1 / 6, "precision": 0.0}
    assert summary["none"]["n"] == 1
    assert "none" not in colour_summary(pairs[:-1], thresholds)
    assert colour_summary([], thresholds)["green"] == {"n": 0, "coverage": 0.0, "precision": None}


def test_reliability_bins_confidence_against_accuracy() -> None:
    pairs = [(0.05, 0.0), (0.15, 1.0), (0.95, 1.0), (1.0, 0.0), (None, 1.0)]
    bins = reliability(pairs, bins=10)
    assert [(b["low"], b["n"]) for b in bins] == [(0.0, 1), (0.1, 1), (0.9, 2)]
    assert bins[-1]["accuracy"] == 0.5
    assert bins[-1]["confidence"] == pytest.approx(0.975)
    with pytest.raises(lf.UsageError):
        reliability(pairs, bins=0)


def test_prediction_confidence_and_light_are_settable_checked_and_copied() -> None:
    prediction = lf.Prediction(answer="a")
    assert (prediction.confidence, prediction.light) == (None, None)
    prediction.confidence = 0.75
    prediction.light = "yellow"
    for other in (
        prediction.copy(extra=1),
        copy.deepcopy(prediction),
        pickle.loads(pickle.dumps(prediction)),
    ):
        assert (other.confidence, other.light) == (0.75, "yellow")
    assert prediction.to_dict() == {"answer": "a"}  # not output fields
    with pytest.raises(lf.UsageError, match="confidence"):
        prediction.confidence = 1.5
    with pytest.raises(lf.UsageError, match="light"):
        prediction.light = "blue"
    with pytest.raises(AttributeError, match="immutable"):
        prediction.answer = "b"  # type: ignore[misc]
    # a program with its own `confidence` output field still reads it as an attribute
    assert lf.Prediction(confidence="high").confidence == "high"


def dataset() -> list[lf.Example]:
    rows = [(f"g{i}", "x", "x") for i in range(6)]  # confident and right
    rows += [(f"r{i}", "x", "y") for i in range(6)]  # unsure and wrong
    return [lf.Example(q=q, answer=gold).with_inputs("q") for q, _, gold in rows]


def program_for_dataset() -> Scored:
    table = {f"g{i}": ("x", 0.9) for i in range(6)}
    table.update({f"r{i}": ("x", 0.3) for i in range(6)})
    return Scored(table)


def test_calibrate_stores_thresholds_and_a_loaded_program_lights_its_answers(
    tmp_path: Path,
) -> None:
    program = program_for_dataset()
    assert program(q="g0").light is None  # no thresholds yet
    fitted = calibrate(program, dataset(), lf.metrics.exact_match)
    assert fitted is not None and (fitted.green, fitted.red) == (0.9, 0.9)
    stored = program.artifact_meta["lights"]  # type: ignore[attr-defined]
    assert stored["dev"]["green"] == {"n": 6, "coverage": 0.5, "precision": 1.0}
    assert program(q="g1").light == "green"
    path = tmp_path / "program.json"
    program.save(path)
    assert json.loads(path.read_text())["meta"]["lights"]["green"] == 0.9
    loaded = lf.load(path, program=Scored(program.table))
    assert thresholds_of(loaded) == fitted
    assert loaded(q="g2").light == "green"
    assert loaded(q="r2").light == "red"
    result = lf.evaluate(loaded, dataset(), lf.metrics.exact_match, progress=False)
    assert [row.prediction.light for row in result.rows][:1] == ["green"]
    assert confidence_pairs(result.rows)[-1] == (0.3, 0.0)
    # rows written out keep each answer's confidence and light
    record = result.to_dict()["rows"][0]
    assert (record["confidence"], record["light"]) == (0.9, "green")
    result.save(tmp_path / "rows.json")
    saved = json.loads((tmp_path / "rows.json").read_text())["rows"][-1]
    assert (saved["confidence"], saved["light"]) == (0.3, "red")
    result.save(tmp_path / "rows.csv")  # the CSV keeps its columns
    assert "confidence" not in (tmp_path / "rows.csv").read_text().splitlines()[0]


def test_async_calls_are_lighted_too() -> None:
    import asyncio

    program = program_for_dataset()
    program.artifact_meta = {"lights": Thresholds(0.8, 0.5).to_dict()}  # type: ignore[attr-defined]
    assert asyncio.run(program.acall(q="r0")).light == "red"


def test_calibrate_without_confidences_stores_nothing() -> None:
    program = Scored({f"g{i}": ("x", None) for i in range(6)})
    examples = [lf.Example(q=f"g{i}", answer="x").with_inputs("q") for i in range(6)]
    assert calibrate(program, examples, lf.metrics.exact_match) is None
    assert "lights" not in (getattr(program, "artifact_meta", None) or {})


def test_malformed_thresholds_in_an_artifact_are_an_artifact_error() -> None:
    with pytest.raises(lf.ArtifactError, match="green"):
        Thresholds.from_dict({"green": 2, "red": None, "target": 0.9, "floor": 0.5})
    with pytest.raises(lf.ArtifactError, match="above the green"):
        Thresholds.from_dict({"green": 0.5, "red": 0.8, "target": 0.9, "floor": 0.5})
    assert Thresholds.from_dict(Thresholds(0.8, None).to_dict()) == Thresholds(0.8, None)


def test_unseen_rows_are_the_training_rows_no_demo_shows() -> None:
    train = [lf.Example(q=f"t{i}", answer="x").with_inputs("q") for i in range(5)]
    program = lf.Predict("q -> answer")
    program.demos = [{"q": "t1", "answer": "x"}, {"q": "t3", "answer": "y"}]
    assert [row.q for row in unseen_rows(program, train)] == ["t0", "t2", "t4"]
    # a row whose inputs are not marked cannot be told apart: left out
    assert unseen_rows(program, [lf.Example(q="t0", answer="x")]) == []


class _EveryRow:
    """A demo selector (per-input demos): it may show any training row."""

    def select(self, inputs: Any) -> list[dict[str, Any]]:
        return [{"q": "t0", "answer": "x"}]

    def spec_config(self) -> dict[str, Any]:
        return {}


def test_a_program_that_picks_demos_per_input_has_no_unseen_rows() -> None:
    program = lf.Predict("q -> answer", demo_selector=_EveryRow())
    train = [lf.Example(q="t9", answer="x").with_inputs("q")]
    assert unseen_rows(program, train) == []


def test_calibrate_pools_the_unseen_training_rows_with_dev() -> None:
    # 3 confident right answers on dev are too few for a green (min_support 5); with 3
    # more from the training rows the program never shows, green is found.
    table = {f"g{i}": ("x", 0.9) for i in range(6)}
    table.update({f"r{i}": ("x", 0.3) for i in range(6)})
    dev = [lf.Example(q=q, answer="x").with_inputs("q") for q in ("g0", "g1", "g2")]
    dev += [lf.Example(q=f"r{i}", answer="y").with_inputs("q") for i in range(3)]
    train = [lf.Example(q=q, answer="x").with_inputs("q") for q in ("g3", "g4", "g5")]
    train += [lf.Example(q=f"r{i}", answer="y").with_inputs("q") for i in range(3, 6)]
    alone = Scored(table)
    assert calibrate(alone, dev, lf.metrics.exact_match).green is None  # type: ignore[union-attr]
    pooled = Scored(table)
    fitted = calibrate(pooled, dev, lf.metrics.exact_match, trainset=train)
    assert fitted is not None and fitted.green == 0.9 and fitted.split == "dev + unseen train"
    stored = pooled.artifact_meta["lights"]  # type: ignore[attr-defined]
    assert stored["n"] == 12 and stored["split"] == "dev + unseen train"
    assert stored["dev"]["green"] == {"n": 3, "coverage": 0.5, "precision": 1.0}
    assert stored["unseen train"]["green"] == {"n": 3, "coverage": 0.5, "precision": 1.0}
