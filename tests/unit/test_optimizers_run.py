"""The run machinery: byte-identical artifacts for the same seed, data and cache; resuming a
killed run from its run directory without redoing finished steps; budgets carried over."""

from __future__ import annotations

import json
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.optimizers import BootstrapFewShot, RandomSearch
from lmforge.optimizers.run import RunStore
from optimizer_fakes import TRAIN, VAL, Router


class Killed(BaseException):
    """Stands in for the process being killed mid-run (not an ``Exception``: nothing catches it)."""


def search() -> RandomSearch:
    return RandomSearch(num_candidates=3, max_bootstrapped_demos=2, max_labeled_demos=3)


def compile_to(path: Path, lm: lf.LM, **kwargs: object) -> lf.Module:
    compiled = search().compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        valset=VAL,
        lm=lm,
        seed=7,
        progress=False,
        **kwargs,  # type: ignore[arg-type]
    )
    compiled.save(path)
    return compiled


def test_two_runs_give_identical_artifact_bytes(tmp_path: Path) -> None:
    compile_to(tmp_path / "a.json", Router(needs_demos=True).lm())
    compile_to(tmp_path / "b.json", Router(needs_demos=True).lm())
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    meta = json.loads((tmp_path / "a.json").read_text())["meta"]
    assert meta["seed"] == 7 and meta["optimizer"]["name"] == "random"
    assert meta["lmforge_version"] == lf.__version__
    assert len(meta["datasets"]["train"]["sha256"]) == 64


def test_cached_rerun_gives_identical_bytes_and_the_same_usage(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    uncached_router = Router(needs_demos=True)
    uncached = compile_to(tmp_path / "uncached.json", uncached_router.lm())
    first_router, second_router = Router(needs_demos=True), Router(needs_demos=True)
    compile_to(tmp_path / "a.json", first_router.lm(cache=cache))
    second = compile_to(tmp_path / "b.json", second_router.lm(cache=cache))
    assert second_router.requests == []  # all answered by the cache
    assert second.compile_info["cache_hits"] > 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "uncached.json").read_bytes()
    # usage is the work the run needed, however it was answered
    assert uncached.artifact_meta["usage"]["lm_calls"] == len(uncached_router.requests)
    assert second.artifact_meta["usage"] == uncached.artifact_meta["usage"]


def test_other_seed_changes_the_artifact(tmp_path: Path) -> None:
    compile_to(tmp_path / "a.json", Router(needs_demos=True).lm())
    search().compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        valset=VAL,
        lm=Router(needs_demos=True).lm(),
        seed=8,
        progress=False,
    ).save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "b.json").read_bytes()


def _stored_calls(run_dir: Path) -> int:
    return sum(
        json.loads(f.read_text())["usage"]["lm_calls"] for f in (run_dir / "steps").glob("*.json")
    )


def test_resume_skips_finished_steps_and_ends_with_the_same_result(tmp_path: Path) -> None:
    fresh_router = Router(needs_demos=True)
    compile_to(tmp_path / "fresh.json", fresh_router.lm())
    total = len(fresh_router.requests)

    run_dir = tmp_path / "run"
    crashing = Router(needs_demos=True, fail_after=total // 2, crash=Killed())
    with pytest.raises(Killed):
        compile_to(tmp_path / "never.json", crashing.lm(), run_dir=run_dir, concurrency=1)
    done = _stored_calls(run_dir)
    assert 0 < done <= total // 2

    resumed_router = Router(needs_demos=True)
    resumed = compile_to(tmp_path / "resumed.json", resumed_router.lm(), run_dir=run_dir)
    assert len(resumed_router.requests) == total - done  # finished steps were not redone
    assert resumed.compile_info["restored_steps"] > 0
    assert (tmp_path / "resumed.json").read_bytes() == (tmp_path / "fresh.json").read_bytes()

    again_router = Router(needs_demos=True)
    compile_to(tmp_path / "again.json", again_router.lm(), run_dir=run_dir)
    assert again_router.requests == []  # a finished run is fully restored
    summary = json.loads((run_dir / "result.json").read_text())
    assert len(summary["candidates"]) == 6 and summary["scores"] == resumed.artifact_meta["scores"]


def test_budget_spent_before_a_kill_still_counts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    router = Router(needs_demos=True)
    first = BootstrapFewShot(max_bootstrapped_demos=8, max_labeled_demos=0).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        lm=router.lm(),
        budget=lf.Budget(max_lm_calls=8),
        run_dir=run_dir,
        progress=False,
    )
    assert first.artifact_meta["stopped"] is None
    state = json.loads((run_dir / "run.json").read_text())["state"]
    assert state["budget_calls"] == 8
    later = Router(needs_demos=True)
    again = BootstrapFewShot(max_bootstrapped_demos=8, max_labeled_demos=0).compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=lf.metrics.exact_match,
        lm=later.lm(),
        budget=lf.Budget(max_lm_calls=8),
        run_dir=run_dir,
        progress=False,
    )
    assert later.requests == [] and again.demos == first.demos


def test_a_run_directory_belongs_to_one_run(tmp_path: Path) -> None:
    compile_to(tmp_path / "a.json", Router(needs_demos=True).lm(), run_dir=tmp_path / "run")
    with pytest.raises(lf.UsageError, match="holds a different run"):
        search().compile(
            lf.Predict("ticket -> team"),
            TRAIN,
            metric=lf.metrics.exact_match,
            valset=VAL,
            lm=Router(needs_demos=True).lm(),
            seed=99,
            run_dir=tmp_path / "run",
            progress=False,
        )


def test_store_ignores_torn_files_and_round_trips_json(tmp_path: Path) -> None:
    store = RunStore(tmp_path, {"x": 1})
    record = store.put("step/a", {"value": (1, 2)}, {"lm_calls": 3})
    assert record["value"] == {"value": [1, 2]}
    reopened = RunStore(tmp_path, {"x": 1})
    assert reopened.get("step/a") == record
    reopened._file("step/b").write_text("{not json")
    assert reopened.get("step/b") is None
    assert RunStore(None).get("step/a") is None


def _shouting_metric() -> object:
    def metric(example: lf.Example, prediction: lf.Prediction, trace: object = None) -> bool:
        return bool(prediction.team.upper() == example.team)  # the bug: labels are lower case

    return metric


def _fixed_metric() -> object:
    def metric(example: lf.Example, prediction: lf.Prediction, trace: object = None) -> bool:
        return bool(prediction.team == example.team)

    return metric


def test_an_edited_metric_is_a_different_run_not_a_resume(tmp_path: Path) -> None:
    """Fixing a metric and rerunning into the same run directory used to restore every
    score the buggy metric gave (same name, so same identity): a stale 0% result."""
    from lmforge.optimizers.store import code_fingerprint

    buggy, fixed = _shouting_metric(), _fixed_metric()
    assert code_fingerprint(buggy) != code_fingerprint(fixed)
    assert code_fingerprint(fixed) == code_fingerprint(_fixed_metric())
    assert code_fingerprint(lf.metrics.ExactMatch("team")) != code_fingerprint(
        lf.metrics.ExactMatch("answer")
    )
    run_dir = tmp_path / "run"

    def go(metric: object) -> lf.Module:
        return BootstrapFewShot(max_bootstrapped_demos=2).compile(
            lf.Predict("ticket -> team"),
            TRAIN,
            metric=metric,  # type: ignore[arg-type]
            valset=VAL,
            lm=Router(needs_demos=False).lm(),
            progress=False,
            run_dir=run_dir,
        )

    assert go(buggy).artifact_meta["scores"]["dev"] == 0.0  # type: ignore[attr-defined]
    with pytest.raises(lf.UsageError, match=r"holds a different run .*metric"):
        go(fixed)
    assert go(buggy).compile_info["restored_steps"] > 0  # type: ignore[attr-defined]
