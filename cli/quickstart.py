"""``lmforge quickstart``: the whole loop on the embedded model, with nothing configured.

It takes an example program with its own labeled data (the support-ticket router by
default), scores it zero-shot on the test split, compiles it with few-shot demos chosen
on the train and dev splits, scores the compiled program on the test split, writes the
artifact, and prints a summary table.

The run is a list of steps (:data:`STEPS`) over one :class:`QuickstartRun`; each step
does its work and adds rows to the summary. Later steps (export a bundle, serve it, call
it) are appended to that list.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import lmforge as lf
import typer
from lmforge.artifact import write_json_atomic
from lmforge.errors import UsageError

from .app import app, friendly
from .loading import console as make_console
from .loading import model_slug

__all__ = ["EXAMPLES", "STEPS", "QuickstartRun", "quickstart", "run_quickstart"]

#: ``--example`` name -> the module under ``lmforge.examples``.
EXAMPLES: dict[str, str] = {
    "ticket": "ticket_router",
    "expense": "expense_categoriser",
}
# Few-shot compilation as ``lmforge compile`` does it by default (AutoFewShot: the best of
# labeled, kNN and bootstrapped demos on the dev split and the training rows each does
# not show). Measured on the local model (2 cores), test split: ticket router 35% -> 100%,
# expense categoriser 29% -> 92% (BootstrapFewShot 4 + 16 demos: 90% and 79%).
CONCURRENCY = 2


@dataclasses.dataclass
class QuickstartRun:
    """What the steps share: inputs, the objects they produce and the summary rows."""

    example: str
    module: ModuleType
    lm: lf.LM
    out: Path
    seed: int = 0
    program: lf.Module | None = None
    compiled: lf.Module | None = None
    zero_shot: lf.EvaluationResult | None = None
    compiled_score: lf.EvaluationResult | None = None
    artifact: Path | None = None
    rows: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, label: str, value: str, **facts: Any) -> None:
        """Add a summary row, and machine-readable facts for ``summary.json``."""
        self.rows.append((label, value))
        self.facts.update(facts)


def _score(result: lf.EvaluationResult) -> str:
    failed = f", {result.num_failures} failed" if result.num_failures else ""
    return f"{result.percent:.0f}%  ({sum(result.scores):g}/{result.n}{failed})"


def step_load_model(run: QuickstartRun) -> None:
    """Prepare and load a local model up front, so its cost shows as its own step."""
    warm_up = getattr(run.lm.backend, "warm_up", None)
    started = time.perf_counter()
    if callable(warm_up):
        from lmforge.progress import task

        with task(f"loading {run.lm.model}", total=None):
            warm_up(run.lm.defaults)
    run.add(
        "model", run.lm.model, model=run.lm.model, load_s=round(time.perf_counter() - started, 2)
    )


def step_zero_shot(run: QuickstartRun) -> None:
    """Score the uncompiled program on the test split."""
    run.program = run.module.make_program()
    run.zero_shot = lf.evaluate(
        run.program,
        run.module.load("test"),
        run.module.metric,
        concurrency=CONCURRENCY,
        description="zero-shot on test",
    )
    run.add("zero-shot score (test)", _score(run.zero_shot), zero_shot=run.zero_shot.score)


def step_compile(run: QuickstartRun) -> None:
    """Compile as ``lmforge compile`` does by default (train split, dev split to choose)."""
    from lmforge.optimizers import AutoFewShot

    optimizer = AutoFewShot()
    assert run.program is not None
    run.compiled = optimizer.compile(
        run.program,
        run.module.load("train"),
        metric=run.module.metric,
        valset=run.module.load("dev"),
        seed=run.seed,
        concurrency=CONCURRENCY,
        # One run directory per example: the examples can share --out.
        run_dir=run.out / f"compile-run-{run.example}",
    )
    demos = sum(len(p.demos) for p in run.compiled.predictors())
    dev = (getattr(run.compiled, "artifact_meta", None) or {}).get("scores", {}).get("dev")
    shown = f"{demos} demos" if demos else "demos picked per input"
    detail = shown + (f", dev score {100 * dev:.0f}%" if dev is not None else "")
    strategy = (getattr(run.compiled, "artifact_meta", None) or {}).get("strategy") or {}
    chosen = strategy.get("chosen", "auto")
    run.add("compiled with", f"{chosen} ({detail})", demos=demos, dev=dev, strategy=chosen)


def step_compiled_score(run: QuickstartRun) -> None:
    """Score the compiled program on the test split."""
    assert run.compiled is not None and run.zero_shot is not None
    run.compiled_score = lf.evaluate(
        run.compiled,
        run.module.load("test"),
        run.module.metric,
        concurrency=CONCURRENCY,
        description="compiled on test",
    )
    change = 100 * (run.compiled_score.score - run.zero_shot.score)
    run.add(
        "compiled score (test)",
        f"{_score(run.compiled_score)}  [{change:+.0f} points]",
        compiled=run.compiled_score.score,
    )


def step_save(run: QuickstartRun) -> None:
    """Write the compiled program as an artifact."""
    assert run.compiled is not None
    run.out.mkdir(parents=True, exist_ok=True)
    path = run.out / f"{EXAMPLES[run.example]}@{model_slug(run.lm.model)}.json"
    run.compiled.save(path)
    run.artifact = path
    run.add("artifact", str(path), artifact=str(path))


def step_deploy(run: QuickstartRun) -> None:
    """Export a vllm bundle for the artifact, serve it (with the local model) and call it once."""
    from lmforge.errors import MissingExtraError

    assert run.artifact is not None
    inputs = dict(run.module.load("test")[0].inputs())
    try:
        from lmforge.targets.tryout import tryout

        result = tryout(run.artifact, run.out / "bundle", inputs, lm=run.lm)
    except MissingExtraError as exc:
        run.add("bundle", f"skipped: {exc}")
        return
    run.add("bundle", f"{result.bundle} ({result.files} files)", bundle=str(result.bundle))
    answer = json.dumps(result.answer, ensure_ascii=False)
    run.add(
        "live call",
        f"POST /v1/programs/{result.name} -> {answer} ({result.latency_ms:.0f} ms)",
        live_answer=result.answer,
        live_ms=round(result.latency_ms),
    )


#: The quickstart, in order. Each step takes the shared :class:`QuickstartRun`.
STEPS: list[Callable[[QuickstartRun], None]] = [
    step_load_model,
    step_zero_shot,
    step_compile,
    step_compiled_score,
    step_save,
    step_deploy,
]


def _print_summary(run: QuickstartRun, elapsed: float) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"lmforge quickstart: {EXAMPLES[run.example]}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in [*run.rows, ("time", f"{elapsed:.0f} s")]:
        table.add_row(Text(label), Text(value))
    console = make_console()
    console.print(table)
    if run.artifact is not None:
        console.print(
            f"Run it: lmforge run {shlex.quote(str(run.artifact))} -i {_sample_input(run)}",
            markup=False,
            highlight=False,
        )


def _sample_input(run: QuickstartRun) -> str:
    example = run.module.load("test")[0]
    return shlex.quote(json.dumps(dict(example.inputs()), ensure_ascii=False))


@app.command()
@friendly
def quickstart(
    out: Path = typer.Option(
        Path("lmforge-quickstart"), "--out", help="Where the artifact and summary go."
    ),
    example: str = typer.Option(
        "ticket", "--example", help=f"Which example to run: {'|'.join(EXAMPLES)}."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model to use (default: $LMFORGE_MODEL, else the local model)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the demo selection."),
) -> None:
    """Run an example end to end: zero-shot score -> compile -> compiled score -> artifact."""
    run = run_quickstart(example, out, lf.LM(model), seed=seed)
    _print_summary(run, float(run.facts["wall_s"]))


def run_quickstart(example: str, out: Path, lm: lf.LM, *, seed: int = 0) -> QuickstartRun:
    """Run every step of :data:`STEPS` for ``example`` with ``lm``; writes
    ``out/summary.json`` and returns the run (its ``rows`` are the summary table)."""
    if example not in EXAMPLES:
        raise UsageError(f"unknown --example {example!r}; choose one of {', '.join(EXAMPLES)}")
    module = importlib.import_module(f"lmforge.examples.{EXAMPLES[example]}")
    run = QuickstartRun(example=example, module=module, lm=lm, out=out, seed=seed)
    started = time.perf_counter()
    with lf.use(lm=run.lm):
        for step in STEPS:
            step(run)
    run.facts["wall_s"] = round(time.perf_counter() - started, 1)
    write_json_atomic(run.out / "summary.json", {"example": example, **run.facts})
    return run
