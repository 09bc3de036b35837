"""RandomSearch: every candidate is scored and reported, the best is kept, and a spent
budget returns the best candidate scored so far."""

from __future__ import annotations

import lmforge as lf
import pytest
from lmforge.optimizers import RandomSearch
from optimizer_fakes import TRAIN, VAL, Router, demo_count


def test_candidates_are_all_reported_and_the_best_is_kept() -> None:
    router = Router(needs_demos=True)
    compiled = RandomSearch(
        num_candidates=3, max_bootstrapped_demos=2, max_labeled_demos=2
    ).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        valset=VAL,
        lm=router.lm(),
        progress=False,
    )
    meta = compiled.artifact_meta
    kinds = [c["kind"] for c in meta["candidates"]]
    assert kinds == ["zero-shot", "labeled", "bootstrap"] + ["bootstrap-shuffled"] * 3
    scores = [c["score"] for c in meta["candidates"]]
    # without demos the fake model always says "sales": right on the 2 sales tickets of 5
    assert scores[0] == pytest.approx(0.4)
    assert max(scores) == 1.0
    chosen = meta["candidates"][meta["chosen_candidate"]]
    assert chosen["score"] == max(scores) == meta["scores"]["dev"]
    assert chosen["candidate"] == min(
        c["candidate"] for c in meta["candidates"] if c["score"] == 1.0
    )
    assert len(compiled.demos) == chosen["demos"]["self"] > 0
    assert [t["score"] for t in meta["trials"]] == scores
    assert all(1 <= c["bootstrapped"] <= 2 for c in meta["candidates"][3:])


def test_teacher_traces_are_shared_between_candidates() -> None:
    router = Router(needs_demos=True)
    RandomSearch(num_candidates=4, max_bootstrapped_demos=2, max_labeled_demos=4).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        valset=VAL,
        lm=router.lm(),
        progress=False,
    )
    teacher_calls = [
        r
        for r in router.requests
        if demo_count(r.as_text()) > 0
        and r.as_text().rstrip().split("Ticket: ")[-1].split("\n")[0] in {e.ticket for e in TRAIN}
    ]
    tickets = [r.as_text().split("Ticket: ")[-1].split("\n")[0] for r in teacher_calls]
    assert len(tickets) == len(set(tickets))  # each training example traced once
    assert len(router.requests) == len(tickets) + 7 * len(VAL)


def test_budget_stop_returns_the_best_candidate_so_far(capsys: pytest.CaptureFixture[str]) -> None:
    router = Router(needs_demos=True)
    # zero-shot (5 calls) + labeled (5 calls) fit; the bootstrap candidate does not
    compiled = RandomSearch(
        num_candidates=2, max_bootstrapped_demos=2, max_labeled_demos=2
    ).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        valset=VAL,
        lm=router.lm(),
        budget=lf.Budget(max_lm_calls=12),
        concurrency=1,
    )
    meta = compiled.artifact_meta
    assert len(router.requests) == 12
    assert "budget" in meta["stopped"]
    assert [c["kind"] for c in meta["candidates"]] == ["zero-shot", "labeled"]
    assert meta["scores"]["dev"] == meta["candidates"][1]["score"] == 1.0
    assert len(compiled.demos) == 2
    assert "stopped early" in capsys.readouterr().err


def test_stop_at_score_and_trainset_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    compiled = RandomSearch(num_candidates=5, max_labeled_demos=2, stop_at_score=0.7).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        lm=Router(needs_demos=True).lm(),
    )
    scores = [c["score"] for c in compiled.artifact_meta["candidates"]]
    assert len(scores) < 8  # stopped before trying every candidate
    assert scores[-1] >= 0.7 and all(s < 0.7 for s in scores[:-1])
    err = capsys.readouterr().err
    assert "scoring candidates on the trainset" in err


def test_bad_settings() -> None:
    with pytest.raises(lf.UsageError):
        RandomSearch(num_candidates=-1)
    with pytest.raises(lf.UsageError):
        RandomSearch(max_bootstrapped_demos=0)


def test_progress_shows_phase_best_score_and_calls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge import progress

    monkeypatch.setattr(progress, "terminal_progress", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    RandomSearch(num_candidates=1, max_labeled_demos=2).compile(
        lf.Predict("ticket -> team"), TRAIN, metric=lf.metrics.exact_match, valset=VAL,
        lm=Router(needs_demos=True).lm(),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert "candidate 4/4 (bootstrap-shuffled)" in err
    assert "best 100.0%" in err and "LM calls" in err
    RandomSearch(num_candidates=1, max_labeled_demos=2).compile(
        lf.Predict("ticket -> team"), TRAIN, metric=lf.metrics.exact_match, valset=VAL,
        lm=Router(needs_demos=True).lm(), progress=False,
    )  # fmt: skip
    assert "best" not in capsys.readouterr().err  # only the plain estimate line
