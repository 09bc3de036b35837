"""``lmforge compile``: optimize a program for one or more models, one artifact per model.

    lmforge compile examples/ticket_router.py:program --metric exact_match \\
        --train train.jsonl --dev dev.jsonl --test test.jsonl \\
        --optimizer bootstrap --model local/gemma-3-270m --out out/

writes ``out/<program>@<model>.json`` per model, ``out/report.json`` and ``out/report.html``.
Checkpoints live in ``out/.runs/<run id>/``: rerunning the same command after a kill
continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import lmforge as lf
import typer
from lmforge.artifact import write_json_atomic
from lmforge.errors import MissingExtraError, UsageError
from lmforge.optimizers import OPTIMIZERS

from . import calibration
from . import options as check
from .app import app, fail, friendly
from .compile_mlflow import CompileCommand, CompileTracking
from .held_out import HeldOut
from .loading import (
    TRUST_HELP,
    load_data,
    load_lm,
    load_metric,
    load_target,
    model_slug,
    program_inputs,
)
from .loading import console as make_console

__all__ = ["compile_command", "make_lm", "parse_options", "write_html_report"]


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse (``4``, ``true``), else text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--option {pair!r} must look like name=value (e.g. max_bootstrapped_demos=4)"
            )
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw
    return options


def _split_names(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


@app.command("compile", cls=CompileCommand)
@friendly
def compile_command(
    program_spec: str = typer.Argument(
        ..., metavar="PROGRAM", help="An artifact (.json) or path/to/file.py:object."
    ),
    train: Path = typer.Option(..., "--train", help="Training examples (JSONL)."),
    dev: Path | None = typer.Option(
        None, "--dev", help="Dev examples (JSONL) to score candidates on."
    ),
    test: Path | None = typer.Option(
        None, "--test", help="Held-out examples (JSONL) scored after compiling."
    ),
    metric_spec: str = typer.Option(
        ..., "--metric", help="exact_match, f1, contains, or path/to/file.py:metric."
    ),
    optimizer_name: str = typer.Option(
        "auto",
        "--optimizer",
        help=f"One of: {', '.join(OPTIMIZERS)} (auto: the few-shot strategy that scores best "
        "on held-out rows; see the report's strategy line).",
    ),
    models: list[str] = typer.Option(
        ..., "--model", "-m", help="Target model; repeat for several."
    ),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    seed: int = typer.Option(0, "--seed", help="Seed for every random choice."),
    max_calls: int | None = typer.Option(
        None, "--max-calls", help="LM-call budget of each model's optimization."
    ),
    max_cost: float | None = typer.Option(
        None, "--max-cost", help="USD budget of each model's optimization."
    ),
    inputs: str | None = typer.Option(
        None, "--inputs", help="Comma-separated input keys (default: the program's)."
    ),
    options: list[str] = typer.Option(
        [], "--option", "-o", help="Optimizer option name=value; repeatable."
    ),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Parallel LM calls."),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Study storage of a search optimizer (mipro): a database URL such as "
        "postgresql://user@host/db lets workers on several machines share one run.",
    ),
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="Also score the uncompiled program."
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bars (on a terminal)."
    ),
    max_failure_rate: float = typer.Option(
        0.5,
        "--max-failure-rate",
        help="Fail (exit 1, no artifact) when more than this share of examples fail on LM calls.",
    ),
    trust: list[str] = typer.Option([], "--trust", help=TRUST_HELP),
    lights_target: float = typer.Option(
        0.9,
        "--lights-target",
        help="Dev precision green answers must reach (0 to 1); thresholds are fitted when "
        "the compiled program's answers carry a confidence.",
    ),
    mlflow: str | None = typer.Option(
        None,
        "--mlflow",
        metavar="[URI]",
        help="Log each model's run to MLflow (default store: sqlite:///OUT/mlflow.db).",
    ),
    mlflow_register: str | None = typer.Option(
        None,
        "--mlflow-register",
        metavar="NAME",
        help="Register each artifact as a new version of this MLflow model (implies --mlflow).",
    ),
) -> None:
    """Compile PROGRAM for each --model and write one artifact per model plus a report.

    Checkpoints are kept in OUT/.runs/: rerunning the same command after an interruption
    resumes without redoing finished work (delete OUT/.runs to start over).
    """
    from lmforge.optimizers import create

    models = [check.model_option(m) or "" for m in models]
    check.at_least(concurrency, "--concurrency", 1)
    check.failure_rate(max_failure_rate)
    check.share(lights_target, "--lights-target")
    budget = check.budget(max_calls, max_cost)
    settings = parse_options(options)
    if storage is not None:
        settings["storage"] = storage
    optimizer = create(optimizer_name, **settings)
    program, name = load_target(program_spec, trust=trust)
    program.set_lm(None)
    metric = load_metric(metric_spec)
    builtin = ":" not in metric_spec
    input_names = _split_names(inputs) or program_inputs(program)
    trainset = load_data(train, input_names, program, builtin_metric=builtin)
    devset = load_data(dev, input_names, program, builtin_metric=builtin) if dev else None
    testset = load_data(test, input_names, program, builtin_metric=builtin) if test else None
    check.output_dir(out)
    tracking = CompileTracking.from_options(mlflow, mlflow_register, out, name)

    from lmforge.data import dataset_hash
    from lmforge.optimizers.run import fingerprint, program_fingerprint
    from lmforge.optimizers.store import code_fingerprint

    command = {
        "program": program_spec,
        "program_state": program_fingerprint(program),
        "train": dataset_hash(trainset),
        "dev": dataset_hash(devset) if devset else None,
        "test": dataset_hash(testset) if testset else None,
        "metric": metric_spec,
        "metric_code": code_fingerprint(metric),
        "optimizer": optimizer_name,
        "config": optimizer.config(),
        "seed": seed,
        "inputs": input_names,
    }
    runs = []
    artifacts = []
    for model in models:
        run_dir = out / ".runs" / fingerprint(command, model)
        entry, path = _compile_one(
            optimizer,
            program,
            name,
            model,
            trainset,
            devset,
            testset,
            metric,
            seed=seed,
            budget=budget,
            run_dir=run_dir,
            out=out,
            baseline=baseline,
            progress=progress,
            concurrency=concurrency,
            max_failure_rate=max_failure_rate,
            lights_target=lights_target,
            tracking=tracking,
        )
        runs.append(entry)
        artifacts.append(path)
    report = {
        "title": f"lmforge compile report: {name}",
        "program": program_spec,
        "lmforge_version": lf.__version__,
        "command": {k: v for k, v in command.items() if k not in ("program_state", "metric_code")},
        "runs": runs,
    }
    write_json_atomic(out / "report.json", report)
    html = write_html_report(report, out / "report.html")
    if tracking is not None:
        tracking.report(out / "report.json", html)
    _print_summary(runs, artifacts, out / "report.json", html)
    if tracking is not None:
        make_console().print(f"mlflow: {tracking.tracking_uri}", markup=False, highlight=False)
    failed = [f"{run['model']}: {run['failed']}" for run in runs if run.get("failed")]
    if failed:
        fail("; ".join(failed))


def make_lm(model: str) -> lf.LM:
    """The LM for a ``--model`` value (a model name or ``path/to/lms.py:name``)."""
    return load_lm(model)


def _compile_one(
    optimizer: Any,
    program: lf.Module,
    name: str,
    model: str,
    trainset: list[lf.Example],
    devset: list[lf.Example] | None,
    testset: list[lf.Example] | None,
    metric: Any,
    *,
    seed: int,
    budget: Any,
    run_dir: Path,
    out: Path,
    baseline: bool,
    progress: bool,
    concurrency: int | None,
    max_failure_rate: float,
    lights_target: float = 0.9,
    tracking: CompileTracking | None = None,
) -> tuple[dict[str, Any], Path | None]:
    from lmforge.optimizers.failures import FailureTally

    lm = make_lm(model)
    model = lm.model
    started = time.perf_counter()
    compiled = optimizer.compile(
        program,
        trainset,
        metric=metric,
        valset=devset,
        lm=lm,
        seed=seed,
        budget=budget,
        run_dir=run_dir,
        progress=progress,
        concurrency=concurrency,
        mlflow_run=tracking.settings(f"{name}@{model}") if tracking is not None else None,
    )
    meta: dict[str, Any] = compiled.artifact_meta
    info = getattr(compiled, "compile_info", {})
    failures = FailureTally()
    failures.merge(info.get("failures") or {})
    scores: dict[str, Any] = dict(meta.get("scores") or {})
    extra_usage: dict[str, Any] = {}
    held_out = testset or devset
    evaluations = HeldOut(run_dir)
    # A compile over the failure threshold is not scored further: against a server that is
    # down, each of those evaluations would only fail again after its retries.
    with lf.use(lm=lm):
        uncompiled = program.deepcopy()
        uncompiled.set_lm(lm)
        lights = None
        if devset and failures.share <= max_failure_rate:
            lights, extra_usage["lights_lm_calls"] = calibration.calibrate(
                evaluations,
                compiled,
                devset,
                metric,
                unseen=optimizer.unseen_training_rows(compiled, trainset),
                target=lights_target,
                concurrency=concurrency,
                progress=progress,
            )
        for label, target, data in (
            ("test", compiled, testset),
            ("baseline", uncompiled, held_out if baseline else None),
        ):
            if not data or failures.share > max_failure_rate:
                continue
            result = evaluations.score(
                target, data, metric, label=label, concurrency=concurrency, progress=progress
            )
            scores[label] = result["score"]
            if label == "test":
                scores["test_failures"] = result["failures"]
                if lights is not None:
                    calibration.held_out_lights(lights, "test", result.get("pairs"))
            else:
                scores["baseline_split"] = "test" if testset else "dev"
            extra_usage[f"{label}_lm_calls"] = result["lm_calls"]
            failures.merge({"attempted": result["n"], **result["lm_failures"]})
    meta["scores"] = {k: v for k, v in scores.items() if k in ("dev", "test")}
    if lights is not None:
        meta["lights"] = lights
    compiled.artifact_meta = meta  # type: ignore[attr-defined]
    path: Path | None = None
    failed = None
    if failures.share > max_failure_rate:
        # No artifact: one built from failed calls (labeled demos only) would pass for a
        # compiled program. The checkpoints hold the same failures, so a rerun (after fixing
        # the model or endpoint) must not restore them.
        failed = (
            f"{failures.describe()}, more than --max-failure-rate {max_failure_rate:g}; "
            "no artifact written"
        )
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        path = out / f"{name}@{model_slug(model)}.json"
        compiled.save(path)
    if tracking is not None:
        tracking.finish(info.get("mlflow_run_id"), scores, path, failed)
    candidates = [dict(c) for c in meta.get("candidates") or []]
    for candidate in candidates:
        candidate["best"] = candidate.get("candidate") == meta.get("chosen_candidate")
    entry = {
        "model": model,
        "optimizer": optimizer.name,
        "config": optimizer.config(),
        "artifact": str(path) if path is not None else None,
        "seed": seed,
        "scores": scores,
        "strategy": meta.get("strategy"),
        "calibration": meta.get("calibration"),
        "trials": meta.get("trials") or [],
        "candidates": candidates,
        "prompts": _prompts(compiled, lm),
        "usage": {
            **meta.get("usage", {}),
            "backend_calls": info.get("backend_calls"),
            "retries": info.get("retries"),
            "cache_hits": info.get("cache_hits"),
            "restored_steps": info.get("restored_steps"),
            **extra_usage,
        },
        "failures": failures.summary(),
        "estimated_lm_calls": meta.get("estimated_lm_calls"),
        "wall_s": round(time.perf_counter() - started, 3),
        "stopped": meta.get("stopped"),
        "errors": meta.get("errors"),
        "lights": lights,
        "failed": failed,
        "run_dir": str(run_dir),
    }
    return entry, path


def _prompts(program: lf.Module, lm: lf.LM) -> dict[str, Any]:
    prompts: dict[str, Any] = {}
    for name, predictor in program.named_predictors():
        placeholders = {f.name: "{" + f.name + "}" for f in predictor.signature.input_fields}
        try:
            text = predictor.format(placeholders, lm=lm).render()
        except lf.LMForgeError as exc:
            text = f"(cannot render: {exc})"
        prompts[name] = {
            "instructions": predictor.signature.instructions,
            "demos": len(predictor.demos),
            "prompt": text,
        }
    return prompts


def write_html_report(report: dict[str, Any], path: Path) -> Path | None:
    """Write ``report.html``; ``None`` (and a note) when plotly is not installed."""
    try:
        from lmforge.optimizers.report import write_html
    except ImportError:
        return None
    try:
        return write_html(report, path)  # type: ignore[no-any-return]
    except MissingExtraError as exc:
        typer.echo(f"lmforge: report.html skipped: {exc}", err=True)
        return None


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "-"


def _print_summary(
    runs: list[dict[str, Any]], artifacts: list[Path | None], report: Path, html: Path | None
) -> None:
    from rich.table import Table

    table = Table(title="lmforge compile")
    for column in (
        "model",
        "baseline",
        "dev",
        "test",
        "compile LM calls",
        "cached",
        "stopped",
        "artifact",
    ):
        table.add_column(column)
    for run, artifact in zip(runs, artifacts, strict=True):
        scores, usage = run["scores"], run["usage"]
        table.add_row(
            run["model"],
            _pct(scores.get("baseline")),
            _pct(scores.get("dev")),
            _pct(scores.get("test")),
            str(usage.get("backend_calls", "-")),
            str(usage.get("cache_hits", "-")),
            "failed" if run.get("failed") else "budget" if run.get("stopped") else "-",
            str(artifact) if artifact is not None else "-",
        )
    console = make_console()
    console.print(table)
    for run in runs:
        if run.get("strategy"):
            chosen = run["strategy"]
            line = f"strategy {chosen['chosen']} ({chosen['why']})"
            console.print(f"{run['model']}: {line}", markup=False, highlight=False)
        if run.get("lights"):
            line = calibration.describe(run["lights"])
            console.print(f"{run['model']}: {line}", markup=False, highlight=False)
    console.print(
        f"report: {report}" + (f" and {html}" if html else ""), markup=False, highlight=False
    )
